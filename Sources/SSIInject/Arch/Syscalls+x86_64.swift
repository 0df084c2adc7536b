#if arch(x86_64)
// Syscall numbers from arch/x86/entry/syscalls/syscall_64.tbl. The only place in Swift where
// a syscall number is written.
extension Syscall {
    public static let read = Syscall(0, "read"), write = Syscall(1, "write"), open = Syscall(2, "open"), close = Syscall(3, "close")
    public static let lseek = Syscall(8, "lseek"), mmap = Syscall(9, "mmap"), mprotect = Syscall(10, "mprotect"), munmap = Syscall(11, "munmap")
    public static let brk = Syscall(12, "brk"), rt_sigaction = Syscall(13, "rt_sigaction"), rt_sigprocmask = Syscall(14, "rt_sigprocmask")
    public static let ioctl = Syscall(16, "ioctl"), pread64 = Syscall(17, "pread64"), mremap = Syscall(25, "mremap"), madvise = Syscall(28, "madvise")
    public static let shmat = Syscall(30, "shmat"), dup2 = Syscall(33, "dup2"), pause = Syscall(34, "pause"), nanosleep = Syscall(35, "nanosleep")
    public static let getitimer = Syscall(36, "getitimer"), setitimer = Syscall(38, "setitimer"), getpid = Syscall(39, "getpid")
    public static let clone = Syscall(56, "clone"), vfork = Syscall(58, "vfork"), kill = Syscall(62, "kill"), fcntl = Syscall(72, "fcntl")
    public static let chdir = Syscall(80, "chdir"), fchdir = Syscall(81, "fchdir"), umask = Syscall(95, "umask")
    public static let setpgid = Syscall(109, "setpgid"), setsid = Syscall(112, "setsid"), setgroups = Syscall(116, "setgroups")
    public static let setresuid = Syscall(117, "setresuid"), setresgid = Syscall(119, "setresgid")
    public static let rt_sigqueueinfo = Syscall(129, "rt_sigqueueinfo"), rt_sigsuspend = Syscall(130, "rt_sigsuspend")
    public static let sigaltstack = Syscall(131, "sigaltstack"), personality = Syscall(135, "personality"), prctl = Syscall(157, "prctl")
    public static let chroot = Syscall(161, "chroot"), set_tid_address = Syscall(218, "set_tid_address")
    public static let restart_syscall = Syscall(219, "restart_syscall"), timer_create = Syscall(222, "timer_create")
    public static let timer_settime = Syscall(223, "timer_settime"), timer_gettime = Syscall(224, "timer_gettime")
    public static let clock_nanosleep = Syscall(230, "clock_nanosleep"), exit_group = Syscall(231, "exit_group")
    public static let epoll_ctl = Syscall(233, "epoll_ctl"), openat = Syscall(257, "openat"), pselect6 = Syscall(270, "pselect6")
    public static let ppoll = Syscall(271, "ppoll"), set_robust_list = Syscall(273, "set_robust_list"), epoll_pwait = Syscall(281, "epoll_pwait")
    public static let timerfd_create = Syscall(283, "timerfd_create"), timerfd_settime = Syscall(286, "timerfd_settime")
    public static let timerfd_gettime = Syscall(287, "timerfd_gettime")
    public static let signalfd4 = Syscall(289, "signalfd4"), eventfd2 = Syscall(290, "eventfd2"), epoll_create1 = Syscall(291, "epoll_create1")
    public static let dup3 = Syscall(292, "dup3"), pipe2 = Syscall(293, "pipe2"), rt_tgsigqueueinfo = Syscall(297, "rt_tgsigqueueinfo")
    public static let memfd_create = Syscall(319, "memfd_create"), userfaultfd = Syscall(323, "userfaultfd"), rseq = Syscall(334, "rseq"), pidfd_open = Syscall(434, "pidfd_open")
    public static let clone3 = Syscall(435, "clone3"), close_range = Syscall(436, "close_range"), pidfd_getfd = Syscall(438, "pidfd_getfd")
    public static let epoll_pwait2 = Syscall(441, "epoll_pwait2"), seccomp = Syscall(317, "seccomp")
    public static let flock = Syscall(73, "flock"), fchmod = Syscall(91, "fchmod"), fchown = Syscall(93, "fchown")
    public static let poll = Syscall(7, "poll"), futex = Syscall(202, "futex")
    public static let select = Syscall(23, "select"), epoll_wait = Syscall(232, "epoll_wait")
    public static let mlock = Syscall(149, "mlock"), mlock2 = Syscall(325, "mlock2"), utimensat = Syscall(280, "utimensat"), rt_sigtimedwait = Syscall(128, "rt_sigtimedwait")
    public static let wait4 = Syscall(61, "wait4"), semop = Syscall(65, "semop"), mseal = Syscall(462, "mseal")
    public static let membarrier = Syscall(324, "membarrier"), mlockall = Syscall(151, "mlockall")
    public static let setfsuid = Syscall(122, "setfsuid"), setfsgid = Syscall(123, "setfsgid"), mq_notify = Syscall(244, "mq_notify")
    public static let sethostname = Syscall(170, "sethostname"), setdomainname = Syscall(171, "setdomainname")
    public static let unshare = Syscall(272, "unshare"), setns = Syscall(308, "setns"), mq_open = Syscall(240, "mq_open"), exit = Syscall(60, "exit")
    public static let capset = Syscall(126, "capset"), mount = Syscall(165, "mount"), umount2 = Syscall(166, "umount2")
    public static let connect = Syscall(42, "connect"), listen = Syscall(50, "listen"), socketpair = Syscall(53, "socketpair")
    public static let pkey_mprotect = Syscall(329, "pkey_mprotect"), pkey_alloc = Syscall(330, "pkey_alloc"), pkey_free = Syscall(331, "pkey_free")
    public static let semtimedop = Syscall(220, "semtimedop")

    /// Every syscall named above, to name a number read from /proc.
    static let all: [Syscall] = [
        read, write, open, close, lseek, mmap, mprotect, munmap, brk, rt_sigaction, rt_sigprocmask, ioctl, pread64, mremap, madvise,
        shmat, dup2, pause, nanosleep, getitimer, setitimer, getpid, clone, vfork, kill, fcntl, chdir, fchdir, umask, setpgid,
        setsid, setgroups, setresuid, setresgid, rt_sigqueueinfo, rt_sigsuspend, sigaltstack, personality, prctl, chroot,
        set_tid_address, restart_syscall, timer_create, timer_settime, timer_gettime, clock_nanosleep, exit_group, epoll_ctl,
        openat, pselect6, ppoll, set_robust_list, epoll_pwait, timerfd_create, timerfd_settime, signalfd4, eventfd2,
        epoll_create1, dup3, pipe2, rt_tgsigqueueinfo, memfd_create, userfaultfd, rseq, pidfd_open, clone3, close_range, pidfd_getfd, epoll_pwait2,
        flock, fchmod, fchown, mlock, mlock2, utimensat, rt_sigtimedwait, wait4, sethostname, setdomainname, unshare, setns, mq_open, exit, seccomp, capset,
        mount, umount2, poll, futex, select, epoll_wait, timerfd_gettime, semop, mseal, membarrier, mlockall, setfsuid, setfsgid, mq_notify,
        connect, listen, socketpair, pkey_mprotect, pkey_alloc, pkey_free, semtimedop,
    ]
}
#endif
