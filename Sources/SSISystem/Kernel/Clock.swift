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
        // CLOCK_REALTIME_ALARM (8) and CLOCK_BOOTTIME_ALARM (9) read CLOCK_REALTIME and
        // CLOCK_BOOTTIME (they differ only in waking a suspended machine), but clock_gettime
        // refuses them with EINVAL on a machine without a wake-capable RTC
        // (kernel/time/alarmtimer.c): a timer's deadline would then be its value since 1970.
        let base: Int32 = clock == 8 ? 0 : clock == 9 ? 7 : clock
        clock_gettime(clockid_t(base), &ts)
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

/// A UTC time as ISO 8601 (`2026-12-06T16:36:41Z`, what ISO8601DateFormatter writes by
/// default), from gmtime_r(3). Foundation's formatter goes through ICU: making one and
/// formatting took 0.3-2 ms in the daemon (2 ms the first time on a thread), and a
/// migration's target commits its received snapshot, manifest date included, while the
/// application is frozen.
public enum ISOTime {
    public static func string(from date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = Glibc.tm()
        guard gmtime_r(&t, &tm) != nil else { return ISO8601DateFormatter().string(from: date) }
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let year = Int(tm.tm_year) + 1900
        let y = year < 1000 ? String(repeating: "0", count: 4 - String(year).count) + String(year) : String(year)
        return "\(y)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))Z"
    }

    public static func now() -> String { string(from: Date()) }
}
