import SSIInject
import SSISystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Freezing that outlives the ssi command (`ssi checkpoint -f`, `restart -U`): each
/// application gets a cgroup v2 group `<cgroup2 mount>/ssi/app-<appid>`, and its
/// cgroup.freeze file freezes every task in it at once, forks included (Linux 5.2,
/// Documentation/admin-guide/cgroup-v2.rst "Core Interface Files").
public struct CgroupFreezer: Sendable {
    public let base: String

    /// Finds the cgroup2 mount (pure v2 at /sys/fs/cgroup, or the hybrid /sys/fs/cgroup/unified).
    public static func find() -> CgroupFreezer? {
        guard let mounts = try? ProcFS.read("/proc/self/mounts") else { return nil }
        for line in mounts.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f.count > 2, f[2] == "cgroup2" { return CgroupFreezer(base: "\(f[1])/ssi") }
        }
        return nil
    }

    public static func require() throws -> CgroupFreezer {
        guard let f = find() else {
            throw SSIError(.unsupported, "freezing needs the cgroup v2 freezer, and no cgroup2 file system is mounted",
                           hint: "mount -t cgroup2 none /sys/fs/cgroup/unified")
        }
        return f
    }

    public func path(_ app: Int32) -> String { "\(base)/app-\(app)" }

    /// Opens (creating it if needed) the application's group, for clone3's CLONE_INTO_CGROUP.
    public func openGroup(_ app: Int32) throws -> Int32 {
        try ensureGroup(path(app))
        let fd = open(path(app), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw SSIError.sys("open \(path(app))", errno: errno) }
        return fd
    }

    /// A temporary group for a process whose pid (the appid) is not known yet.
    public func openNewGroup() throws -> (String, Int32) {
        let p = "\(base)/new-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try ensureGroup(p)
        let fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw SSIError.sys("open \(p)", errno: errno) }
        return (p, fd)
    }

    /// Moves what `ssi run` started in its temporary group into the application's own once
    /// the appid is known, and removes the temporary group. cgroup v2 cannot rename a group
    /// (its kernfs has no rename: EPERM; only cgroup v1 could), so every process is moved,
    /// again until the temporary group is empty: a process forks meanwhile into the group it
    /// is in. Without this the first checkpoint found no group of the application's, froze
    /// nothing first, and `ssi checkpoint -f` froze the root alone.
    public func adopt(temporary: String, app: Int32) {
        if rename(temporary, path(app)) == 0 { return }
        guard (try? ensureGroup(path(app))) != nil else { return }
        for _ in 0..<50 {
            let pids = ((try? ProcFS.read("\(temporary)/cgroup.procs")) ?? "").split(separator: "\n")
            if pids.isEmpty { break }
            for p in pids { try? ProcFS.write("\(path(app))/cgroup.procs", String(p)) }
        }
        rmdir(temporary)
    }

    func ensureGroup(_ p: String) throws {
        if mkdir(base, 0o755) != 0 && errno != EEXIST { throw SSIError.sys("mkdir \(base)", errno: errno, hint: "run as root") }
        if mkdir(p, 0o755) != 0 {
            guard errno == EEXIST else { throw SSIError.sys("mkdir \(p)", errno: errno) }
            // A group left frozen and empty (an earlier application with the same id, whose
            // freeze outlived it): a process born into it would stop at once, and the launch
            // would wait for it forever. No process is in it: nobody's freeze is undone.
            if (try? ProcFS.read("\(p)/cgroup.freeze"))?.hasPrefix("1") == true,
               (try? ProcFS.read("\(p)/cgroup.procs"))?.isEmpty == true {
                try? ProcFS.write("\(p)/cgroup.freeze", "0")
            }
        }
    }

    /// Moves a process into its application's group (for processes not started by ssi run).
    public func enroll(pid: Int32, app: Int32) throws {
        try ensureGroup(path(app))
        let cur = (try? ProcFS.read("/proc/\(pid)/cgroup")) ?? ""
        if cur.contains("/ssi/app-\(app)\n") { return }
        try ProcFS.write("\(path(app))/cgroup.procs", "\(pid)")
    }

    public func isFrozen(_ app: Int32) -> Bool {
        guard let t = try? ProcFS.read("\(path(app))/cgroup.freeze") else { return false }
        return t.hasPrefix("1")
    }

    /// Freezes the group and waits until the kernel reports it frozen (cgroup.events).
    ///
    /// The application is stopped from the write on, so the wait is part of its frozen time:
    /// a loop of reads and 1 ms sleeps cost it a sleep's wake-up past the freeze (1-2 ms on a
    /// busy VM). The last task usually freezes within microseconds (it only has to take the
    /// signal-delivery trap, kernel/cgroup/freezer.c), so the file is read again at once a few
    /// times, giving the CPU to the freezing tasks in between, and then waited on with
    /// poll(2): a change of cgroup.events is a kernfs notification, which wakes POLLPRI
    /// (cgroup-v2.rst "cgroup.events"; kernfs_generic_poll). cgroup_file_notify delays a
    /// notification that comes within 10 ms of the previous one, so the poll is bounded by
    /// 1 ms and the file read again each time.
    public func freeze(_ app: Int32) throws {
        let already = isFrozen(app)
        try ProcFS.write("\(path(app))/cgroup.freeze", "1")
        let events = "\(path(app))/cgroup.events"
        let fd = open(events, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SSIError.sys("open \(events)", errno: errno) }
        defer { close(fd) }
        let deadline = Clock.monotonicNanoseconds() + 2_000_000_000
        var buf = [UInt8](repeating: 0, count: 512)
        for attempt in 0... {
            // From offset 0 each time: the read is also what re-arms the poll (kernfs
            // remembers the event count it last showed this open file).
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            if n > 0, Self.isFrozen(events: buf[0..<n]) { return }
            if Clock.monotonicNanoseconds() > deadline { break }
            if attempt < 20 {
                sched_yield()
            } else {
                var p = pollfd(fd: fd, events: Int16(POLLPRI), revents: 0)
                _ = poll(&p, 1, 1)
            }
        }
        // Not left half frozen by us: whoever asked goes on without the freeze (a checkpoint
        // fails, and the application runs on). A freeze asked before (ssi freeze, a job's
        // suspend) stays.
        if !already { try? thaw(app) }
        throw SSIError(.system, "application \(app) did not freeze within 2 s (\(events))\(already ? "" : "; it was let go again")",
                       hint: "a task of it may be stuck in the kernel (state D in /proc/PID/stat); try again once it is not")
    }

    /// cgroup.events says "frozen 1" (one "key value" pair per line).
    static func isFrozen<C: Collection>(events: C) -> Bool where C.Element == UInt8 {
        String(decoding: events, as: UTF8.self).split(separator: "\n").contains("frozen 1")
    }

    public func thaw(_ app: Int32) throws {
        try ProcFS.write("\(path(app))/cgroup.freeze", "0")
    }

    /// Removes groups left empty by applications that ended.
    public func sweep() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix("app-") || name.hasPrefix("new-") {
            // A "new-<pid>-..." group belongs to an `ssi run` that may be about to clone into
            // it: only a dead owner's group is removed.
            if name.hasPrefix("new-"), let owner = Int32(name.split(separator: "-")[1]), kill(owner, 0) == 0 { continue }
            let procs = (try? ProcFS.read("\(base)/\(name)/cgroup.procs")) ?? "x"
            if procs.isEmpty { rmdir("\(base)/\(name)") }
        }
    }
}
