#if arch(x86_64)
import CSSILinux

/// What else depends on the CPU architecture: its name in snapshots, the instruction that
/// makes a syscall, the extended register state, and the ABI facts the engine relies on.
/// Other architectures get sibling files (Registers+<arch>.swift, Syscalls+<arch>.swift,
/// SyscallRestart+<arch>.swift, Arch+<arch>.swift) with the same names.
public enum Arch {
    public static let name = "x86_64"
    /// `syscall` (0f 05): the instruction we look for in the vDSO to run injected syscalls.
    public static let syscallInstruction: [UInt8] = [0x0f, 0x05]

    /// The loop SyscallBatch.run runs in a tracee: for each entry of a table (rbx: its address,
    /// r12: how many), load the number and six arguments, `syscall`, store the result in the
    /// entry's eighth word; then `int3`, which stops the tracee with SIGTRAP. It uses no
    /// stack and clobbers only rax, rcx, r11 (the syscall ABI) and argument registers,
    /// all put back by the caller. Entries are 64 bytes (batchEntryWords).
    ///
    ///     loop: test r12,r12 ; je done ; mov rax,[rbx] ; mov rdi,[rbx+8] ; mov rsi,[rbx+16]
    ///           mov rdx,[rbx+24] ; mov r10,[rbx+32] ; mov r8,[rbx+40] ; mov r9,[rbx+48]
    ///           syscall ; mov [rbx+56],rax ; add rbx,64 ; dec r12 ; jmp loop
    ///     done: int3
    public static let batchLoop: [UInt8] = [
        0x4d, 0x85, 0xe4, 0x74, 0x2a, 0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10,
        0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30,
        0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc, 0xeb, 0xd1, 0xcc,
    ]
    public static let batchEntryWords = 8

    /// The extended register state is the XSAVE area (x87, SSE, AVX, AVX-512...):
    /// PTRACE_GETREGSET NT_X86_XSTATE.
    static let extendedStateNote = Int32(CSSI_NT_X86_XSTATE)
    static let extendedStateName = "NT_X86_XSTATE"
    static let extendedStateMaxSize = 16384

    /// Bytes below the stack pointer a leaf function may use without moving it (the x86_64
    /// ABI's red zone): scratch data put on a thread's stack goes below them.
    public static let stackRedZone: UInt64 = 128

    /// Where a thread stopped with stack pointer `sp` can be given a 16-byte struct (a
    /// timespec a re-issued call reads) that nothing uses before the kernel reads it: just
    /// below the red zone, 16-byte aligned.
    public static func scratchBelowRedZone(_ sp: UInt64) -> UInt64 { (sp - stackRedZone - 16) & ~15 }

    /// The size of struct epoll_event (packed on x86_64).
    public static let epollEventSize = 12

    /// The data fields of `count` struct epoll_event read from `bytes`.
    public static func epollEventData(_ bytes: [UInt8], count: Int) -> [UInt64] {
        (0..<count).map { i in bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: i * 12 + 4, as: UInt64.self)) } }
    }

    /// struct epoll_event: packed on x86_64 (u32 events, u64 data; 12 bytes).
    public static func epollEvent(events: UInt32, data: UInt64) -> [UInt8] {
        var ev = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: events.littleEndian) { ev.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: data.littleEndian) { ev.replaceSubrange(4..<12, with: $0) }
        return ev
    }
}
#else
#error("SwiftSSI supports x86_64 only for now: add the Arch/*+<arch>.swift files")
#endif
