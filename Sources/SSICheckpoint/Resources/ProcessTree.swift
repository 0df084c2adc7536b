import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The process tree: parent links, sessions and process groups, zombies, and the state a
// child shares with its parent (CLONE_FILES, CLONE_FS). Restart forks every process from its
// restored parent with its old PID.

/// Processes (not threads) created with CLONE_FILES or CLONE_FS share their fd table, or
/// their cwd, root and umask, with their parent. kcmp(2) KCMP_FILES / KCMP_FS tells whether
/// two processes share them. Restart forks such a child with the same flag from its restored
/// parent, which has already rebuilt that state, and the child leaves it alone.
///
/// Only sharing along parent links can be rebuilt that way; other sharing (with a process
/// whose parent left, with a process outside the application) fails the checkpoint, as does
/// memory shared between processes (CLONE_VM without CLONE_THREAD, a vfork child that has
/// not exec'd yet).
struct ProcessSharing {
    var filesWithParent: Set<Int32> = []
    var fsWithParent: Set<Int32> = []

    private static func kcmp(_ a: Int32, _ b: Int32, _ type: Kcmp.Kind) -> Int { Kcmp.compare(ProcessID(a), ProcessID(b), type) }

    /// `pids`: the live processes of the application, every parent before its children.
    static func detect(root: Int32, pids: [Int32], parent: [Int32: Int32]) throws -> ProcessSharing {
        var out = ProcessSharing()
        let what: [(Kcmp.Kind, String)] = [(.files, "its fd table (CLONE_FILES)"), (.fs, "its cwd, root and umask (CLONE_FS)"),
                                     (.vm, "its memory (CLONE_VM without CLONE_THREAD, or vfork before exec)")]
        let live = Set(pids)
        for (type, thing) in what {
            // The root's parent is outside the application and is not restored.
            if let outside = (try? ProcStat.read(pid: root))?.ppid, outside > 0, kcmp(root, outside, type) == 0 {
                throw SSIError(.unsupported, "PID \(root) shares \(thing) with its parent PID \(outside), which is outside the application; nothing was written",
                               hint: "checkpoint the parent's application instead")
            }
            // Groups of processes sharing the object: sorted by kcmp's order, sharers are
            // neighbours (n log n calls, not n²). Each group is led by its first member in
            // tree order.
            let order = Dictionary(uniqueKeysWithValues: pids.enumerated().map { ($1, $0) })
            var groups = [(lead: Int32, members: Set<Int32>)]()
            var previous: Int32? = nil
            for pid in pids.sorted(by: { kcmp($0, $1, type) == 1 }) {
                if let p = previous, kcmp(p, pid, type) == 0 {
                    groups[groups.count - 1].members.insert(pid)
                    if order[pid]! < order[groups[groups.count - 1].lead]! { groups[groups.count - 1].lead = pid }
                } else {
                    groups.append((pid, [pid]))
                }
                previous = pid
            }
            for g in groups where g.members.count > 1 {
                for m in g.members where m != g.lead {
                    if type == .vm {
                        throw SSIError(.unsupported, "PID \(m) shares \(thing) with PID \(g.lead): processes sharing memory are not supported; nothing was written",
                                       hint: "checkpoint once the vfork child has called exec")
                    }
                    guard let p = parent[m], live.contains(p), g.members.contains(p) else {
                        throw SSIError(.unsupported, "PID \(m) shares \(thing) with PID \(g.lead) but not with its own parent; only sharing between a parent and its children can be restored; nothing was written")
                    }
                    if type == .files { out.filesWithParent.insert(m) } else { out.fsWithParent.insert(m) }
                }
            }
        }
        return out
    }

    /// Threads with a context of their own: unshare(2) in a thread gives it its own fd table
    /// (CLONE_FILES), cwd, root and umask (CLONE_FS: Samba's per-thread working directories),
    /// or its own UTS, IPC, network or mount namespace (setns in a thread that locked itself
    /// to its OS thread). The snapshot keeps one of each per process, and the restored
    /// threads would silently share the leader's: refused by name. `threads`: pid -> its
    /// threads, main first (SeizedApplication.threads).
    static func refuseThreadContexts(_ threads: [Int32: [Int32]], exitedLeaders: [Int32: Int32]) throws {
        let namespaces = ["uts", "ipc", "net", "mnt"]
        for (pid, tids) in threads {
            let lead = exitedLeaders[pid] ?? pid
            let leadNS = namespaces.map { try? ProcFS.readLink("/proc/\(lead)/task/\(lead)/ns/\($0)") }
            for tid in tids where tid != lead {
                var own: [String] = []
                if Kcmp.compare(ProcessID(lead), ProcessID(tid), .files) > 0 { own.append("fd table (unshare CLONE_FILES)") }
                if Kcmp.compare(ProcessID(lead), ProcessID(tid), .fs) > 0 { own.append("cwd, root and umask (unshare CLONE_FS)") }
                for (i, ns) in namespaces.enumerated() {
                    if let mine = try? ProcFS.readLink("/proc/\(lead)/task/\(tid)/ns/\(ns)"), let theirs = leadNS[i], mine != theirs { own.append("\(ns) namespace") }
                }
                guard !own.isEmpty else { continue }
                throw SSIError(.unsupported, "PID \(pid) thread \(tid) has its own \(own.joined(separator: ", ")), apart from its process's other threads; a thread's own context is not supported by the checkpoint engine yet; nothing was written and the application goes on",
                               hint: "checkpoint it once that thread has gone back to its process's context (or ended)")
            }
        }
    }

    func apply(to image: inout ProcessImage) {
        image.sharesFilesWithParent = filesWithParent.contains(image.pid) ? true : nil
        image.sharesFSWithParent = fsWithParent.contains(image.pid) ? true : nil
    }
}

extension ProcessRestorer {
    /// clone3 flags for forking `child` (sched.h): CLONE_FS 0x200, CLONE_FILES 0x400.
    static func sharingFlags(_ child: ProcessImage) -> UInt64 {
        (child.sharesFilesWithParent == true ? 0x400 : 0) | (child.sharesFSWithParent == true ? 0x200 : 0)
    }

    /// Session leaders lead a new session before they fork, so their children inherit it.
    func becomeSessionLeaderIfNeeded() throws {
        if image.sid == image.pid { try inj.call("setsid", .setsid) }
    }

    /// Forks a child process with its old PID (clone3 set_tid, run by this process, so the
    /// parent/child link is the original one). The child stops at birth, traced by us.
    func fork(child: ProcessImage) throws -> Tracee {
        // The first process of a PID namespace the application made is that namespace's
        // init: CLONE_NEWPID makes the namespace, set_tid[0] = 1 (PIDNamespace.swift).
        let flags = ProcessRestorer.sharingFlags(child) | (ProcessRestorer.startsPIDNamespace(child, parent: image) ? 0x2000_0000 : 0)
        let r = try clone3(flags: flags, exitSignal: UInt64(child.exitSignal ?? SIGCHLD), tids: PIDNamespace.setTIDs(child.pid, nested: child.nestedPIDs))
        if r == -Int64(EEXIST) { throw ProcessTreeBuilder.pidBusy(child.pid) }
        if r < 0 { throw SSIError.sys("clone3 of PID \(child.pid) in PID \(pid)", errno: Int32(-r)) }
        let t = Tracee.adoptTraceMe(ProcessID(try childID(child.pid)))
        switch try t.wait() {
        case .signal(.stop), .event: return t
        case let other: throw SSIError(.system, "forked PID \(child.pid) did not stop as expected (\(other))")
        }
    }

    /// A child in a session whose leader has exited (it was reparented to this process, a
    /// subreaper or init-like parent): setsid(2) makes a session whose id is the caller's
    /// PID, so a helper is forked with the session's id as its PID, calls setsid, forks the
    /// child with CLONE_PARENT (clone(2): its parent is then this process, as it was; it
    /// inherits the helper's session and group, which joinGroup changes if needed), and
    /// exits; this process reaps it, and the SIGCHLD it got is dropped with the restore's
    /// own signals (dropRestoreSignals).
    func forkIntoLostSession(child: ProcessImage) throws -> Tracee {
        let sid = child.sid
        let signal = UInt64(child.exitSignal ?? SIGCHLD)
        let r = try clone3(flags: 0, exitSignal: signal, tids: [sid])
        if r == -Int64(EEXIST) { throw SSIError(.busy, "PID \(sid) (the id of the session of PID \(child.pid)) is taken; nothing was changed",
                                               hint: "the process that has PID \(sid) now must end before this restart") }
        if r < 0 { throw SSIError.sys("clone3 of the session helper \(sid) in PID \(pid)", errno: Int32(-r)) }
        let h = Tracee.adoptTraceMe(ProcessID(try childID(sid)))
        guard case .signal(.stop) = try h.wait() else { throw SSIError(.system, "session helper \(sid) did not stop as expected") }
        // The helper is a copy of this process: same scratch area and gadget.
        let hinj = Injector(pid: h.pid, base: try h.registers(), gadget: inj.gadget)
        try hinj.call("setsid in the session helper", .setsid)
        let hmem = RemoteMemory(pid: h.pid)
        // exit_signal 0: clone3 refuses one with CLONE_PARENT (EINVAL); the child takes the
        // helper's, which is its own (copy_process).
        try hmem.write(words: [0x8000 /* CLONE_PARENT */, 0, 0, 0, 0, 0, 0, 0, scratch + 256, 1, 0], to: scratch + 128)
        try hmem.write(words: [UInt64(child.pid)], to: scratch + 256)
        let c = try hinj.rawArgs(.clone3, [scratch + 128, 88])
        if c < 0 { throw SSIError.sys("clone3 of PID \(child.pid) in its session helper", errno: Int32(-c)) }
        let t = Tracee.adoptTraceMe(ProcessID(try childID(child.pid)))   // CLONE_PARENT: our child
        switch try t.wait() {
        case .signal(.stop), .event: break
        case let other: throw SSIError(.system, "forked PID \(child.pid) did not stop as expected (\(other))")
        }
        try h.setRegisters(try h.registers().preparedForSyscall(.exit_group, [0], at: inj.gadget))
        try h.cont()
        while true {
            switch try h.wait() {
            case .exited, .killed:
                try inj.call("reap the session helper \(sid)", .wait4, UInt64(sid), 0, 0x4000_0000 /* __WALL */, 0)
                return t
            case .signal(let s): try h.cont(signal: s == .trap || s == .stop ? nil : s)
            case .event: try h.cont()
            }
        }
    }

    /// clone3 run in the process with set_tid = `tids` (Linux 5.5; innermost namespace first,
    /// one id per level from there out, clone(2)): the new task gets its old ids. Returns the
    /// raw result.
    func clone3(flags: UInt64, exitSignal: UInt64, tids: [Int32]) throws -> Int64 {
        // struct clone_args (linux/sched.h): flags, pidfd, child_tid, parent_tid, exit_signal,
        // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        let args: [UInt64] = [flags, 0, 0, 0, exitSignal, 0, 0, 0, scratch + 256, UInt64(tids.count), 0]
        try mem.write(words: args, to: scratch + 128)
        // set_tid is an array of pid_t (32 bits each): two to a word, little-endian.
        var words = [UInt64](repeating: 0, count: (tids.count + 1) / 2)
        for (i, t) in tids.enumerated() { words[i / 2] |= UInt64(UInt32(bitPattern: t)) << (32 * UInt64(i % 2)) }
        try mem.write(words: words, to: scratch + 256)
        return try inj.rawArgs(.clone3, [scratch + 128, 88])
    }

    /// A zombie: make the freshly forked child end with the saved wait status, so that its
    /// parent can still reap it.
    func makeZombie(_ t: Tracee, status: Int32) throws {
        // The child is a copy of this process: it has the same scratch area and gadget.
        let cinj = Injector(pid: t.pid, base: try t.registers(), gadget: inj.gadget)
        let termsig = status & 0x7f
        if termsig != 0 && termsig != 0x7f {
            // Killed by a signal: reset its handler (a zeroed sigaction) and deliver it.
            // SIGKILL has no handler to reset (rt_sigaction(2): EINVAL).
            if termsig != SIGKILL {
                try RemoteMemory(pid: t.pid).write([UInt8](repeating: 0, count: 32), to: scratch + 1024)
                try cinj.call("reset handler", .rt_sigaction, UInt64(termsig), scratch + 1024, 0, 8)
            }
            // No core dump unless it made one (WCOREDUMP, bit 0x80): with RLIMIT_CORE 0 the
            // kernel reports CLD_KILLED, not CLD_DUMPED (core(5)), and writes no file.
            if status & 0x80 == 0 { _ = ResourceLimits.set(t.pid, 4 /* RLIMIT_CORE */, cur: 0, max: 0) }
            try t.setSigmask(0)
            try t.cont(signal: Signal(termsig))
        } else {
            try t.setRegisters(try t.registers().preparedForSyscall(.exit_group, [UInt64((status >> 8) & 0xff)], at: inj.gadget))
            try t.cont()
        }
        while true {
            switch try t.wait() {
            case .exited, .killed: return
            case .signal(let s): try t.cont(signal: s == .trap || s == .stop ? nil : s)
            case .event: try t.cont()
            }
        }
    }

    /// Process groups, after every process exists: leaders first (`leaders`), then members.
    /// `nested`: the nestedPIDs of the snapshot's processes that have some, by PID.
    func joinGroup(leaders: Bool, known: Set<Int32>, nested: [Int32: [Int32]] = [:]) throws {
        guard image.sid != image.pid else { return }               // a session leader leads its group
        if leaders && image.pgid == image.pid {
            try inj.call("setpgid", .setpgid, 0, 0)
        } else if !leaders && image.pgid != image.pid {
            // setpgid(2) takes the group's id in the caller's PID namespace: in one the
            // application made, the leader's id there; a group led outside it has no id there
            // (EPERM), and is right when inherited at fork, as it was made.
            var group = image.pgid
            if let mine = image.nestedPIDs {
                if let theirs = nested[image.pgid], theirs.count == mine.count, let id = theirs.last {
                    group = id
                } else if PIDNamespace.nsIDs(pid, field: "NSpgid").count > appLevelIndex,
                          PIDNamespace.nsIDs(pid, field: "NSpgid")[appLevelIndex] == image.pgid {
                    return
                }
            }
            if known.contains(image.pgid) {
                let r = try inj.raw(.setpgid, 0, UInt64(group))
                if r < 0 { warn("PID \(pid) could not rejoin process group \(image.pgid): \(String(cString: strerror(Int32(-r))))") }
            } else if !known.contains(image.sid) {
                warn("PID \(pid) belonged to session \(image.sid) / group \(image.pgid), led by processes outside the snapshot; it now runs in ssi's session")
            }
        }
    }
}

extension ProcessDumper {
    /// A zombie (exited, not reaped): no memory, no fds; its wait status is restored as is.
    static func zombieImage(_ pid: Int32, status: Int32, parent: Int32?) -> ProcessImage {
        var img = ProcessImage(pid: pid)
        img.ppid = parent ?? 0
        img.zombieStatus = status
        if let st = try? ProcStat.read(pid: pid) { img.pgid = st.pgid; img.sid = st.sid; img.comm = st.comm; img.exitSignal = st.exitSignal }
        return img
    }
}

enum ProcessTreeBuilder {
    /// clone3 set_tid refused a PID no process has (EEXIST): the number is still held as the
    /// id of a session or process group that outlived its leader, in which some process lives
    /// on (a daemon that double-forked out of the application, its group and session kept).
    /// That process is named when /proc shows it.
    static func pidBusy(_ pid: Int32) -> SSIError {
        var holders = [String]()
        for p in numericEntries(of: "/proc") ?? [] where holders.count < 3 {
            guard let st = try? ProcStat.read(pid: p), st.sid == pid || st.pgid == pid else { continue }
            holders.append("PID \(p) (\(st.comm))")
        }
        if holders.isEmpty { return SSIError(.busy, "PID \(pid) is busy (taken while restarting); nothing was changed") }
        return SSIError(.busy, "PID \(pid) is still in use as the session or process group id of \(holders.joined(separator: ", ")), which left the application's process tree (a double fork) and lives on; a PID cannot be given again while its session or group lives; nothing was changed",
                        hint: "end \(holders.count == 1 ? "that process (or wait for it" : "those processes (or wait for them") to exit), then restart again")
    }
}
