import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Timers: setitimer(2) timers and POSIX timers (timer_create(2)), saved with their time left
// and interval and armed again, relative to the restart. timerfds are files (EventFiles).

extension ProcessDumper {
    /// The POSIX timers of /proc/PID/timers, with what timer_gettime reports.
    func dumpPosixTimers(_ s: ScratchPage) throws -> [PosixTimer] {
        var out = [PosixTimer]()
        for var timer in ProcessDumper.parseTimers((try? ProcFS.read("/proc/\(pid)/timers")) ?? "") {
            try s.inj.call("timer_gettime(\(timer.id))", .timer_gettime, UInt64(timer.id), s.address)
            let v = try s.mem.read(Int64.self, count: 4, at: s.address)
            timer.interval = [v[0], v[1]]
            // /proc/PID/timers names a target thread as ssi's /proc sees it; the application
            // may live in a PID namespace of its own, where its threads have other ids.
            if timer.notify & 4 != 0, let inner = PIDNamespace.nsIDs(pid, task: timer.notifyTID).last { timer.notifyTID = inner }
            timer.value = [v[2], v[3]]
            out.append(timer)
        }
        return out
    }

    /// /proc/PID/timers (proc(5)): "ID:", "signal: SIG/VALUE", "notify: KIND/pid.N", "ClockID:".
    static func parseTimers(_ text: String) -> [PosixTimer] {
        var out = [PosixTimer]()
        var cur: PosixTimer? = nil
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "ID":
                if let c = cur { out.append(c) }
                cur = PosixTimer(id: Int32(parts[1]) ?? 0, clockID: 0, signal: 0, sigevValue: 0, notify: 0, notifyTID: 0, interval: [0, 0], value: [0, 0])
            case "signal":
                let sv = parts[1].split(separator: "/")
                cur?.signal = Int32(sv.first ?? "0") ?? 0
                cur?.sigevValue = UInt64(sv.count > 1 ? String(sv[1]) : "0", radix: 16) ?? 0
            case "notify":
                // "KIND/tid.N" or "KIND/pid.N" (fs/proc/base.c, show_timer): KIND is the
                // sigev_notify without SIGEV_THREAD_ID (signal 0, none 1, thread 2), "tid" says
                // SIGEV_THREAD_ID (4): aimed at thread N. glibc's SIGEV_THREAD timers are
                // SIGEV_THREAD_ID ones aimed at its helper thread (with SIGCANCEL).
                let halves = parts[1].split(separator: "/", maxSplits: 1)
                let kind = halves.first ?? ""
                let target = halves.count > 1 ? halves[1] : ""
                cur?.notify = (kind == "none" ? 1 : (kind == "thread" ? 2 : 0)) | (target.hasPrefix("tid") ? 4 : 0)
                cur?.notifyTID = Int32(parts[1].split(separator: ".").last ?? "0") ?? 0
            case "ClockID":
                cur?.clockID = Int32(parts[1]) ?? 0
            default:
                break
            }
        }
        if let c = cur { out.append(c) }
        return out
    }
}

extension ProcessRestorer {
    /// A siginfo (128 bytes) for a signal the kernel sends itself: si_code SI_KERNEL (0x80).
    static func kernelSiginfo(_ sig: Int32) -> Data {
        var info = Data(count: 128)
        info.withUnsafeMutableBytes { $0.storeBytes(of: sig, as: Int32.self); $0.storeBytes(of: Int32(0x80), toByteOffset: 8, as: Int32.self) }
        return info
    }
}

/// Clocks whose time goes on while the application is down (not the CPU-time ones): a timer
/// or sleep on them moves on by the time the application was down; one on a CPU-time clock
/// keeps its time left as it was.
let clocksThatRun: Set<Int32> = [Clock.realtime, Clock.monotonic, Clock.boottime, Clock.realtimeAlarm, Clock.boottimeAlarm, Clock.tai]

extension ProcessRestorer {
    /// The time since the process's timers were read: CLOCK_MONOTONIC's on the same boot, else
    /// CLOCK_REALTIME's (another machine: a migration); 0 for an older snapshot.
    func timeSinceTimersRead() -> Int64 {
        guard let s = image.timersReadAt else { return 0 }
        let d = s.bootID == Clock.bootID() ? Clock.monotonicNanoseconds() - s.monotonic : Clock.nanoseconds(Clock.realtime) - s.realtime
        return max(0, d)
    }

    /// A timer's time left, moved on by `elapsed`: at least `floor` (a timer given 0 would be
    /// disarmed), so one that came due while the application was down fires at once; and how
    /// many periods of `interval` it missed besides that one.
    static func timeLeft(_ left: Int64, interval: Int64, elapsed: Int64, floor: Int64) -> (left: Int64, missed: Int64) {
        let l = left - elapsed
        if l > 0 { return (l, 0) }
        return (floor, interval > 0 ? -l / interval : 0)
    }

    /// A timerfd's time left, moved on by `elapsed`, keeping its schedule: expirations that
    /// fell while the application was down become unread ones (`ticks`: the one due, and
    /// every period after it), and the next comes when it would have (a period's remainder
    /// later), not a period after the restart (which shifted a periodic timerfd by up to a
    /// period per restart). A one-shot timer that came due is expired and disarmed (left 0).
    static func scheduleKept(_ left: Int64, interval: Int64, elapsed: Int64) -> (left: Int64, ticks: Int64) {
        let l = left - elapsed
        if l > 0 { return (l, 0) }
        guard interval > 0 else { return (0, 1) }
        return (interval - (-l) % interval, 1 + (-l) / interval)
    }

    /// Interval and POSIX timers, armed with their remaining time less the time since the
    /// checkpoint (Linux keeps them running while a process is stopped: so does a restart),
    /// on their schedule: a periodic timer that came due while the application was down
    /// fires at once and then when it would have, not a period after the restart.
    func restoreTimers() throws {
        let elapsed = timeSinceTimersRead()
        for var t in image.intervalTimers ?? [] {
            // ITIMER_REAL counts real time; ITIMER_VIRTUAL and ITIMER_PROF the process's CPU.
            if t.which == 0, elapsed > 0, t.value.count == 2, t.interval.count == 2 {
                let kept = Self.scheduleKept(t.value[0] * 1_000_000 + t.value[1], interval: t.interval[0] * 1_000_000 + t.interval[1],
                                             elapsed: elapsed / 1000)
                // setitimer has no absolute mode: the next expiry on the old schedule, and the
                // SIGALRM of those that fell while the application was down, sent once as the
                // timer sends it (it_real_fn: SEND_SIG_PRIV, si_code SI_KERNEL; a standard
                // signal pending already is not queued twice). A one-shot timer that came due
                // fires at once (1 us: 0 would disarm it).
                let left = kept.left > 0 ? kept.left : 1
                if kept.left > 0 && kept.ticks > 0 { timerSignalsDue.append(ProcessRestorer.kernelSiginfo(SIGALRM)) }
                t.value = [left / 1_000_000, left % 1_000_000]
            }
            try mem.write(words: t.interval + t.value, to: scratch)
            try inj.call("setitimer(\(t.which))", .setitimer, UInt64(t.which), scratch, 0)
        }
        guard let timers = image.posixTimers, !timers.isEmpty else { return }
        // PR_TIMER_CREATE_RESTORE_IDS (Linux 6.14): timer_create takes the id to use from
        // *timerid instead of choosing one.
        let restoreIDs = try inj.rawPrctl(.timerCreateRestoreIDs, 1, 0, 0, 0) >= 0
        // /proc/PID/timers lists timers newest first (each is added at the head of the
        // process's list); with chosen ids they are made oldest first, so that the list reads
        // as before. Without, ids come in order, so timers are made by increasing id.
        // A periodic timer whose signal is pending (blocked, or not delivered yet): its
        // expirations meanwhile count as overruns on that one signal (timer_getoverrun(2)).
        // Queued again as a plain siginfo, the signal would be a second one beside the
        // timer's own at its next expiry: armed to expire at once instead, the pending signal
        // is the timer's, and later expirations count as overruns again (those counted
        // before the checkpoint are not known: nothing reads a pending timer's overrun).
        let pending = Set((image.sharedPending + image.threads.flatMap(\.pending)).compactMap(ProcessRestorer.timerID))
        for var t in restoreIDs ? timers.reversed() : timers.sorted(by: { $0.id < $1.id }) {
            var flags: UInt64 = 0
            let running = elapsed > 0 && clocksThatRun.contains(t.clockID) && t.value.count == 2 && t.interval.count == 2
            if pending.contains(t.id), t.value != [0, 0], t.interval != [0, 0], t.interval.count == 2 {
                let next = t.value[0] * 1_000_000_000 + t.value[1]
                t.value = [0, 1]
                if running {
                    // Its signal pending since an expiry before the checkpoint: armed at the
                    // period before its next expiry, in the past, it fires at once (the
                    // pending signal is the timer's own) and its overruns count from there.
                    let interval = t.interval[0] * 1_000_000_000 + t.interval[1]
                    let due = Clock.nanoseconds(t.clockID) - elapsed + next - interval
                    // (At least 1 ns: a clock younger than the time since, after a reboot.)
                    let at = max(1, due)
                    (t.value, flags) = ([at / 1_000_000_000, at % 1_000_000_000], 1)
                }
                timersFiringAtOnce.insert(t.id)
            } else if t.value != [0, 0], running {
                // Armed at the expiry it had (TIMER_ABSTIME), in the past if it came due while
                // the application was down: the kernel fires it at once and counts the periods
                // missed since as overruns (timer_getoverrun(2)), and the next comes on its
                // schedule, as across a stop. The clock read is the same as the process's
                // (ssi refuses applications with a time namespace of their own).
                let due = max(1, Clock.nanoseconds(t.clockID) - elapsed + t.value[0] * 1_000_000_000 + t.value[1])
                (t.value, flags) = ([due / 1_000_000_000, due % 1_000_000_000], 1)
            }
            // struct sigevent: sigev_value, sigev_signo, sigev_notify, sigev_notify_thread_id.
            var ev = [UInt8](repeating: 0, count: 64)
            withUnsafeBytes(of: t.sigevValue) { ev.replaceSubrange(0..<8, with: $0) }
            withUnsafeBytes(of: t.signal) { ev.replaceSubrange(8..<12, with: $0) }
            withUnsafeBytes(of: t.notify) { ev.replaceSubrange(12..<16, with: $0) }
            withUnsafeBytes(of: t.notifyTID) { ev.replaceSubrange(16..<20, with: $0) }
            try mem.write(ev, to: scratch)
            try mem.write(words: [t.id], to: scratch + 64)
            try inj.call("timer_create(\(t.id))", .timer_create, UInt64(t.clockID), scratch, scratch + 64)
            let got = try mem.read(Int32.self, at: scratch + 64)[0]
            if got != t.id { warn("PID \(pid): POSIX timer \(t.id) was restored as timer \(got) (this kernel cannot choose timer ids: PR_TIMER_CREATE_RESTORE_IDS needs Linux 6.14)") }
            if t.value != [0, 0] {
                try mem.write(words: t.interval + t.value, to: scratch + 128)
                try inj.call("timer_settime(\(got))", .timer_settime, UInt64(got), flags /* TIMER_ABSTIME */, scratch + 128, 0)
            }
        }
        if restoreIDs { _ = try inj.rawPrctl(.timerCreateRestoreIDs, 0, 0, 0, 0) }
    }
}
