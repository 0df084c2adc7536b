import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Process helpers for supervisors (the local cluster, tests): start, reap, look at.
public enum Proc {
    /// Starts `argv` with stdin from /dev/null and stdout+stderr appended to `log`, an empty
    /// signal mask and default dispositions, optionally in a new session. Our fds above 2
    /// are passed on.
    public static func spawn(_ argv: [String], log: String, setsid: Bool = false) throws -> pid_t {
        var o = SpawnOptions.logging(to: log)
        o.keepFileDescriptors = true
        o.newSession = setsid
        let pid = Spawn.rawStart(argv, o)
        guard pid > 0 else { throw SSIError.sys("spawn \(argv[0])", errno: -pid) }
        return pid
    }

    /// Starts `argv` in a new session as a child of our parent (CLONE_PARENT), stdin from
    /// /dev/null and stdout+stderr appended to `log`: a daemon that outlives us and is
    /// reaped by whoever started us (a shell, a test), not by an init that may not reap.
    /// Where CLONE_PARENT is refused (we are a namespace's init), a child of ours instead.
    public static func spawnSibling(_ argv: [String], log: String) throws -> pid_t {
        var o = SpawnOptions.logging(to: log)
        o.newSession = true
        o.sibling = true
        let pid = Spawn.rawStart(argv, o)
        if pid == -EINVAL { return try spawn(argv, log: log, setsid: true) }
        guard pid > 0 else { throw SSIError.sys("spawn \(argv[0])", errno: -pid) }
        return pid
    }

    /// Orphans of our children become ours to reap (prctl(2) PR_SET_CHILD_SUBREAPER), since
    /// PID 1 does not reap on every machine.
    public static func becomeSubreaper() { Prctl.becomeSubreaper() }

    /// Reaps every exited child without blocking; returns their pids.
    @discardableResult
    public static func reapAll() -> [pid_t] {
        var out: [pid_t] = []
        while true {
            var st: Int32 = 0
            let p = waitpid(-1, &st, WNOHANG)
            if p <= 0 { return out }
            out.append(p)
        }
    }

    /// A process state letter from /proc/PID/stat ("R", "S", "T", "Z"...), or nil if gone.
    public static func state(_ pid: pid_t) -> Character? {
        guard let stat = try? ProcFS.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(close, offsetBy: 2)]
    }

    /// Alive and not a zombie.
    public static func alive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM, let s = state(pid) else { return false }
        return s != "Z" && s != "X"
    }

    public static func cmdline(_ pid: pid_t) -> String {
        guard let d = try? ProcFS.readBytes("/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: d.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
    }

    /// Runs a command to completion (the `ip` tool); returns its exit code and output.
    @discardableResult
    public static func run(_ argv: [String], check: Bool = true) throws -> (Int32, String) {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ssi-run-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { unlink(out) }
        let code = try Spawn.wait(spawn(argv, log: out)).exitCode
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        if check && code != 0 {
            throw SSIError(.system, "\(argv.joined(separator: " ")) failed (\(code)): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return (code, text)
    }
}
