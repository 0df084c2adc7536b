import CSSILinux
import Foundation
import Synchronization

/// A thread's scheduling attributes, read and set from outside by thread id (setpriority(2),
/// sched_setscheduler(2), sched_setaffinity(2), ioprio_set(2)). Each setter returns 0 or
/// -errno, so that the caller can name what the kernel refused and go on.
public enum TaskScheduling {
    /// (nice, policy, priority), or nil if the thread is gone or the kernel refused.
    public static func policy(_ tid: Int32) -> (nice: Int32, policy: Int32, priority: Int32)? {
        var nice: Int32 = 0, policy: Int32 = 0, priority: Int32 = 0
        guard cssi_get_nice(tid, &nice) == 0, cssi_get_policy(tid, &policy, &priority) == 0 else { return nil }
        return (nice, policy, priority)
    }

    /// The CPU mask in `words` 64-bit words, or nil.
    public static func affinity(_ tid: Int32, words: Int) -> [UInt64]? {
        var mask = [UInt64](repeating: 0, count: words)
        return cssi_get_affinity(tid, &mask, Int32(words)) == 0 ? mask : nil
    }

    /// The I/O priority (class << 13 | data), or -errno.
    public static func ioPriority(_ tid: Int32) -> Int32 { cssi_get_ioprio(tid) }

    public static func setPolicy(_ tid: Int32, _ policy: Int32, priority: Int32) -> Int32 { cssi_set_policy(tid, policy, priority) }
    /// SCHED_DEADLINE's runtime, deadline and period (ns) and sched_flags, or nil.
    public static func deadline(_ tid: Int32) -> [UInt64]? {
        var out = [UInt64](repeating: 0, count: 4)
        return out.withUnsafeMutableBufferPointer { cssi_get_deadline(tid, $0.baseAddress!) } == 0 ? out : nil
    }
    public static func setDeadline(_ tid: Int32, _ v: [UInt64]) -> Int32 {
        guard v.count == 4 else { return -EINVAL }
        return cssi_set_deadline(tid, v[0], v[1], v[2], v[3])
    }
    public static func setNice(_ tid: Int32, _ nice: Int32) -> Int32 { cssi_set_nice(tid, nice) }
    public static func setAffinity(_ tid: Int32, _ mask: [UInt64]) -> Int32 { cssi_set_affinity(tid, mask, Int32(mask.count)) }
    public static func setIOPriority(_ tid: Int32, _ value: Int32) -> Int32 { cssi_set_ioprio(tid, value) }

    /// Runs `body` with the calling thread on every CPU the process's main thread may use
    /// (a pinned thread whose body starts workers: they inherit its mask), then pins it
    /// back as it was.
    public static func unpinned<T>(words: Int = 16, _ body: () throws -> T) rethrows -> T {
        guard let mine = affinity(0, words: words), let all = affinity(getpid(), words: words), mine != all, setAffinity(0, all) == 0 else { return try body() }
        defer { _ = setAffinity(0, mine) }
        return try body()
    }
}

/// A thread and the tasks it works on, on one CPU for a while: the restore and the dump are
/// thousands of ptrace round trips, each a wake-up of the other side, and a wake-up on
/// another CPU that sleeps (halted) costs an interrupt between CPUs, tens of microseconds on
/// a virtual machine; on the same CPU it is a switch (a migration's freeze of redis: its
/// processes rebuilt in 16-23 ms instead of 33-43). Made on the thread to pin, which it pins
/// to the CPU it runs on; `pin(task:)` adds a task; `undo` gives each its mask back, and
/// the pinned thread's to every thread of this process started meanwhile (pthread_create
/// copies the mask: a pool's worker would otherwise serve everything on one CPU).
public final class CPUPin: @unchecked Sendable {
    /// The pinned thread's mask before, and the one-CPU mask.
    public let before: [UInt64]
    public let one: [UInt64]
    /// The tasks pinned with `pin(task:)`, with their masks before.
    public private(set) var tasks: [Int32: [UInt64]] = [:]
    private let thread = Int32(truncatingIfNeeded: cssi_gettid())
    private var undone = false

    /// Nil when the kernel would not tell or set the mask (nothing changed).
    public init?(words: Int = 16) {
        guard let before = TaskScheduling.affinity(0, words: words) else { return nil }
        let cpu = Int(cssi_current_cpu())
        guard cpu >= 0, cpu < words * 64 else { return nil }
        var one = [UInt64](repeating: 0, count: words)
        one[cpu / 64] = 1 << UInt64(cpu % 64)
        guard TaskScheduling.setAffinity(0, one) == 0 else { return nil }
        (self.before, self.one) = (before, one)
    }

    /// Pins `task` to the same CPU; its mask before, or nil when it was on that CPU alone
    /// already or the kernel refused (none of its allowed CPUs: its cpuset).
    @discardableResult
    public func pin(task: Int32) -> [UInt64]? {
        guard let m = TaskScheduling.affinity(task, words: one.count), m != one, TaskScheduling.setAffinity(task, one) == 0 else { return nil }
        tasks[task] = m
        return m
    }

    /// Every pinned task's mask back, then the thread's and its offspring's. Once.
    public func undo() {
        guard !undone else { return }
        undone = true
        for (task, m) in tasks { _ = TaskScheduling.setAffinity(task, m) }
        _ = TaskScheduling.setAffinity(thread, before)
        guard one != before, let all = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return }
        for t in all.compactMap({ Int32($0) }) where TaskScheduling.affinity(t, words: one.count) == one {
            _ = TaskScheduling.setAffinity(t, before)
        }
    }

    deinit { undo() }
}

/// Every thread of this daemon on a real-time policy while an application is frozen for a
/// migration, so that the work the application and its peers wait for is not queued behind
/// busy tasks. The case it is for: a stream between two applications of the local cluster
/// (one kernel, two CPUs), where the kernel's network work for the stream competes with
/// the freeze's steps. Profiled (ssi-bench streams, docs/streams.md): the source's hand-over
/// of a bulk receiver's held packets (writes to the hold's tun device, each carried through
/// the stack in the writer's context) took 48-118 ms without, 11-15 ms with. A SCHED_FIFO
/// thread runs as soon as it is runnable, ahead of every SCHED_OTHER task (sched(7)).
///
/// Bounded on every side: priority 1, the lowest real-time one; SCHED_RESET_ON_FORK, so a
/// process or thread created meanwhile (a restored application's tasks, a fill thread)
/// starts as SCHED_OTHER, with a negative nice reset (sched(7) "The reset-on-fork flag"),
/// and the restore then sets each restored thread's own policy; only threads that were
/// SCHED_OTHER are changed, and put back as they were (sched_setscheduler keeps the nice
/// value for the normal policies); the kernel's real-time throttling (sched_rt_runtime_us,
/// 0.95 s of each second by default) leaves the rest of the machine some time whatever
/// happens; and a boost ends by itself after `limit`. Boosts overlap (two migrations at
/// once): the threads go back once the last ends, or after 2 s of boosts without a pause
/// (a node drained, one move after another). Where the kernel refuses (a cgroup with
/// no real-time budget: cpu.rt_runtime_us 0), nothing changes. SSI_REALTIME_BOOST=0 in the
/// daemon's environment turns it off.
public final class RealtimeBoost: Sendable {
    /// SCHED_FIFO | SCHED_RESET_ON_FORK (<linux/sched.h>: 1, 0x40000000).
    static let policy: Int32 = 1 | 0x4000_0000
    static let enabled = ProcessInfo.processInfo.environment["SSI_REALTIME_BOOST"] != "0"

    private struct Shared {
        var users = 0
        /// Threads boosted, with their policy and priority before.
        var boosted: [Int32: (policy: Int32, priority: Int32)] = [:]
        /// When the first of the boosts under way began (CLOCK_MONOTONIC ns).
        var since: Int64 = 0
        /// Bumped when boosts are ended for having lasted too long: those begun before end
        /// nothing more.
        var generation = 0
    }
    private static let shared = Mutex(Shared())
    private let ended = Mutex(false)
    private let generation: Int
    /// However boosts overlap (a node drained, one move after another), the threads go back
    /// once boosts have lasted this long without a pause.
    static let longest: Int64 = 2_000_000_000

    /// Boosts every thread of the process now (the calling one included); `end` (or
    /// `limit`) puts them back.
    public init(limit: Duration = .milliseconds(500)) {
        generation = Self.shared.withLock { s in
            s.users += 1
            if s.users == 1 { s.since = Clock.monotonicNanoseconds() }
            guard Self.enabled, let all = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return s.generation }
            for tid in all.compactMap({ Int32($0) }) where s.boosted[tid] == nil {
                guard let p = TaskScheduling.policy(tid), p.policy == 0,
                      TaskScheduling.setPolicy(tid, Self.policy, priority: 1) == 0 else { continue }
                s.boosted[tid] = (p.policy, p.priority)
            }
            return s.generation
        }
        let ns = limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(ns))) { [weak self] in self?.end() }
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(Self.longest))) {
            Self.shared.withLock { s in
                guard s.users > 0, Clock.monotonicNanoseconds() - s.since >= Self.longest else { return }
                Self.unboost(&s)
                s.users = 0
                s.generation += 1
            }
        }
    }

    /// Once: the threads go back when no other boost is under way.
    public func end() {
        guard ended.withLock({ e in defer { e = true }; return !e }) else { return }
        Self.shared.withLock { s in
            guard s.generation == generation else { return }
            s.users -= 1
            guard s.users == 0 else { return }
            Self.unboost(&s)
        }
    }

    /// Each boosted thread back as it was: only a thread of this process still (a thread
    /// that ended gives its id back, which a restored application's thread may take, with a
    /// policy of its own) and still as boosted.
    private static func unboost(_ s: inout Shared) {
        for (tid, p) in s.boosted where access("/proc/self/task/\(tid)", F_OK) == 0 {
            guard let now = TaskScheduling.policy(tid), now.policy == policy, now.priority == 1 else { continue }
            _ = TaskScheduling.setPolicy(tid, p.policy, priority: p.priority)
        }
        s.boosted = [:]
    }

    deinit { end() }
}
