import CSSILinux
import SSISystem

/// Everything that depends on the CPU architecture lives in this one file: syscall numbers,
/// the register file, how to place a syscall's arguments, and the kernel's syscall-restart
/// rules. Other architectures get a sibling file with the same names.
#if arch(x86_64)
public enum Arch {
    public static let name = "x86_64"
    /// `syscall` (0f 05): the instruction we look for in the vDSO to run injected syscalls.
    public static let syscallInstruction: [UInt8] = [0x0f, 0x05]
    public static let syscallInstructionLength: UInt64 = 2

    /// Syscall numbers from arch/x86/entry/syscalls/syscall_64.tbl.
    public enum SYS {
        public static let read = 0, write = 1, open = 2, close = 3, lseek = 8, mmap = 9, mprotect = 10, munmap = 11
        public static let brk = 12, rt_sigaction = 13, rt_sigprocmask = 14, pread64 = 17, mremap = 25, madvise = 28
        public static let dup2 = 33, pause = 34, nanosleep = 35, getpid = 39, fcntl = 72, chdir = 80, fchdir = 81
        public static let umask = 95, setpgid = 109, setsid = 112, setresuid = 117, setresgid = 119, setgroups = 116
        public static let rt_sigqueueinfo = 129, sigaltstack = 131, personality = 135, prctl = 157, chroot = 161
        public static let set_tid_address = 218, restart_syscall = 219, rt_tgsigqueueinfo = 297
        public static let set_robust_list = 273, pipe2 = 293, dup3 = 292, openat = 257, rseq = 334, close_range = 436
        public static let shmat = 30, kill = 62, exit_group = 231, clone3 = 435
        public static let ioctl = 16, getitimer = 36, setitimer = 38, timer_create = 222, timer_settime = 223, timer_gettime = 224
        public static let epoll_ctl = 233, timerfd_create = 283, timerfd_settime = 286, signalfd4 = 289, eventfd2 = 290, epoll_create1 = 291
        public static let memfd_create = 319
        public static let clock_nanosleep = 230, pidfd_open = 434, pidfd_getfd = 438
    }

    /// A syscall's number and arguments placed in a copy of `base`, the way the `syscall`
    /// instruction reads them (rax; rdi, rsi, rdx, r10, r8, r9), at `rip`.
    public static func syscallRegisters(base: UserRegs, at rip: UInt64, nr: Int, _ a: [UInt64]) -> UserRegs {
        var r = base
        r.rax = UInt64(nr)
        // orig_rax = -1 tells the kernel we are not inside a syscall, so that resuming from
        // the current stop does not apply a syscall restart to these registers.
        r.orig_rax = UInt64.max
        r.rip = rip
        let args = a + Array(repeating: 0, count: max(0, 6 - a.count))
        r.rdi = args[0]; r.rsi = args[1]; r.rdx = args[2]; r.r10 = args[3]; r.r8 = args[4]; r.r9 = args[5]
        return r
    }

    public static func syscallResult(_ r: UserRegs) -> Int64 { Int64(bitPattern: r.rax) }

    /// Kernel-internal errnos a syscall returns when a signal interrupted it
    /// (include/linux/errno.h); user space never sees them, but a stopped task's rax can.
    public static let ERESTARTSYS: Int64 = -512, ERESTARTNOINTR: Int64 = -513
    public static let ERESTARTNOHAND: Int64 = -514, ERESTART_RESTARTBLOCK: Int64 = -516

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
    public static func registersForResume(_ saved: UserRegs) -> UserRegs {
        var r = saved
        if Int64(bitPattern: r.orig_rax) >= 0 && Int64(bitPattern: r.rax) == ERESTART_RESTARTBLOCK {
            r.rax = UInt64(bitPattern: ERESTARTNOHAND)
        }
        return r
    }

    // MARK: interrupted sleeps (version 3)

    /// A relative sleep the kernel interrupted with -ERESTART_RESTARTBLOCK: nanosleep(req=rdi,
    /// rem=rsi), which counts on CLOCK_MONOTONIC (kernel/time/hrtimer.c), or clock_nanosleep
    /// (clock=rdi, flags=rsi, req=rdx, rem=r10) without TIMER_ABSTIME (an absolute sleep
    /// returns -ERESTARTNOHAND instead and is re-issued as it was). `rem` is 0 when the
    /// caller passed NULL.
    public struct RelativeSleep {
        public var clockID: Int32
        public var rem: UInt64
    }

    public static func interruptedRelativeSleep(_ r: UserRegs) -> RelativeSleep? {
        guard Int64(bitPattern: r.rax) == ERESTART_RESTARTBLOCK else { return nil }
        switch Int(r.orig_rax) {
        case SYS.nanosleep: return RelativeSleep(clockID: 1 /* CLOCK_MONOTONIC */, rem: r.rsi)
        case SYS.clock_nanosleep where r.rsi & 1 /* TIMER_ABSTIME */ == 0:
            return RelativeSleep(clockID: Int32(truncatingIfNeeded: r.rdi), rem: r.r10)
        default: return nil
        }
    }

    /// Points the request argument of the sleep syscall in `r` at `address`.
    public static func setSleepRequest(_ r: inout UserRegs, to address: UInt64) {
        if Int(r.orig_rax) == SYS.nanosleep { r.rdi = address } else { r.rdx = address }
    }

    /// Syscalls that install a temporary signal mask while they sleep (TIF_RESTORE_SIGMASK):
    /// PTRACE_SETSIGMASK on a task inside one would drop the saved mask.
    public static let syscallsWithTemporaryMask: Set<Int> = [130 /* rt_sigsuspend */, 270 /* pselect6 */, 271 /* ppoll */,
                                                               281 /* epoll_pwait */, 441 /* epoll_pwait2 */]
}

extension UserRegs {
    /// Named fields for the snapshot, so a human can read a core file.
    public var named: [String: UInt64] {
        ["r15": r15, "r14": r14, "r13": r13, "r12": r12, "rbp": rbp, "rbx": rbx, "r11": r11, "r10": r10, "r9": r9, "r8": r8,
         "rax": rax, "rcx": rcx, "rdx": rdx, "rsi": rsi, "rdi": rdi, "orig_rax": orig_rax, "rip": rip, "cs": cs,
         "eflags": eflags, "rsp": rsp, "ss": ss, "fs_base": fs_base, "gs_base": gs_base, "ds": ds, "es": es, "fs": fs, "gs": gs]
    }

    public init(named d: [String: UInt64]) throws {
        func g(_ k: String) throws -> UInt64 {
            guard let v = d[k] else { throw SSIError(.corrupt, "register \(k) missing from the snapshot") }
            return v
        }
        self.init(r15: try g("r15"), r14: try g("r14"), r13: try g("r13"), r12: try g("r12"), rbp: try g("rbp"), rbx: try g("rbx"),
                  r11: try g("r11"), r10: try g("r10"), r9: try g("r9"), r8: try g("r8"), rax: try g("rax"), rcx: try g("rcx"),
                  rdx: try g("rdx"), rsi: try g("rsi"), rdi: try g("rdi"), orig_rax: try g("orig_rax"), rip: try g("rip"),
                  cs: try g("cs"), eflags: try g("eflags"), rsp: try g("rsp"), ss: try g("ss"), fs_base: try g("fs_base"),
                  gs_base: try g("gs_base"), ds: try g("ds"), es: try g("es"), fs: try g("fs"), gs: try g("gs"))
    }
}
#else
#error("SwiftSSI supports x86_64 only for now: add Arch+<arch>.swift")
#endif
