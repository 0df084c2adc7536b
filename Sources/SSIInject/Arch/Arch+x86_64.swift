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

    /// The extended register state is the XSAVE area (x87, SSE, AVX, AVX-512...):
    /// PTRACE_GETREGSET NT_X86_XSTATE.
    static let extendedStateNote = Int32(CSSI_NT_X86_XSTATE)
    static let extendedStateName = "NT_X86_XSTATE"
    static let extendedStateMaxSize = 16384

    /// Bytes below the stack pointer a leaf function may use without moving it (the x86_64
    /// ABI's red zone): scratch data put on a thread's stack goes below them.
    public static let stackRedZone: UInt64 = 128

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
