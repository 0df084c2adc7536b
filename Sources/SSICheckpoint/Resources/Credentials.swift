import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Credentials (uids, gids, groups) and the per-process flags that go with them: the
// dumpable flag and the parent-death signal (which a uid change resets), the child-subreaper
// flag, the personality, oom_score_adj and the resource limits.

extension ProcessDumper {
    /// The parent-death signal, the dumpable flag and the child-subreaper flag (prctl run in
    /// the process).
    func dumpProcessFlags(_ s: ScratchPage) throws -> (parentDeathSignal: Int32, dumpable: Int32, childSubreaper: Bool) {
        try s.inj.prctl(.getParentDeathSignal, s.address)
        let pdeath = try s.mem.read(Int32.self, at: s.address)[0]
        let dumpable = Int32(truncatingIfNeeded: try s.inj.prctl(.getDumpable))
        try s.inj.prctl(.getChildSubreaper, s.address)
        let subreaper = try s.mem.read(Int32.self, at: s.address)[0] != 0
        return (pdeath, dumpable, subreaper)
    }

    /// Credentials, personality, oom_score_adj and resource limits, from /proc. A process
    /// in seccomp strict mode is refused.
    func dumpIdentity(into img: inout ProcessImage, status: ProcStatus) throws {
        img.personality = UInt32((try? ProcFS.read("/proc/\(pid)/personality"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0", radix: 16) ?? 0
        img.oomScoreAdj = Int32((try? ProcFS.read("/proc/\(pid)/oom_score_adj"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0") ?? 0
        var creds = Credentials()
        creds.uids = status.ints("Uid").map { UInt32(truncatingIfNeeded: $0) }
        creds.gids = status.ints("Gid").map { UInt32(truncatingIfNeeded: $0) }
        creds.groups = status.ints("Groups").map { UInt32(truncatingIfNeeded: $0) }
        img.credentials = creds
        if status.fields["THP_enabled"] == "0" { img.thpDisabled = true }
        if status.fields["NoNewPrivs"] == "1" { img.noNewPrivs = true }
        // Filters (mode 2) are saved with each thread; strict mode (1) allows only read,
        // write, _exit and sigreturn (seccomp(2)): nothing could be restored after it.
        if status.fields["Seccomp"] == "1" {
            throw SSIError(.unsupported, "PID \(pid) runs in seccomp strict mode, which cannot be restored; nothing was written")
        }
        for r in ResourceLimits.all {
            if let lim = ResourceLimits.get(ProcessID(pid), r) { img.rlimits.append(RLimit(resource: r, cur: lim.cur, max: lim.max)) }
        }
    }
}

extension ProcessRestorer {
    /// A program that raised its RLIMIT_NOFILE may use fd numbers above the soft limit a
    /// fresh process has (dup3(2) and fcntl F_DUPFD fail with EBADF/EINVAL past it): the soft
    /// limit is raised to the hard one while the fds are made; restoreProcessFlags then sets
    /// the saved values. Raising the soft limit up to the hard one needs no privilege.
    func raiseFileLimitForRestore() {
        guard let cur = ResourceLimits.get(ProcessID(pid), 7 /* RLIMIT_NOFILE */), cur.cur < cur.max else { return }
        _ = ResourceLimits.set(ProcessID(pid), 7, cur: cur.max, max: cur.max)
    }

    /// Personality, child-subreaper flag, resource limits and oom_score_adj (while rebuilding).
    func restoreProcessFlags() throws {
        try inj.call("personality", .personality, UInt64(image.personality))
        if image.childSubreaper == true { try inj.prctl(.setChildSubreaper, 1) }
        if image.thpDisabled == true { try inj.prctl(.setTHPDisable, 1) }
        for l in image.rlimits {
            if let old = ResourceLimits.get(ProcessID(pid), l.resource), old.cur == l.cur && old.max == l.max { continue }
            let r = ResourceLimits.set(ProcessID(pid), l.resource, cur: l.cur, max: l.max)
            if r < 0 { warn("rlimit \(l.resource) of PID \(pid) could not be set to \(l.cur)/\(l.max): \(String(cString: strerror(Int32(-r))))") }
        }
        try? ProcFS.write("/proc/\(pid)/oom_score_adj", "\(image.oomScoreAdj)")
    }

    /// Credentials last but for what they reset: a uid change clears the dumpable flag and
    /// the parent-death signal (commit_creds), so those come after.
    func restoreCredentials() throws {
        let c = image.credentials
        if c.uids.count == 4 && c.gids.count == 4 {
            try mem.write(words: c.groups + [0], to: scratch)
            try inj.call("setgroups", .setgroups, UInt64(c.groups.count), scratch)
            try inj.call("setresgid", .setresgid, UInt64(c.gids[0]), UInt64(c.gids[1]), UInt64(c.gids[2]))
            try inj.call("setresuid", .setresuid, UInt64(c.uids[0]), UInt64(c.uids[1]), UInt64(c.uids[2]))
        }
        try inj.prctl(.setDumpable, UInt64(image.dumpable))
        if image.parentDeathSignal != 0 { try inj.prctl(.setParentDeathSignal, UInt64(image.parentDeathSignal)) }
    }
}
