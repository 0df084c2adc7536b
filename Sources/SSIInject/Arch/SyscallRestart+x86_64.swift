#if arch(x86_64)
import SSISystem

/// The kernel's syscall-restart rules as they show in a stopped task's registers, and the
/// interrupted sleeps whose time left a restart shortens.
public enum SyscallRestart {
    /// Kernel-internal errnos a syscall returns when a signal interrupted it
    /// (include/linux/errno.h); user space never sees them, but a stopped task's rax can.
    static let ERESTARTSYS: Int64 = -512, ERESTARTNOINTR: Int64 = -513
    static let ERESTARTNOHAND: Int64 = -514, ERESTART_RESTARTBLOCK: Int64 = -516

    /// The registers a restored task must resume with, given those saved while it was
    /// stopped. A task stopped inside an interrupted syscall has orig_rax = its number and
    /// rax = -ERESTART*, with rip after the `syscall` instruction. We keep that state: the
    /// restored task resumes from a ptrace signal-delivery stop, inside get_signal(), so the
    /// kernel itself applies its restart rule on the way out (arch/x86/kernel/signal.c,
    /// arch_do_signal_or_restart): rewind and re-issue the syscall if no handler runs, return
    /// -EINTR (or restart, for -ERESTARTSYS with SA_RESTART) if one does. Rewinding rip
    /// ourselves instead would lose a wakeup: a signal arriving before the re-issued syscall
    /// would run its handler and then block in the syscall again (pause() never returning).
    /// -ERESTART_RESTARTBLOCK re-enters through restart_syscall, whose state (the
    /// restart_block, e.g. nanosleep's expiry) lived in the old kernel task: we turn it into
    /// -ERESTARTNOHAND, which re-issues the original syscall with its original arguments
    /// (still in rdi..r9) and gives -EINTR when a handler runs, as before.
    public static func registersForResume(_ saved: Registers) -> Registers {
        var r = saved
        if Int64(bitPattern: r.raw.orig_rax) >= 0 && Int64(bitPattern: r.raw.rax) == ERESTART_RESTARTBLOCK {
            r.raw.rax = UInt64(bitPattern: ERESTARTNOHAND)
        }
        return restartedAfterStop(r) ?? r
    }

    /// Calls that a stop ends with -EINTR rather than a restart code (signal(7), "Interruption
    /// of system calls and library functions by stop signals"): epoll_wait, epoll_pwait,
    /// epoll_pwait2, semop, semtimedop, sigtimedwait/sigwaitinfo, io_getevents, and socket
    /// calls on a socket with a receive or send timeout (sock_intr_errno: -EINTR when a
    /// timeout is set): read, write, readv, writev, recvfrom, recvmsg, recvmmsg, sendto,
    /// sendmsg, sendmmsg, accept, accept4, and a blocking connect with a send timeout:
    /// re-issued on a socket still connecting, connect waits again (__inet_stream_connect,
    /// SS_CONNECTING: inet_wait_for_connect) and returns 0 once connected, EALREADY rather than
    /// EINPROGRESS if that wait times out; a unix socket's connect starts over.
    static let endedByStop: Set<UInt64> = [232, 281, 441, 65, 220, 128, 208, 333, 0, 1, 19, 20, 45, 47, 299, 44, 46, 307, 43, 288, 42]
    static let EINTR: Int64 = -4

    /// The checkpoint's own stop (PTRACE_INTERRUPT, like a stop signal) ends such a call with
    /// -EINTR, which the program would then see (epoll_wait returning EINTR with no signal
    /// handled). A task stopped on the way out of one (orig_rax its number: a task stopped
    /// in user space has orig_rax -1, set by the interrupt's entry) with rax -EINTR is given
    /// -ERESTARTNOHAND instead: re-issued when it goes on and no handler runs, -EINTR when a
    /// signal's handler does, as without the stop. The registers to set, or nil. A relative
    /// timeout starts again whole (the kernel keeps no time left for these calls).
    public static func restartedAfterStop(_ regs: Registers) -> Registers? {
        guard Int64(bitPattern: regs.raw.orig_rax) >= 0, Int64(bitPattern: regs.raw.rax) == EINTR,
              endedByStop.contains(regs.raw.orig_rax) else { return nil }
        var r = regs
        r.raw.rax = UInt64(bitPattern: ERESTARTNOHAND)
        return r
    }

    /// A relative sleep the kernel interrupted with -ERESTART_RESTARTBLOCK: nanosleep(req=rdi,
    /// rem=rsi), which counts on CLOCK_MONOTONIC (kernel/time/hrtimer.c), or clock_nanosleep
    /// (clock=rdi, flags=rsi, req=rdx, rem=r10) without TIMER_ABSTIME (an absolute sleep
    /// returns -ERESTARTNOHAND instead and is re-issued as it was). `rem` is 0 when the
    /// caller passed NULL.
    /// Two waits with a timeout end the same way and keep their deadline only in the
    /// restart_block: poll(fds=rdi, nfds=rsi, timeout_ms=rdx) (do_restart_poll, fs/select.c)
    /// and futex(uaddr=rdi, FUTEX_WAIT, val=rdx, timeout=r10) with a relative timeout
    /// (futex_wait_restart, kernel/futex/waitwake.c; Go's runtime sleeps so). Re-issued with
    /// their first arguments they would wait their whole timeout again: the restart gives
    /// them what was left (`kind`).
    public struct RelativeSleep {
        public var clockID: Int32
        public var rem: UInt64
        public var kind: Kind = .sleep
        /// `timeLeftTimeval`, `timeLeftTimespec`: select(2) (timeval at r8), pselect6 (timespec
        /// at r8) and ppoll (timespec at rdx) end with -ERESTARTNOHAND and write the time left
        /// into the caller's struct (poll_select_finish, fs/select.c), which the re-issued
        /// call reads: only the time the application was down is missing, taken off that
        /// struct at restart (`rem` is its address). `epollTimeout`: epoll_wait and epoll_pwait (ms in
        /// r10, their fourth argument), ended by the stop with -EINTR and re-issued whole
        /// (restartedAfterStop): the kernel keeps no time left, but the time the application
        /// was down is taken off the register at least.
        /// `epollTimespec`: epoll_pwait2 (a struct timespec at r10), ended and re-issued as
        /// epoll_wait is; its time left goes into a struct of its own (the program's may be
        /// const and reused), pointed at by r10 (setSleepRequest). `timedWait`: likewise
        /// rt_sigtimedwait (timespec at rdx) and semtimedop (at r10).
        public enum Kind { case sleep, poll, futexWait, timeLeftTimeval, timeLeftTimespec, epollTimeout, epollTimespec, timedWait }
    }

    /// A relative sleep or timed wait that an earlier stop interrupted and a SIGCONT (or a
    /// thaw) resumed: the kernel re-entered it through restart_syscall (orig_rax 219) with
    /// its deadline in the task's restart_block, and a stop now leaves rax at
    /// -ERESTART_RESTARTBLOCK again. A restored task has no restart_block: its restart_syscall
    /// would fail with EINTR (do_no_restart_syscall). The original call's arguments are still
    /// in the registers (restart_syscall ignores them); its number is not.
    public static func isRestartedCall(_ regs: Registers) -> Bool {
        regs.syscall == .restart_syscall && Int64(bitPattern: regs.raw.rax) == ERESTART_RESTARTBLOCK
    }

    /// The registers of the original call behind a restart_syscall (isRestartedCall), told
    /// from the task's kernel stack while it sleeps in the restart (/proc/TID/stack, Linux
    /// 6.18): a poll's restart shows do_sys_poll and poll_schedule_timeout, a futex wait's
    /// futex_wait and futex_wait_queue; a sleep's shows nothing but the syscall entry
    /// (sys_restart_syscall tail-calls hrtimer_nanosleep_restart, and do_nanosleep is a
    /// scheduler function the trace skips): nanosleep, or clock_nanosleep when rdi holds a
    /// clock id (small, or negative for a CPU clock) rather than a pointer. nil otherwise.
    public static func originalCall(_ regs: Registers, kernelStack: String) -> Registers? {
        var r = regs
        let frames = kernelStack.split(separator: "\n").filter { !$0.contains("do_syscall_64") && !$0.contains("entry_SYSCALL") }
        if kernelStack.contains("do_sys_poll") || kernelStack.contains("poll_schedule_timeout") {
            r.raw.orig_rax = 7
        } else if kernelStack.contains("futex_wait") {
            r.raw.orig_rax = 202
        } else if frames.isEmpty {
            r.raw.orig_rax = r.raw.rdi < 4096 || Int64(bitPattern: r.raw.rdi) < 0 ? 230 : 35
        } else {
            return nil
        }
        return r
    }

    /// The registers of a task as if the call it was inside had returned `value` (its rip is
    /// already past the syscall instruction): used when a restarted wait ended while it was
    /// measured.
    public static func returned(_ regs: Registers, value: Int64) -> Registers {
        var r = regs
        r.raw.rax = UInt64(bitPattern: value)
        r.raw.orig_rax = UInt64.max
        return r
    }

    /// A poll(fds=rdi, nfds=rsi, timeout_ms=rdx) call's registers (or those of its restart,
    /// which keeps them) with a negative timeout: it waits with no end.
    public static func pollWithoutTimeout(_ regs: Registers) -> Bool { Int32(truncatingIfNeeded: regs.raw.rdx) < 0 }

    public static func interruptedRelativeSleep(_ regs: Registers) -> RelativeSleep? {
        let r = regs.raw
        if Int64(bitPattern: r.rax) == ERESTARTNOHAND {
            switch regs.syscall {
            case .select? where r.r8 != 0: return RelativeSleep(clockID: Clock.monotonic, rem: r.r8, kind: .timeLeftTimeval)
            case .pselect6? where r.r8 != 0: return RelativeSleep(clockID: Clock.monotonic, rem: r.r8, kind: .timeLeftTimespec)
            case .ppoll? where r.rdx != 0: return RelativeSleep(clockID: Clock.monotonic, rem: r.rdx, kind: .timeLeftTimespec)
            default: return nil
            }
        }
        if Int64(bitPattern: r.orig_rax) >= 0, Int64(bitPattern: r.rax) == EINTR || Int64(bitPattern: r.rax) == ERESTARTNOHAND {
            switch regs.syscall {
            case .epoll_wait? where Int32(truncatingIfNeeded: r.r10) > 0, .epoll_pwait? where Int32(truncatingIfNeeded: r.r10) > 0:
                return RelativeSleep(clockID: Clock.monotonic, rem: 0, kind: .epollTimeout)
            case .epoll_pwait2? where r.r10 != 0:
                return RelativeSleep(clockID: Clock.monotonic, rem: 0, kind: .epollTimespec)
            case .rt_sigtimedwait? where r.rdx != 0, .semtimedop? where r.r10 != 0:
                return RelativeSleep(clockID: Clock.monotonic, rem: 0, kind: .timedWait)
            default: return nil
            }
        }
        guard Int64(bitPattern: r.rax) == ERESTART_RESTARTBLOCK else { return nil }
        switch regs.syscall {
        case .nanosleep?: return RelativeSleep(clockID: Clock.monotonic, rem: r.rsi)
        case .clock_nanosleep? where r.rsi & 1 /* TIMER_ABSTIME */ == 0:
            return RelativeSleep(clockID: Int32(truncatingIfNeeded: r.rdi), rem: r.r10)
        // A poll with no timeout (-1) is restarted the same way (do_restart_poll with
        // has_timeout 0) but has no time to keep: re-issued as it was.
        case .poll? where Int32(truncatingIfNeeded: r.rdx) >= 0:
            return RelativeSleep(clockID: Clock.monotonic, rem: 0, kind: .poll)
        // FUTEX_WAIT (0) with FUTEX_PRIVATE_FLAG (128) or not; not FUTEX_CLOCK_REALTIME (256).
        case .futex? where r.rsi & ~128 == 0 && r.r10 != 0:
            return RelativeSleep(clockID: Clock.monotonic, rem: 0, kind: .futexWait)
        default: return nil
        }
    }

    /// Points the request argument of the sleep syscall in `r` at `address` (a struct
    /// timespec): nanosleep's req, clock_nanosleep's req (and rt_sigtimedwait's timeout, also
    /// the third argument), futex's, epoll_pwait2's and semtimedop's timeout.
    public static func setSleepRequest(_ r: inout Registers, to address: UInt64) {
        switch r.syscall {
        case .nanosleep?: r.raw.rdi = address
        case .futex?, .epoll_pwait2?, .semtimedop?: r.raw.r10 = address
        default: r.raw.rdx = address
        }
    }

    /// Gives poll(2) the time left, in milliseconds rounded up (a wait never ends early).
    public static func setPollTimeout(_ r: inout Registers, nanoseconds: Int64) {
        r.raw.rdx = UInt64((max(0, nanoseconds) + 999_999) / 1_000_000)
    }

    /// The timeout of an epoll_wait or epoll_pwait (their fourth argument, r10), in ms;
    /// setEpollTimeout gives it the time left, rounded up.
    public static func epollTimeout(_ r: Registers) -> Int64 {
        Int64(Int32(truncatingIfNeeded: r.raw.r10))
    }

    /// Where the relative timeout (a struct timespec) of epoll_pwait2 or semtimedop (r10,
    /// their fourth argument) or rt_sigtimedwait (rdx, its third) is.
    public static func timeoutAddress(_ r: Registers) -> UInt64 { r.syscall == .rt_sigtimedwait ? r.raw.rdx : r.raw.r10 }

    public static func setEpollTimeout(_ r: inout Registers, nanoseconds: Int64) {
        r.raw.r10 = UInt64((max(0, nanoseconds) + 999_999) / 1_000_000)
    }

    /// Syscalls that install a temporary signal mask while they sleep (TIF_RESTORE_SIGMASK):
    /// PTRACE_SETSIGMASK on a task inside one would drop the saved mask.
    public static let syscallsWithTemporaryMask: Set<Syscall> = [.rt_sigsuspend, .pselect6, .ppoll, .epoll_pwait, .epoll_pwait2]
}
#endif
