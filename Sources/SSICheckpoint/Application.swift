import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// An application: a root process and all its descendants (Kerrighed's definition).
struct ProcessTree {
    let root: Int32
    /// Root first; every parent before its children.
    var pids: [Int32] = []
    var parent: [Int32: Int32] = [:]

    /// Walks /proc once: each process's parent from /proc/PID/stat.
    static func collect(root: Int32) throws -> ProcessTree {
        var children = [Int32: [Int32]]()
        var parent = [Int32: Int32]()
        guard let dir = opendir("/proc") else { throw SSIError.sys("opendir /proc", errno: errno) }
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let pid = Int32(name), let st = try? ProcStat.read(pid: pid) else { continue }
            parent[pid] = st.ppid
            children[st.ppid, default: []].append(pid)
        }
        closedir(dir)
        var tree = ProcessTree(root: root)
        var queue = [root]
        while !queue.isEmpty {
            let p = queue.removeFirst()
            tree.pids.append(p)
            if p != root { tree.parent[p] = parent[p] }
            queue += (children[p] ?? []).sorted()
        }
        return tree
    }
}

/// Every task of an application held in a ptrace stop. No task can fork while stopped, and
/// the tree is rescanned until a pass finds no task we do not hold, so the set is complete.
final class SeizedApplication {
    let root: Int32
    private(set) var tree: ProcessTree
    /// pid -> its threads, all stopped under us (main thread first).
    private(set) var threads: [Int32: [Int32]] = [:]
    /// Zombies cannot be traced: pid -> wait status, from /proc/PID/stat exit_code.
    private(set) var zombies: [Int32: Int32] = [:]
    /// Processes that were stopped by job control when we came.
    private(set) var jobStopped: Set<Int32> = []
    /// CLOCK_MONOTONIC (ns) when each task was seen in its ptrace stop: an interrupted
    /// relative sleep had its remaining time computed just before (see Sleep.swift).
    private(set) var stoppedAt: [Int32: Int64] = [:]
    /// CLOCK_MONOTONIC (ns) once the cgroup freezer had frozen the application, when it was
    /// frozen first: freezing already ended the sleeps (the freezer wakes every task), so
    /// their time left dates from then rather than from the ptrace stop.
    var frozenAt: Int64? = nil
    private var released = false

    init(root: Int32) { self.root = root; tree = ProcessTree(root: root) }

    /// `thaw` is called once the first tasks are seized (the cgroup freezer case: frozen
    /// tasks only enter the ptrace stop once thawed).
    func seize(thaw: (() throws -> Void)? = nil) throws {
        var thawed = thaw == nil
        for round in 0..<20 {
            tree = try ProcessTree.collect(root: root)
            var fresh = [Int32]()
            for pid in tree.pids {
                guard let st = try? ProcStat.read(pid: pid) else { continue }
                if st.state == "Z" {
                    if zombies[pid] == nil { zombies[pid] = try zombieStatus(pid) }
                    continue
                }
                if threads[pid] == nil && st.state == "T" { jobStopped.insert(pid) }
                let held = Set(threads[pid] ?? [])
                for tid in (try? threadIDs(of: pid)) ?? [] where !held.contains(tid) {
                    let r = cssi_ptrace(Int32(CSSI_PTRACE_SEIZE), tid, 0, 0)
                    if r == -Int(ESRCH) { continue }            // exited meanwhile
                    if r < 0 {
                        if Int32(-r) == EPERM {
                            throw SSIError(.permission, "cannot trace PID \(pid) (thread \(tid)): operation not permitted",
                                           hint: "the process may already be traced (a debugger, strace) or you are not root")
                        }
                        throw SSIError.sys("PTRACE_SEIZE of PID \(pid) thread \(tid)", errno: Int32(-r))
                    }
                    try check(cssi_ptrace(Int32(CSSI_PTRACE_INTERRUPT), tid, 0, 0), "PTRACE_INTERRUPT \(tid)")
                    threads[pid, default: []].append(tid)
                    fresh.append(tid)
                }
            }
            if !thawed, let thaw { try thaw(); thawed = true }
            for tid in fresh where waitingForVfork(tid) {
                let pid = threads.first { $0.value.contains(tid) }?.key ?? tid
                throw SSIError(.unsupported, "PID \(pid) is blocked in vfork until its child, which shares its memory, calls exec or exits; such a process cannot be checkpointed; nothing was written",
                               hint: "checkpoint again once the child has called exec")
            }
            for tid in fresh { try waitForStop(tid); stoppedAt[tid] = min(monotonicNanoseconds(), frozenAt ?? .max) }
            if fresh.isEmpty { return }
            if round == 19 { throw SSIError(.system, "application \(root) keeps creating tasks faster than they can be stopped") }
        }
    }

    private func waitForStop(_ tid: Int32) throws {
        while true {
            var status: Int32 = 0
            try check(Int(cssi_waitpid(tid, &status, 0)), "waitpid \(tid)")
            if cssi_wifexited(status) != 0 || cssi_wifsignaled(status) != 0 {
                throw SSIError(.state, "task \(tid) of application \(root) exited while being stopped; nothing was written", hint: "try again")
            }
            if cssi_wptrace_event(status) == Int32(CSSI_PTRACE_EVENT_STOP) { return }
            // A signal arrived before our interrupt: deliver it; the interrupt stop follows.
            try check(cssi_ptrace(Int32(CSSI_PTRACE_CONT), tid, 0, UInt(cssi_wstopsig(status))), "PTRACE_CONT \(tid)")
        }
    }

    /// A task blocked in vfork(2), or clone/clone3 with CLONE_VFORK, until its child execs or
    /// exits (wait_for_vfork_done, state D): it never enters the ptrace stop while its child
    /// is held stopped, so waiting for it would hang. /proc/TID/syscall shows the call and
    /// its arguments (proc(5)); clone3's flags are the first word of its struct clone_args.
    private func waitingForVfork(_ tid: Int32) -> Bool {
        guard let st = try? ProcStat.read(pid: tid), st.state == "D",
              let text = try? ProcFS.read("/proc/\(tid)/syscall") else { return false }
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard f.count > 2, let nr = Int(f[0]) else { return false }
        let arg1 = UInt64(f[1].dropFirst(2), radix: 16) ?? 0
        let cloneVfork: UInt64 = 0x4000
        switch nr {
        case 58: return true                                    // vfork
        case 56: return arg1 & cloneVfork != 0                  // clone(flags, ...)
        case 435:                                               // clone3(&args, size)
            var flags: UInt64 = 0
            guard (try? withUnsafeMutableBytes(of: &flags) { try RemoteMemory(pid: tid).forcedRead(into: $0, at: arg1) }) != nil else { return false }
            return flags & cloneVfork != 0
        default: return false
        }
    }

    /// The wait status a zombie will report: exit_code, field 52 of /proc/PID/stat.
    private func zombieStatus(_ pid: Int32) throws -> Int32 {
        let text = try ProcFS.read("/proc/\(pid)/stat")
        guard let close = text.lastIndex(of: ")") else { return 0 }
        let f = text[text.index(close, offsetBy: 2)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
        return f.count >= 50 ? Int32(f[49]) ?? 0 : 0
    }

    /// Lets every task go; `signal` is queued first to every process (checkpoint --kill).
    func release(signal: Int32? = nil) {
        guard !released else { return }
        released = true
        if let signal { for pid in threads.keys { kill(pid, signal) } }
        for (_, tids) in threads { for t in tids { _ = cssi_ptrace(Int32(CSSI_PTRACE_DETACH), t, 0, 0) } }
    }

    deinit { release() }
}
