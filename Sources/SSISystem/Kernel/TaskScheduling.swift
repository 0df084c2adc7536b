import CSSILinux

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
}
