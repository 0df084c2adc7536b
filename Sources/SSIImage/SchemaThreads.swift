import Foundation

// The snapshot format (Schema.swift), threads: registers and signal state, scheduling,
// seccomp, timers and interrupted sleeps.

public struct ThreadImage: Codable, Sendable {
    public var tid: Int32
    /// Version 9: the thread's ids in the PID namespaces below the application's, as
    /// ProcessImage.nestedPIDs; nil in the application's.
    public var nestedTIDs: [Int32]?
    /// General-purpose registers by name (Arch's register file), as saved while stopped.
    public var registers: [String: UInt64]
    /// The XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE).
    public var xstate: Data
    public var blockedMask: UInt64
    public var pending: [Data]
    public var altStack: AltStack
    public var rseq: RSeq?
    public var robustListHead: UInt64
    public var robustListLength: UInt64
    public var clearChildTID: UInt64
    /// Version 2: the thread's name (/proc/PID/task/TID/comm).
    public var name: String?

    // MARK: inotify/fifo (version 3)

    /// Set when the thread was in a relative nanosleep/clock_nanosleep that the checkpoint
    /// interrupted: what was left to sleep, and when.
    public var interruptedSleep: InterruptedSleep?
    /// Version 9: its nice value, policy, CPU affinity, timer slack and I/O priority.
    public var scheduling: ThreadScheduling?
    /// December 2026 (late): PR_SET_NO_NEW_PRIVS is per thread (prctl(2); a thread that set
    /// it alone, or one made before the main thread set it, differ): this thread's. nil in
    /// older snapshots, where the process's `noNewPrivs` applies to every thread.
    public var noNewPrivs: Bool?
    /// Version 9: its seccomp filters, oldest first (nil: none).
    public var seccompFilters: [SeccompFilter]?
    /// Version 9: its capability sets (capabilities(7) are per thread: `capsh`, daemons
    /// that drop privileges, libcap-ng); nil in older snapshots (the restorer's are kept).
    public var capabilities: CapabilitySets?
    /// A thread other than the main one whose parent-death signal is set (PR_SET_PDEATHSIG
    /// is per thread: the main thread's is ProcessImage.parentDeathSignal); nil: none.
    public var parentDeathSignal: Int32?
    /// PR_MCE_KILL_GET when it is not the system default (2): 0 late, 1 early (QEMU sets
    /// early on its vCPU threads); per thread.
    public var machineCheckKill: Int32?
    /// Its uids, gids and groups when they are not the process's (a raw setresuid(2) or
    /// setgroups(2) changes only the calling thread's; glibc's wrappers change every thread's).
    public var credentials: Credentials?
    /// Syscall user dispatch switched on (prctl PR_SET_SYSCALL_USER_DISPATCH: Wine's threads,
    /// which run Windows code): mode, selector address, offset and length of the region
    /// whose syscalls go through (struct ptrace_sud_config); nil: off.
    public var syscallUserDispatch: [UInt64]?

    public init(tid: Int32) {
        self.tid = tid; registers = [:]; xstate = Data(); blockedMask = 0; pending = []; altStack = AltStack()
        rseq = nil; robustListHead = 0; robustListLength = 0; clearChildTID = 0
    }
}

public struct SigAction: Codable, Sendable, Equatable {
    public var signal: Int32
    public var handler: UInt64
    public var flags: UInt64
    public var restorer: UInt64
    public var mask: UInt64
    public init(signal: Int32, handler: UInt64, flags: UInt64, restorer: UInt64, mask: UInt64) {
        self.signal = signal; self.handler = handler; self.flags = flags; self.restorer = restorer; self.mask = mask
    }
}

/// What the kernel keeps per thread for the CPU and block schedulers (`nice`, `chrt`,
/// `taskset`, `ionice` and PR_SET_TIMERSLACK set them; fork and clone copy them), which a
/// restored thread would otherwise take from the restorer it was forked from.
public struct ThreadScheduling: Codable, Sendable, Equatable {
    /// getpriority(PRIO_PROCESS, tid): -20...19.
    public var nice: Int32
    /// sched_getscheduler(2), SCHED_RESET_ON_FORK (0x40000000) included, and the static
    /// priority (1...99 for SCHED_FIFO and SCHED_RR, 0 for the others).
    public var policy: Int32
    public var priority: Int32
    /// sched_getaffinity(2): the CPUs it may run on, bit n of word n / 64 for CPU n.
    public var cpus: [UInt64]
    /// PR_GET_TIMERSLACK, in ns (/proc/TID/timerslack_ns).
    public var timerSlackNs: UInt64
    /// ioprio_get(IOPRIO_WHO_PROCESS, tid): class << 13 | level.
    public var ioPriority: Int32
    /// SCHED_DEADLINE (policy 6): runtime, deadline and period in ns, and sched_flags.
    public var deadline: [UInt64]?
    public init(nice: Int32, policy: Int32, priority: Int32, cpus: [UInt64], timerSlackNs: UInt64, ioPriority: Int32) {
        (self.nice, self.policy, self.priority, self.cpus, self.timerSlackNs, self.ioPriority) = (nice, policy, priority, cpus, timerSlackNs, ioPriority)
    }
}

/// One seccomp filter of a thread (seccomp(2) SECCOMP_SET_MODE_FILTER): its classic BPF
/// program, 8-byte struct sock_filter instructions, and the flags it was installed with.
public struct SeccompFilter: Codable, Sendable, Equatable {
    public var program: Data
    public var flags: UInt64
    public init(program: Data, flags: UInt64) { (self.program, self.flags) = (program, flags) }
}

public struct AltStack: Codable, Sendable, Equatable {
    public var sp: UInt64 = 0
    public var flags: Int32 = 2 // SS_DISABLE
    public var size: UInt64 = 0
    public init() {}
}

public struct RSeq: Codable, Sendable, Equatable {
    public var pointer: UInt64
    public var length: UInt32
    public var signature: UInt32
    public init(pointer: UInt64, length: UInt32, signature: UInt32) { self.pointer = pointer; self.length = length; self.signature = signature }
}

public struct TimerState: Codable, Sendable, Equatable {
    public var clockID: Int32
    public var valueSeconds: Int64, valueNanoseconds: Int64
    public var intervalSeconds: Int64, intervalNanoseconds: Int64
    public var ticks: UInt64
    /// Version 4: timerfd_settime(2) flags (TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET), and
    /// for an absolute timer its deadline on its clock (the value above is what was left).
    public var settimeFlags: Int32?
    public var deadlineSeconds: Int64?, deadlineNanoseconds: Int64?
    public init(clockID: Int32, valueSeconds: Int64, valueNanoseconds: Int64, intervalSeconds: Int64, intervalNanoseconds: Int64, ticks: UInt64) {
        self.clockID = clockID; self.valueSeconds = valueSeconds; self.valueNanoseconds = valueNanoseconds
        self.intervalSeconds = intervalSeconds; self.intervalNanoseconds = intervalNanoseconds; self.ticks = ticks
    }
}

public struct IntervalTimer: Codable, Sendable, Equatable {
    public var which: Int32
    /// struct itimerval: interval then value, seconds and microseconds.
    public var interval: [Int64]
    public var value: [Int64]
    public init(which: Int32, interval: [Int64], value: [Int64]) { self.which = which; self.interval = interval; self.value = value }
}

public struct PosixTimer: Codable, Sendable, Equatable {
    public var id: Int32
    public var clockID: Int32
    public var signal: Int32
    public var sigevValue: UInt64
    /// SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4.
    public var notify: Int32
    public var notifyTID: Int32
    /// struct itimerspec: interval then value, seconds and nanoseconds (relative).
    public var interval: [Int64]
    public var value: [Int64]
    public init(id: Int32, clockID: Int32, signal: Int32, sigevValue: UInt64, notify: Int32, notifyTID: Int32, interval: [Int64], value: [Int64]) {
        self.id = id; self.clockID = clockID; self.signal = signal; self.sigevValue = sigevValue; self.notify = notify
        self.notifyTID = notifyTID; self.interval = interval; self.value = value
    }
}

/// The clocks when a process's timers were read: a restart moves each relative timer on by
/// the time since (CLOCK_MONOTONIC on the same boot, CLOCK_REALTIME across machines or boots),
/// so that it fires when it would have, not later by the time the application was down.
public struct ClockStamp: Codable, Sendable, Equatable {
    public var monotonic: Int64
    public var realtime: Int64
    public var bootID: String
    public init(monotonic: Int64, realtime: Int64, bootID: String) { (self.monotonic, self.realtime, self.bootID) = (monotonic, realtime, bootID) }
}

/// A relative sleep (nanosleep(2), clock_nanosleep(2) without TIMER_ABSTIME) interrupted by
/// the checkpoint: the kernel wrote what was left to the caller's `rem` buffer.
public struct InterruptedSleep: Codable, Sendable, Equatable {
    /// The clock the sleep counts on (CLOCK_REALTIME for nanosleep).
    public var clockID: Int32
    /// What was left to sleep when the thread was stopped.
    public var remainingNanoseconds: Int64
    /// CLOCK_MONOTONIC once every task was stopped, and the boot it belongs to
    /// (/proc/sys/kernel/random/boot_id): restart subtracts the time elapsed since then.
    public var monotonicAtCheckpoint: Int64
    public var bootID: String
    public init(clockID: Int32, remainingNanoseconds: Int64, monotonicAtCheckpoint: Int64, bootID: String) {
        self.clockID = clockID; self.remainingNanoseconds = remainingNanoseconds
        self.monotonicAtCheckpoint = monotonicAtCheckpoint; self.bootID = bootID
    }
}
