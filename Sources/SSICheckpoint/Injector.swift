import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Runs syscalls inside a stopped tracee, as if it had made them itself.
///
/// No code is written into the tracee: we point rip at a `syscall` instruction that already
/// exists in its vDSO, load the number and arguments, and PTRACE_SINGLESTEP. The kernel
/// reports a SIGTRAP right after the syscall returns (syscall_exit_work reports the single
/// step), and rax holds the result. The tracee's own registers are put back by the caller.
struct Injector {
    /// SSI_TRACE_SYSCALLS=1 prints every injected syscall and its result.
    static let trace = ProcessInfo.processInfo.environment["SSI_TRACE_SYSCALLS"] == "1"

    let pid: Int32
    /// Address of a `syscall` instruction in the tracee's vDSO.
    var gadget: UInt64
    /// The registers every injected call starts from (segment registers, fs base...).
    var base: UserRegs

    init(pid: Int32, base: UserRegs) throws {
        self.pid = pid
        self.base = base
        self.gadget = try Injector.findGadget(pid: pid)
    }

    /// Another thread of the same process: same address space, same gadget.
    init(pid: Int32, base: UserRegs, gadget: UInt64) {
        self.pid = pid
        self.base = base
        self.gadget = gadget
    }

    static func findGadget(pid: Int32) throws -> UInt64 {
        let maps = MapsEntry.parse(try ProcFS.read("/proc/\(pid)/maps"))
        guard let vdso = maps.first(where: { $0.name == "[vdso]" }) else {
            throw SSIError(.unsupported, "PID \(pid) has no vDSO mapping; SwiftSSI needs it to run syscalls in the process",
                           hint: "do not boot with vdso=0")
        }
        var bytes = [UInt8](repeating: 0, count: Int(vdso.size))
        try bytes.withUnsafeMutableBytes { try RemoteMemory(pid: pid).forcedRead(into: $0, at: vdso.start) }
        let pat = Arch.syscallInstruction
        for i in 0..<(bytes.count - pat.count) where bytes[i] == pat[0] && bytes[i + 1] == pat[1] {
            return vdso.start + UInt64(i)
        }
        throw SSIError(.unsupported, "no syscall instruction found in the vDSO of PID \(pid)")
    }

    /// Runs one syscall; returns its raw result (negative errno on failure).
    @discardableResult
    func raw(_ nr: Int, _ args: UInt64...) throws -> Int64 {
        try rawArgs(nr, args)
    }

    func rawArgs(_ nr: Int, _ args: [UInt64]) throws -> Int64 {
        let regs = Arch.syscallRegisters(base: base, at: gadget, nr: nr, args)
        try check(cssi_set_regs(pid, [regs]), "PTRACE_SETREGS \(pid)")
        var attempts = 0
        while true {
            try check(cssi_ptrace(Int32(CSSI_PTRACE_SINGLESTEP), pid, 0, 0), "PTRACE_SINGLESTEP \(pid)")
            var status: Int32 = 0
            try check(Int(cssi_waitpid(pid, &status, 0)), "waitpid \(pid)")
            if cssi_wifexited(status) != 0 || cssi_wifsignaled(status) != 0 {
                throw SSIError(.system, "PID \(pid) died while SwiftSSI was running syscall \(nr) in it",
                               hint: "a checkpoint leaves no snapshot behind then; a restart kills what it created: try again")
            }
            let sig = cssi_wstopsig(status)
            if cssi_wifstopped(status) != 0 && sig == SIGTRAP && cssi_wptrace_event(status) == 0 { break }
            if [SIGSEGV, SIGBUS, SIGILL, SIGFPE].contains(sig) && cssi_wptrace_event(status) == 0 {
                var at = UserRegs()
                _ = cssi_get_regs(pid, &at)
                throw SSIError(.system, "PID \(pid) faulted (signal \(sig)) at 0x\(String(at.rip, radix: 16)) while running syscall \(nr) in it")
            }
            attempts += 1
            if attempts > 100 { throw SSIError(.system, "PID \(pid) keeps stopping (signal \(sig)) instead of running syscall \(nr)",
                                                     hint: "another program is signalling or tracing it; stop that and try again") }
            // Another stop (a signal that was not blocked, a group stop): the syscall has not
            // run yet. Suppress it and step again; pending signals stay queued in the kernel.
        }
        var out = UserRegs()
        try check(cssi_get_regs(pid, &out), "PTRACE_GETREGS \(pid)")
        if Injector.trace {
            let hex = args.map { "0x" + String($0, radix: 16) }.joined(separator: ", ")
            FileHandle.standardError.write(Data("ssi: [\(pid)] syscall \(nr)(\(hex)) = \(Arch.syscallResult(out))\n".utf8))
        }
        return Arch.syscallResult(out)
    }

    /// Runs a syscall and throws, naming `what`, if it fails.
    @discardableResult
    func call(_ what: @autoclosure () -> String, _ nr: Int, _ args: UInt64...) throws -> UInt64 {
        let r = try rawArgs(nr, args)
        if r < 0 && r > -4096 { throw SSIError.sys("\(what()) in PID \(pid)", errno: Int32(-r)) }
        return UInt64(bitPattern: r)
    }
}

extension UInt64 {
    init(_ v: Int32) { self = UInt64(bitPattern: Int64(v)) }
}
