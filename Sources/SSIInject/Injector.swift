import Foundation
import SSISystem
import Synchronization

/// Runs syscalls inside a stopped tracee, as if it had made them itself.
///
/// No code is written into the tracee: we point the instruction pointer at a `syscall`
/// instruction that already exists in its vDSO, load the number and arguments, and
/// PTRACE_SINGLESTEP. The kernel reports a SIGTRAP right after the syscall returns
/// (syscall_exit_work reports the single step), and the return register holds the result.
/// The tracee's own registers are put back by the caller (SignalMaskGuard).
public struct Injector {
    /// SSI_TRACE_SYSCALLS=1 prints every injected syscall and its result.
    static let trace = ProcessInfo.processInfo.environment["SSI_TRACE_SYSCALLS"] == "1"

    public let pid: ProcessID
    /// Address of a `syscall` instruction in the tracee (its vDSO, or a copy we placed).
    public var gadget: UInt64
    /// The registers every injected call starts from (segment registers, fs base...).
    public var base: Registers

    private var tracee: Tracee { Tracee.adoptTraceMe(pid) }

    public init(pid: ProcessID, base: Registers) throws {
        self.pid = pid
        self.base = base
        self.gadget = try Injector.findGadget(pid: pid)
    }

    /// Another thread of the same process: same address space, same gadget.
    public init(pid: ProcessID, base: Registers, gadget: UInt64) {
        self.pid = pid
        self.base = base
        self.gadget = gadget
    }

    public static func findGadget(pid: ProcessID) throws -> UInt64 {
        let maps = MapsEntry.parse(try ProcFS.read("/proc/\(pid)/maps"))
        guard let vdso = maps.first(where: { $0.name == "[vdso]" }) else {
            throw SSIError(.unsupported, "PID \(pid) has no vDSO mapping; SwiftSSI needs it to run syscalls in the process",
                           hint: "do not boot with vdso=0")
        }
        let pat = Arch.syscallInstruction
        // Every process of one kernel maps the same vDSO image (a 32-bit one another, of
        // another size): where the instruction lies in it is looked for once, and only
        // checked in the next process (two bytes read instead of the whole image).
        if let at = gadgetOffsets.withLock({ $0[vdso.size] }) {
            var here = [UInt8](repeating: 0, count: pat.count)
            try here.withUnsafeMutableBytes { try RemoteMemory(pid: pid).forcedRead(into: $0, at: vdso.start + UInt64(at)) }
            if here == pat { return vdso.start + UInt64(at) }
        }
        var bytes = [UInt8](repeating: 0, count: Int(vdso.size))
        try bytes.withUnsafeMutableBytes { try RemoteMemory(pid: pid).forcedRead(into: $0, at: vdso.start) }
        let found: Int? = bytes.withUnsafeBufferPointer { b in
            guard b.count >= pat.count else { return nil }
            for i in 0...(b.count - pat.count) where (0..<pat.count).allSatisfy({ b[i + $0] == pat[$0] }) { return i }
            return nil
        }
        guard let i = found else { throw SSIError(.unsupported, "no syscall instruction found in the vDSO of PID \(pid)") }
        gadgetOffsets.withLock { $0[vdso.size] = i }
        return vdso.start + UInt64(i)
    }

    /// Where the syscall instruction was found in a vDSO image, by the image's size.
    private static let gadgetOffsets = Mutex<[UInt64: Int]>([:])

    /// Runs one syscall; returns its raw result (negative errno on failure).
    @discardableResult
    public func raw(_ syscall: Syscall, _ args: UInt64...) throws -> Int64 {
        try rawArgs(syscall, args)
    }

    /// Tasks whose injected syscalls run between syscall stops (PTRACE_SYSCALL) instead of
    /// a single step: a single step ends in a SIGTRAP the kernel forces on the task
    /// (force_sig_info_to_task), which resets a blocked SIGTRAP's handler to SIG_DFL, unblocks
    /// it, and can dequeue a SIGTRAP the program had pending in place of its own. Used for
    /// processes that have a SIGTRAP handler or a pending SIGTRAP (two stops per call
    /// instead of one, so not for everyone).
    private static let syscallStopTasks = Mutex<Set<Int32>>([])

    public static func useSyscallStops(_ tasks: [Int32], _ on: Bool = true) {
        syscallStopTasks.withLock { set in for t in tasks { if on { set.insert(t) } else { set.remove(t) } } }
    }

    static func usesSyscallStops(_ pid: ProcessID) -> Bool { syscallStopTasks.withLock { $0.contains(pid.rawValue) } }

    public func rawArgs(_ syscall: Syscall, _ args: [UInt64]) throws -> Int64 {
        let t = tracee
        try t.setRegisters(base.preparedForSyscall(syscall, args, at: gadget))
        if Injector.usesSyscallStops(pid) { return try runBetweenSyscallStops(t, syscall, args) }
        try Injector.resumeUntilTrap(t, doing: "syscall \(syscall)") { try t.singleStep() }
        let result = try t.registers().returnValue
        if Injector.trace {
            let hex = args.map { "0x" + String($0, radix: 16) }.joined(separator: ", ")
            FileHandle.standardError.write(Data("ssi: [\(pid)] \(syscall)(\(hex)) = \(result)\n".utf8))
        }
        return result
    }

    /// Resumes `t` with `resume` until it stops with SIGTRAP (the end of a single step, or a
    /// batch's int3), `doing` naming what it runs for the errors. Another stop (a signal that
    /// was not blocked, a group stop) means the work has not run yet: it is suppressed and
    /// the task resumed again; pending signals stay queued in the kernel.
    static func resumeUntilTrap(_ t: Tracee, doing: @autoclosure () -> String, resume: () throws -> Void) throws {
        var attempts = 0
        while true {
            try resume()
            let stop = try t.wait()
            if stop.ended {
                throw SSIError(.system, "PID \(t.pid) died while SwiftSSI was running \(doing()) in it",
                               hint: "a checkpoint leaves no snapshot behind then; a restart kills what it created: try again")
            }
            if stop == .signal(.trap) { return }
            if case .signal(let sig) = stop, [.segmentationFault, .bus, .illegalInstruction, .floatingPoint].contains(sig) {
                let at = (try? t.registers())?.instructionPointer ?? 0
                throw SSIError(.system, "PID \(t.pid) faulted (signal \(sig.rawValue)) at 0x\(String(at, radix: 16)) while running \(doing()) in it")
            }
            // A signal of the application's, dequeued on the way back from the call: resumed
            // without it, it would be lost. Kept, and queued again before the thread goes.
            if case .signal(let sig) = stop, sig != .stop { HeldSignals.hold(t) }
            attempts += 1
            if attempts > 100 { throw SSIError(.system, "PID \(t.pid) keeps stopping (\(stop)) instead of running \(doing())",
                                               hint: "another program is signalling or tracing it; stop that and try again") }
        }
    }

    /// Takes task `t` out of single-step mode if our last resume left it there (see
    /// `Tracee.singleStepped`): a resume that is not a step clears the mode (ptrace_resume,
    /// user_disable_single_step). PTRACE_INTERRUPT, then PTRACE_CONT: the task leaves its
    /// stop and traps at once in its signal handling (PTRACE_EVENT_STOP, as at the seize),
    /// before any instruction of its own: one stop, its registers and a syscall it was in
    /// (to be restarted) as they were. A signal of the application's that comes first is
    /// held, as during injected calls. Called at the end of every run of injected calls
    /// (SignalMaskGuard.restore, HeldSignals.requeue), before the task's mask and registers
    /// go back, so that a task left stopped meanwhile survives this daemon's death.
    public static func leaveSingleStep(_ t: Tracee) {
        guard Tracee.singleStepped.withLock({ $0.contains(t.pid.rawValue) }), (try? t.interrupt()) != nil else { return }
        for _ in 0..<100 {
            guard (try? t.cont()) != nil, let stop = try? t.wait(), !stop.ended else { return }
            if case .event = stop { return }
            if case .signal(let sig) = stop, sig != .stop { HeldSignals.hold(t) }
        }
    }

    /// The syscall-enter stop, then the syscall-exit stop; the tracee's signals are blocked
    /// (SignalMaskGuard, the restorer's mask), so both report as SIGTRAP and no signal is
    /// delivered in between. Fork and clone events on the way are let through.
    private func runBetweenSyscallStops(_ t: Tracee, _ syscall: Syscall, _ args: [UInt64]) throws -> Int64 {
        var traps = 0, attempts = 0
        while traps < 2 {
            try t.syscallStep()
            let stop = try t.wait()
            if stop.ended {
                throw SSIError(.system, "PID \(pid) died while SwiftSSI was running syscall \(syscall) in it",
                               hint: "a checkpoint leaves no snapshot behind then; a restart kills what it created: try again")
            }
            switch stop {
            case .signal(.trap): traps += 1
            case .event: continue
            default:
                // As in resumeUntilTrap: a signal of the application's is kept (HeldSignals).
                if case .signal(let sig) = stop, sig != .stop { HeldSignals.hold(t) }
                attempts += 1
                if attempts > 100 { throw SSIError(.system, "PID \(pid) keeps stopping (\(stop)) instead of running syscall \(syscall)") }
            }
        }
        let result = try t.registers().returnValue
        if Injector.trace {
            let hex = args.map { "0x" + String($0, radix: 16) }.joined(separator: ", ")
            FileHandle.standardError.write(Data("ssi: [\(pid)] \(syscall)(\(hex)) = \(result) (syscall stops)\n".utf8))
        }
        return result
    }

    /// Runs a syscall and throws, naming `what`, if it fails.
    @discardableResult
    public func call(_ what: @autoclosure () -> String, _ syscall: Syscall, _ args: UInt64...) throws -> UInt64 {
        let r = try rawArgs(syscall, args)
        if r < 0 && r > -4096 { throw SSIError.sys("\(what()) in PID \(pid)", errno: Int32(-r)) }
        return UInt64(bitPattern: r)
    }
}

extension UInt64 {
    /// A signed 32-bit argument as the kernel reads it from a 64-bit register.
    public init(_ v: Int32) { self = UInt64(bitPattern: Int64(v)) }
}

extension Injector {
    /// prctl(2) in the tracee, throwing with the option's name.
    @discardableResult
    public func prctl(_ option: PrctlOption, _ args: UInt64...) throws -> UInt64 {
        let r = try rawArgs(.prctl, [UInt64(option.rawValue)] + args)
        if r < 0 && r > -4096 { throw SSIError.sys("prctl(\(option)) in PID \(pid)", errno: Int32(-r)) }
        return UInt64(bitPattern: r)
    }

    /// prctl(2) in the tracee; the raw result (negative errno on failure).
    @discardableResult
    public func rawPrctl(_ option: PrctlOption, _ args: UInt64...) throws -> Int64 {
        try rawArgs(.prctl, [UInt64(option.rawValue)] + args)
    }
}
