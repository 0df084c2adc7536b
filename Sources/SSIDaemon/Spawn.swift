import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Process helpers for the local cluster's supervisor: posix_spawn (no Swift code runs between
/// fork and exec), the subreaper bit and a reaper.
public enum Proc {
    /// Starts `argv` with stdin from /dev/null and stdout+stderr appended to `log`, an empty
    /// signal mask and default dispositions, optionally in a new session.
    public static func spawn(_ argv: [String], log: String, setsid: Bool = false) throws -> pid_t {
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        posix_spawn_file_actions_adddup2(&fa, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if setsid { flags |= 0x80 }  // POSIX_SPAWN_SETSID (glibc 2.26), hidden behind _GNU_SOURCE
        posix_spawnattr_setflags(&attr, Int16(flags))
        let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let r = posix_spawnp(&pid, argv[0], &fa, &attr, cargs, environ)
        guard r == 0 else { throw SSIError.sys("spawn \(argv[0])", errno: r) }
        return pid
    }

    /// Starts `argv` in a new session as a child of our parent (CLONE_PARENT), stdin from
    /// /dev/null and stdout+stderr appended to `log`: a daemon that outlives us and is
    /// reaped by whoever started us (a shell, a test), not by an init that may not reap.
    /// Where CLONE_PARENT is refused (we are a namespace's init), a child of ours instead.
    public static func spawnSibling(_ argv: [String], log: String) throws -> pid_t {
        let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        let pid = cargs.withUnsafeBufferPointer { cssi_spawn($0.baseAddress!, -1, 0, log, 1) }
        if pid == -EINVAL { return try spawn(argv, log: log, setsid: true) }
        guard pid > 0 else { throw SSIError.sys("spawn \(argv[0])", errno: -pid) }
        return pid
    }

    /// Orphans of our children become ours to reap (prctl(2) PR_SET_CHILD_SUBREAPER), since
    /// PID 1 does not reap on every machine.
    public static func becomeSubreaper() {
        _ = cssi_prctl(36 /* PR_SET_CHILD_SUBREAPER */, 1, 0, 0, 0)
    }

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

    /// Alive and not a zombie.
    public static func alive(_ pid: pid_t) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    public static func cmdline(_ pid: pid_t) -> String {
        guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: d.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
    }

    /// Runs a command to completion (the `ip` tool); returns its status and output.
    @discardableResult
    public static func run(_ argv: [String], check: Bool = true) throws -> (Int32, String) {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ssi-run-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { unlink(out) }
        let pid = try spawn(argv, log: out)
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let code = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
        if check && code != 0 {
            throw SSIError(.system, "\(argv.joined(separator: " ")) failed (\(code)): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return (code, text)
    }
}
