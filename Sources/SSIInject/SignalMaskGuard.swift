import SSISystem

/// Blocks every signal of a task while we run syscalls in it, so that none is dequeued
/// meanwhile, and puts its mask and registers back. Not when the task sleeps with a temporary
/// mask (sigsuspend, ppoll...): PTRACE_SETSIGMASK would drop the mask the kernel saved for it.
public struct SignalMaskGuard {
    let tracee: Tracee
    let saved: Registers
    let mask: UInt64
    let blocked: Bool

    public init(tracee: Tracee, saved: Registers) throws {
        self.tracee = tracee
        self.saved = saved
        mask = try tracee.sigmask()
        blocked = saved.syscall.map { !SyscallRestart.syscallsWithTemporaryMask.contains($0) } ?? true
        if blocked { try tracee.setSigmask(~0) }
    }

    public func restore() {
        // While its signals are still blocked (the call's stops are SIGTRAPs only).
        Injector.leaveSingleStep(tracee)
        if blocked { try? tracee.setSigmask(mask) }
        try? tracee.setRegisters(saved)
    }
}
