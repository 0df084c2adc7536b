import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Clocks of clock_gettime(2), in nanoseconds.
public enum Clock {
    public static let realtime: Int32 = 0, monotonic: Int32 = 1, boottime: Int32 = 7, realtimeAlarm: Int32 = 8
    public static let boottimeAlarm: Int32 = 9, tai: Int32 = 11

    /// clock_gettime(clock) in ns.
    public static func nanoseconds(_ clock: Int32) -> Int64 {
        var ts = timespec()
        clock_gettime(clockid_t(clock), &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// CLOCK_MONOTONIC in ns.
    public static func monotonicNanoseconds() -> Int64 { nanoseconds(monotonic) }

    /// This boot's id (random(4), /proc/sys/kernel/random/boot_id): CLOCK_MONOTONIC values of
    /// different boots cannot be compared.
    public static func bootID() -> String {
        (try? ProcFS.read("/proc/sys/kernel/random/boot_id"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }
}
