import CSSILinux
import Foundation

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
    public static func setNice(_ tid: Int32, _ nice: Int32) -> Int32 { cssi_set_nice(tid, nice) }
    public static func setAffinity(_ tid: Int32, _ mask: [UInt64]) -> Int32 { cssi_set_affinity(tid, mask, Int32(mask.count)) }
    public static func setIOPriority(_ tid: Int32, _ value: Int32) -> Int32 { cssi_set_ioprio(tid, value) }

    /// Pins the calling thread to the CPU it runs on; returns its mask before (to give back
    /// with `setAffinity(0, mask)`), or nil when either call was refused (nothing changed).
    /// Used by the restore (RestartSession.run) and the dump (DumpPin).
    public static func pinCallingThread(words: Int = 16) -> [UInt64]? {
        guard let old = affinity(0, words: words) else { return nil }
        let cpu = Int(cssi_current_cpu())
        guard cpu >= 0, cpu < words * 64 else { return nil }
        var one = [UInt64](repeating: 0, count: words)
        one[cpu / 64] = 1 << UInt64(cpu % 64)
        return setAffinity(0, one) == 0 ? old : nil
    }

    /// Gives `mask` back to the calling thread and to every other thread of this process
    /// whose mask is `pinned` (threads started by the pinned one inherited it; a pool's
    /// worker among them would otherwise serve everything on one CPU from then on).
    public static func unpinThreads(from pinned: [UInt64]?, to mask: [UInt64]) {
        _ = setAffinity(0, mask)
        guard let pinned, pinned != mask, let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return }
        for t in tasks.compactMap({ Int32($0) }) where affinity(t, words: mask.count) == pinned {
            _ = setAffinity(t, mask)
        }
    }

    /// Runs `body` with the calling thread on every CPU the process's main thread may use
    /// (a pinned thread whose body starts workers: they inherit its mask), then pins it
    /// back as it was.
    public static func unpinned<T>(words: Int = 16, _ body: () throws -> T) rethrows -> T {
        guard let mine = affinity(0, words: words), let all = affinity(getpid(), words: words), mine != all, setAffinity(0, all) == 0 else { return try body() }
        defer { _ = setAffinity(0, mine) }
        return try body()
    }
}
