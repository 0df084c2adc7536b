import Foundation
import SSIImage
import SSIInject
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Scheduling attributes: each thread's nice value, policy and priority, CPU affinity, timer
// slack and I/O priority (what `nice`, `chrt`, `taskset`, `ionice` and PR_SET_TIMERSLACK
// set), and the process's no_new_privs flag. The kernel keeps all of them per thread and
// copies them at fork and clone, so a restored thread has the restorer's unless they are
// set again. All but no_new_privs are read and set from outside, by thread id, as root
// (sched_setscheduler(2), sched_setaffinity(2), setpriority(2), ioprio_set(2), proc(5)
// /proc/PID/timerslack_ns).

enum Scheduling {
    /// Mask words read and written: 1024 CPUs, glibc's cpu_set_t.
    static let maskWords = 16

    /// The thread's attributes, or nil if the kernel would not tell (the thread is then
    /// restored with the restorer's, as before version 9).
    static func read(tid: Int32) -> ThreadScheduling? {
        guard let (nice, policy, priority) = TaskScheduling.policy(tid),
              var mask = DumpPin.masks.withLock({ $0[tid] }) ?? TaskScheduling.affinity(tid, words: maskWords) else { return nil }
        while mask.count > 1 && mask.last == 0 { mask.removeLast() }
        let io = TaskScheduling.ioPriority(tid)
        guard io >= 0 else { return nil }
        // /proc/TID/ resolves a thread id too (proc(5): thread directories are reachable by
        // their id though /proc lists only thread group leaders).
        let slack = (try? ProcFS.read("/proc/\(tid)/timerslack_ns")).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        var s = ThreadScheduling(nice: nice, policy: policy, priority: priority, cpus: mask, timerSlackNs: slack, ioPriority: io)
        // SCHED_DEADLINE's parameters are not the static priority sched_getparam gives.
        if policy & 0xff == 6 { s.deadline = TaskScheduling.deadline(tid) }
        return s
    }

    /// Sets thread `task` (its id on this node) to `s`. What the kernel refuses is a warning
    /// naming it: the process runs, scheduled as the restorer was in that respect (a
    /// real-time policy refused in a cgroup without a real-time budget, CPUs this node does
    /// not have). `who`: "PID p thread t" for the messages.
    static func apply(_ s: ThreadScheduling, task: Int32, who: String, otherwise cpus: [UInt64]? = nil) {
        // The policy first: a real-time policy makes the kernel ignore the timer slack.
        var e: Int32
        if let d = s.deadline {
            // sched_setattr(2): admission control may refuse a bandwidth the node lacks, and
            // a deadline task must be free to run on every CPU of its root domain (the
            // restore pinned it to one): its own mask first.
            var all = [UInt64](repeating: 0, count: maskWords)
            for (i, w) in s.cpus.prefix(maskWords).enumerated() { all[i] = w }
            _ = TaskScheduling.setAffinity(task, all)
            e = TaskScheduling.setDeadline(task, d)
            if e != 0 { warn("\(who): SCHED_DEADLINE runtime \(d[0]) deadline \(d[1]) period \(d[2]) ns not restored: \(String(cString: strerror(-e)))") }
        } else {
            e = TaskScheduling.setPolicy(task, s.policy, priority: s.priority)
            if e != 0 { warn("\(who): scheduling policy \(s.policy) priority \(s.priority) not restored: \(String(cString: strerror(-e)))") }
        }
        e = TaskScheduling.setNice(task, s.nice)
        if e != 0 { warn("\(who): nice \(s.nice) not restored: \(String(cString: strerror(-e)))") }
        var mask = [UInt64](repeating: 0, count: maskWords)
        for (i, w) in s.cpus.prefix(maskWords).enumerated() { mask[i] = w }
        e = TaskScheduling.setAffinity(task, mask)
        if e != 0 {
            // EINVAL: none of its CPUs is online here (another node, with fewer CPUs).
            if let cpus { _ = TaskScheduling.setAffinity(task, cpus) }
            warn("\(who): CPU affinity \(cpuList(s.cpus)) not restored (\(String(cString: strerror(-e)))); it may run on any CPU of this node")
        }
        if s.timerSlackNs > 0 {
            do { try ProcFS.write("/proc/\(task)/timerslack_ns", "\(s.timerSlackNs)") } catch {
                warn("\(who): timer slack \(s.timerSlackNs) ns not restored: \(error)")
            }
        }
        e = TaskScheduling.setIOPriority(task, s.ioPriority)
        if e != 0 { warn("\(who): I/O priority 0x\(String(s.ioPriority, radix: 16)) not restored: \(String(cString: strerror(-e)))") }
    }

    /// "0-3,6" for a mask, as taskset -c shows it.
    static func cpuList(_ words: [UInt64]) -> String {
        var cpus: [Int] = []
        for (i, w) in words.enumerated() where w != 0 { for b in 0..<64 where w & (1 << UInt64(b)) != 0 { cpus.append(i * 64 + b) } }
        var parts: [String] = []
        var k = 0
        while k < cpus.count {
            var j = k
            while j + 1 < cpus.count && cpus[j + 1] == cpus[j] + 1 { j += 1 }
            parts.append(j == k ? "\(cpus[k])" : "\(cpus[k])-\(cpus[j])")
            k = j + 1
        }
        return parts.isEmpty ? "(none)" : parts.joined(separator: ",")
    }
}

/// The dump's ptrace round trips on one CPU (CPUPin): the dumping thread and every seized
/// task, from the seize to the release, which gives each its own mask back first. The
/// masks read for the snapshot are the ones from before (`masks`, by task id on this node).
final class DumpPin {
    static let masks = Mutex<[Int32: [UInt64]]>([:])
    private let pin: CPUPin

    init?(_ seized: SeizedApplication) {
        guard let pin = CPUPin(words: Scheduling.maskWords) else { return nil }
        self.pin = pin
        for tid in seized.threads.values.joined() { pin.pin(task: tid) }
        let saved = pin.tasks
        Self.masks.withLock { $0.merge(saved) { _, new in new } }
    }

    func undo() {
        let keys = Array(pin.tasks.keys)
        Self.masks.withLock { for k in keys { $0[k] = nil } }
        pin.undo()
    }

    deinit { undo() }
}
