import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// An application: a root process and all its descendants (Kerrighed's definition).
public struct ProcessTree: Sendable {
    public let root: Int32
    /// Root first; every parent before its children.
    public var pids: [Int32] = []
    public var parent: [Int32: Int32] = [:]

    /// Walks /proc once: each process's parent from /proc/PID/stat.
    /// `frozen`: every task of the application is frozen (cgroup freezer), so that the
    /// children lists can be trusted (fromChildLists); otherwise all of /proc is walked.
    public static func collect(root: Int32, frozen: Bool = false) throws -> ProcessTree {
        if frozen, let tree = fromChildLists(root: root) { return tree }
        var children = [Int32: [Int32]]()
        var parent = [Int32: Int32]()
        guard let all = numericEntries(of: "/proc") else { throw SSIError.sys("opendir /proc", errno: errno) }
        for pid in all {
            guard let st = try? ProcStat.read(pid: pid) else { continue }
            parent[pid] = st.ppid
            children[st.ppid, default: []].append(pid)
        }
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

    /// The tree as the children lists give it, for a hint that may miss a process forked or
    /// reparented during the read (the application runs): a few files instead of the stat of
    /// every process of the machine (7-18 ms seen on a busy VM, right before a freeze). The
    /// full walk where the kernel has no lists.
    public static func approximate(root: Int32) throws -> ProcessTree {
        try fromChildLists(root: root) ?? collect(root: root)
    }

    /// The tree from the children lists of every thread (/proc/PID/task/TID/children,
    /// proc(5), CONFIG_PROC_CHILDREN): a few files for the application's own processes,
    /// where walking /proc reads the stat of every process of the machine (hundreds, some
    /// ms, while the application is frozen). proc(5) calls the lists reliable only while the
    /// children are stopped or frozen (a child exiting or reparented during the read can be
    /// skipped, and a later round's `adding` looks only at newer PIDs): used only for an
    /// application the cgroup freezer holds. Nil if the kernel has no lists.
    static func fromChildLists(root: Int32) -> ProcessTree? {
        guard access("/proc/\(root)/task/\(root)/children", R_OK) == 0 else { return nil }
        var tree = ProcessTree(root: root)
        var queue = [root], next = 0
        var seen: Set<Int32> = [root]
        while next < queue.count {
            let p = queue[next]
            next += 1
            tree.pids.append(p)
            var kids = [Int32]()
            for t in numericEntries(of: "/proc/\(p)/task") ?? [] {
                let text = (try? ProcFS.read("/proc/\(p)/task/\(t)/children")) ?? ""
                kids += text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
            for k in kids.sorted() where seen.insert(k).inserted {
                tree.parent[k] = p
                queue.append(k)
            }
        }
        return tree
    }

    /// The last PID allocated in our PID namespace (/proc/sys/kernel/ns_last_pid), or nil.
    public static func lastPID() -> Int32? {
        (try? ProcFS.read("/proc/sys/kernel/ns_last_pid")).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// This tree with the processes created since `last` was read: every task created since
    /// has a PID in (last, now] when PIDs did not wrap (alloc_pid hands them out in
    /// increasing order, a parent's before its child's), so only those /proc entries are
    /// read instead of every process of the machine: the rescan that proves the tree whole
    /// runs while the application is stopped, and the full walk took 3-16 ms there. Nil
    /// when PIDs wrapped or too many were created (the caller walks /proc whole).
    public func adding(createdAfter last: Int32, upTo now: Int32) -> ProcessTree? {
        guard now >= last, now - last <= 4096 else { return nil }
        var tree = self
        var members = Set(pids)
        guard last < now else { return tree }
        for pid in (last + 1)...now {
            // Skipped if known: the walk that came before may have seen it already.
            guard !members.contains(pid), let st = try? ProcStat.read(pid: pid), members.contains(st.ppid) else { continue }
            tree.pids.append(pid)
            tree.parent[pid] = st.ppid
            members.insert(pid)
        }
        return tree
    }
}

/// Every task of an application held in a ptrace stop. No task can fork while stopped, and
/// the tree is rescanned until a pass finds no task we do not hold, so the set is complete.
public final class SeizedApplication {
    public let root: Int32
    public private(set) var tree: ProcessTree
    /// pid -> its threads, all stopped under us (main thread first).
    public private(set) var threads: [Int32: [Int32]] = [:]
    /// Zombies cannot be traced: pid -> wait status, from /proc/PID/stat exit_code.
    public private(set) var zombies: [Int32: Int32] = [:]
    /// Processes whose leader exited while other threads run: pid -> a live thread, through
    /// which /proc and ptrace reach the process (ExitedLeader).
    public private(set) var exitedLeaders: [Int32: Int32] = [:]
    /// Processes that were stopped by job control when we came.
    public private(set) var jobStopped: Set<Int32> = []
    /// Their stop signal while the parent has not been told yet (/proc/PID/stat exit_code,
    /// read before we seize them: a wait(2) that reports the stop clears it), else 0.
    public private(set) var stopSignals: [Int32: Int32] = [:]
    /// CLOCK_MONOTONIC (ns) when each task was seen in its ptrace stop: an interrupted
    /// relative sleep had its remaining time computed just before.
    public private(set) var stoppedAt: [Int32: Int64] = [:]
    /// CLOCK_MONOTONIC (ns) once the cgroup freezer had frozen the application, when it was
    /// frozen first: freezing already ended the sleeps (the freezer wakes every task), so
    /// their time left dates from then rather than from the ptrace stop.
    public var frozenAt: Int64? = nil
    /// Threads with syscall user dispatch on when seized: their setting, switched off while
    /// they are held and set back when they are let go. With it on, a syscall injected from
    /// the vDSO (outside the region allowed through) would raise SIGSYS instead of running,
    /// and the kernel, finding SIGSYS blocked by the injection, would reset the program's
    /// SIGSYS handler (force_sig_info): the application, let go, would die of its next
    /// dispatched syscall.
    public private(set) var syscallDispatch: [Int32: [UInt64]] = [:]
    public private(set) var released = false
    /// Tasks whose stop was waited for, and those let go this round (a vfork child).
    private var stoppedTasks = Set<Int32>()
    private var letGo = Set<Int32>()

    public init(root: Int32) { self.root = root; tree = ProcessTree(root: root) }

    /// `thaw` is called once the first tasks are seized (the cgroup freezer case: frozen
    /// tasks only enter the ptrace stop once thawed).
    public func seize(thaw: (() throws -> Void)? = nil) throws {
        var thawed = thaw == nil
        var last = ProcessTree.lastPID()
        for round in 0..<20 {
            let now = ProcessTree.lastPID()
            if round > 0, let l = last, let n = now, let grown = tree.adding(createdAfter: l, upTo: n) {
                tree = grown
            } else {
                tree = try ProcessTree.collect(root: root, frozen: thaw != nil && !thawed)
            }
            last = now
            let fresh = try seizeNewTasks()
            if !thawed, let thaw { try thaw(); thawed = true }
            letGo = []
            for tid in fresh where !letGo.contains(tid) {
                // A task that exits while it is being stopped (a child of a program that
                // spawns all the time) is dropped; the next round finds its zombie.
                guard try waitForStop(tid) else {
                    let pid = threads.first { $0.value.contains(tid) }?.key ?? tid
                    if pid == root && tid == root {
                        throw SSIError(.state, "application \(root) exited while being stopped; nothing was written", hint: "try again")
                    }
                    threads[pid]?.removeAll { $0 == tid }
                    if threads[pid]?.isEmpty == true { threads[pid] = nil }
                    continue
                }
                stoppedAt[tid] = min(Clock.monotonicNanoseconds(), frozenAt ?? .max)
                let t = Tracee.adoptTraceMe(ProcessID(tid))
                if let sud = t.syscallUserDispatch() {
                    syscallDispatch[tid] = sud
                    t.setSyscallUserDispatch([0])
                }
            }
            if fresh.isEmpty { return }
            if round == 19 { throw SSIError(.system, "application \(root) keeps creating tasks faster than they can be stopped") }
        }
    }

    /// One pass over the tree: seizes and interrupts every task not held yet; returns them.
    private func seizeNewTasks() throws -> [Int32] {
        var fresh = [Int32]()
        for pid in tree.pids {
            guard var st = try? ProcStat.read(pid: pid) else { continue }
            // A leader that exited while its other threads run: the process lives, through
            // them (its state is theirs).
            let live = st.state == "Z" ? ExitedLeader.liveThread(pid) : nil
            if let live {
                exitedLeaders[pid] = live
                if let t = try? ProcStat.read(pid: live) { st = t }
            }
            if st.state == "Z" {
                if zombies[pid] == nil { zombies[pid] = try zombieStatus(pid) }
                continue
            }
            if threads[pid] == nil && st.state == "T" {
                jobStopped.insert(pid)
                stopSignals[pid] = (try? zombieStatus(pid)).map { $0 & 0x7f } ?? 0
            }
            let held = Set(threads[pid] ?? [])
            for tid in (try? threadIDs(of: pid)) ?? [] where !held.contains(tid) && !(live != nil && tid == pid) {
                do {
                    guard try Tracee.seize(ProcessID(tid), of: ProcessID(pid)) != nil else { continue }   // exited meanwhile
                } catch let e as SSIError where e.errno == EPERM && e.message.hasPrefix("PTRACE_SEIZE") {
                    // A task already exiting refuses to be traced (ptrace_attach: EPERM once
                    // its exit_state is set): it exited meanwhile, the next round finds it.
                    guard let now = try? ProcStat.read(pid: tid), now.state != "Z", now.state != "X" else { continue }
                    // A task has one tracer (ptrace(2)): TracerPid of its status names it.
                    let tracer = (try? ProcFS.read("/proc/\(pid)/task/\(tid)/status")).flatMap { ProcStatus.parse($0).fields["TracerPid"] }.flatMap { Int32($0) } ?? 0
                    if tracer > 0 {
                        let name = (try? ProcFS.read("/proc/\(tracer)/comm"))?.trimmingCharacters(in: .newlines) ?? "?"
                        let inside = Set(tree.pids).contains(tracer)
                        if !inside && (name == "ssi" || name == "ssid") {
                            throw SSIError(.busy, "cannot checkpoint PID \(pid): \(name == "ssi" ? "another ssi command" : "the node's daemon") (PID \(tracer)) holds it now (a checkpoint, a restart or a migration under way); nothing was written and the application goes on",
                                           hint: "wait for that command to end, then try again")
                        }
                        throw SSIError(.permission, "cannot trace PID \(pid) (thread \(tid)): it is traced by PID \(tracer) (\(name))\(inside ? ", a process of the application (a debugger or tracer inside it)" : ""), and a task has only one tracer; nothing was written and the application goes on",
                                       hint: inside ? "checkpoint it once the tracer has detached (PTRACE_DETACH); a tracer's state (its options, the stops it has seen) cannot be saved"
                                                    : "detach the debugger or strace (PID \(tracer)), then checkpoint again")
                    }
                    throw SSIError(.permission, "cannot trace PID \(pid) (thread \(tid)): operation not permitted",
                                   hint: "the process may already be traced (a debugger, strace) or you are not root")
                }
                threads[pid, default: []].append(tid)
                fresh.append(tid)
            }
        }
        return fresh
    }

    /// False when the task exited instead of stopping. A task blocked in vfork (now, or by
    /// the time it is waited for: it may still be making the child when seized) never stops
    /// while we hold its child: the child is let go until it has exec'd (letVforkChildGo).
    private func waitForStop(_ tid: Int32) throws -> Bool {
        let t = Tracee.adoptTraceMe(ProcessID(tid))
        var polls = 0
        while true {
            guard let stop = try t.waitIfStopped() else {
                polls += 1
                if polls % 16 == 1, waitingForVfork(tid) {
                    let pid = threads.first { $0.value.contains(tid) }?.key ?? tid
                    guard let gone = letVforkChildGo(parent: pid, waiter: tid) else {
                        throw SSIError(.unsupported, "PID \(pid) is blocked in vfork until its child, which shares its memory, calls exec or exits; such a process cannot be checkpointed; nothing was written",
                                       hint: "checkpoint again once the child has called exec")
                    }
                    letGo.formUnion(gone)
                }
                usleep(polls < 200 ? 50 : 1_000)
                continue
            }
            if stop.ended { return false }
            if stop == .interruptStop { stoppedTasks.insert(tid); return true }
            // A signal arrived before our interrupt: deliver it; the interrupt stop follows.
            if case .signal(let sig) = stop { try t.cont(signal: sig) } else { try t.cont() }
        }
    }

    /// Lets the children of `parent` we hold go (PTRACE_DETACH, once in their stop: detach
    /// is a restarting request) so that its vfork child can exec or exit, and waits up to
    /// half a second for `waiter` to leave the vfork; the children are seized again by the
    /// next round. The tasks let go, or nil if it stays blocked.
    private func letVforkChildGo(parent: Int32, waiter: Int32) -> Set<Int32>? {
        var gone = Set<Int32>()
        for (pid, tids) in threads where tree.parent[pid] == parent && !jobStopped.contains(pid) && !waitingForVfork(pid) {
            for t in tids {
                if let sud = syscallDispatch.removeValue(forKey: t) { Tracee.adoptTraceMe(ProcessID(t)).setSyscallUserDispatch(sud) }
                stoppedAt[t] = nil
                if stoppedTasks.contains(t) || (try? waitForStop(t)) == true { try? Tracee.adoptTraceMe(ProcessID(t)).detach() }
                stoppedTasks.remove(t)
                gone.insert(t)
            }
            threads[pid] = nil
        }
        for _ in 0..<500 {
            if !waitingForVfork(waiter) { return gone }
            usleep(1_000)
        }
        return nil
    }

    /// A task blocked in vfork(2), or clone/clone3 with CLONE_VFORK, until its child execs or
    /// exits (wait_for_vfork_done, state D): it never enters the ptrace stop while its child
    /// is held stopped, so waiting for it would hang. /proc/TID/syscall shows the call and
    /// its arguments (proc(5)); clone3's flags are the first word of its struct clone_args.
    private func waitingForVfork(_ tid: Int32) -> Bool {
        guard let st = try? ProcStat.read(pid: tid), st.state == "D", let blocked = BlockedSyscall.of(ProcessID(tid)),
              let arg1 = blocked.arguments.first else { return false }
        let cloneVfork: UInt64 = 0x4000
        switch blocked.syscall {
        case .vfork: return true
        case .clone: return arg1 & cloneVfork != 0                   // clone(flags, ...)
        case .clone3:                                                 // clone3(&args, size)
            var flags: UInt64 = 0
            guard (try? withUnsafeMutableBytes(of: &flags) { try RemoteMemory(pid: ProcessID(tid)).forcedRead(into: $0, at: arg1) }) != nil else { return false }
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

    /// Signals the threads dequeued during injected calls (HeldSignals), queued again unless
    /// the application is being killed. Before a cgroup freeze, if the caller freezes the
    /// application again: a frozen task runs no injected call. Done once.
    public func requeueHeldSignals(killing signal: Signal? = nil) {
        for (pid, tids) in threads {
            if let signal, signal != .stop { HeldSignals.forget(tids); continue }
            for t in tids { HeldSignals.requeue(tid: t, pid: pid, handle: exitedLeaders[pid]) }
        }
    }

    /// Queues SIGSTOP to every process while each task is still in its ptrace stop: it acts
    /// as soon as the task leaves that stop, whoever lets it go (`release(signal: .stop)`,
    /// or the kernel's detach when this process dies, ptrace(2)). A release without a
    /// signal then leaves the tasks stopped; SIGCONT continues them (and discards a stop
    /// still pending, signal(7)).
    /// The signals held for the tasks are queued again first: requeueing injects a call in
    /// the task, and a stop signal it meets on the way is taken off by the kernel
    /// (reported to us, and resumed without), so none may be pending yet.
    public func queueStop() {
        requeueHeldSignals()
        for pid in threads.keys { try? Signal.stop.send(to: ProcessID(pid)) }
    }

    /// Lets every task go; `signal` is queued first to every process (checkpoint --kill).
    public func release(signal: Signal? = nil) {
        guard !released else { return }
        released = true
        requeueHeldSignals(killing: signal)
        if let signal { for pid in threads.keys { try? signal.send(to: ProcessID(pid)) } }
        for (tid, sud) in syscallDispatch { Tracee.adoptTraceMe(ProcessID(tid)).setSyscallUserDispatch(sud) }
        for (_, tids) in threads {
            for t in tids {
                let tracee = Tracee.adoptTraceMe(ProcessID(t))
                // A call our interrupt ended with -EINTR (epoll_wait, semop, sigtimedwait, a
                // socket call with a timeout: signal(7)) is re-issued on the way out instead
                // of returning EINTR to a program that got no signal; whoever held the task
                // (a dump, a lock hand-over) may have done so already.
                if signal != .kill, let regs = try? tracee.registers(), let fixed = SyscallRestart.restartedAfterStop(regs) {
                    try? tracee.setRegisters(fixed)
                }
                try? tracee.detach()
            }
        }
        // A process stopped by job control (SIGSTOP, Ctrl-Z) keeps any other signal pending
        // until it is continued (signal(7)): `--kill` would leave it stopped, alive, its PID
        // taken. SIGCONT after the kill signal lets that signal act.
        if let signal, signal != .stop, signal != .kill {
            for pid in jobStopped where threads[pid] != nil { try? Signal.continue.send(to: ProcessID(pid)) }
        }
    }

    deinit { release() }
}
