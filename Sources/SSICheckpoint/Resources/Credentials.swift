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
    /// Credentials, personality, oom_score_adj and resource limits, from /proc. A process
    /// in seccomp strict mode is refused.
    func dumpIdentity(into img: inout ProcessImage, status: ProcStatus) throws {
        img.personality = UInt32((try? ProcFS.read("/proc/\(pid)/personality"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0", radix: 16) ?? 0
        img.oomScoreAdj = Int32((try? ProcFS.read("/proc/\(pid)/oom_score_adj"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0") ?? 0
        // Which mappings a core dump holds (core(5)), set by the program or inherited; the
        // restored process would otherwise have the restorer's.
        if let f = (try? ProcFS.read("/proc/\(pid)/coredump_filter")).flatMap({ UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16) }), f != 0x33 {
            img.coredumpFilter = f
        }
        img.credentials = ProcessDumper.credentials(status)
        if let l = (try? ProcFS.read("/proc/\(pid)/loginuid")).flatMap({ UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), l != UInt32.max {
            img.loginUID = l
        }
        // "/autogroup-899 nice 5" (sched(7)): the nice value of the session's autogroup.
        if let a = try? ProcFS.read("/proc/\(pid)/autogroup"), let n = a.split(separator: " ").last.flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }), n != 0 {
            img.autogroupNice = n
        }
        if status.fields["THP_enabled"] == "0" { img.thpDisabled = true }
        if status.fields["NoNewPrivs"] == "1" { img.noNewPrivs = true }
        // Filters (mode 2) are saved with each thread; strict mode (1) allows only read,
        // write, _exit and sigreturn (seccomp(2)): nothing could be restored after it.
        if status.fields["Seccomp"] == "1" {
            throw SSIError(.unsupported, "PID \(pid) runs in seccomp strict mode, which cannot be restored; nothing was written")
        }
        // prlimit(2) of another user's process needs CAP_SYS_RESOURCE, even to read (a
        // daemon that dropped to its own uid; a root without the capability, in a
        // container): /proc/PID/limits shows them to anyone.
        let shown = Self.limitsFile(pid)
        for r in ResourceLimits.all {
            if let lim = ResourceLimits.get(ProcessID(pid), r) ?? shown[r] { img.rlimits.append(RLimit(resource: r, cur: lim.cur, max: lim.max)) }
        }
    }

    /// /proc/PID/limits (proc(5)): a header, then one line per resource in getrlimit's
    /// order, "%-25s %-20s %-20s %-10s" (fs/proc/base.c): name, soft, hard, units;
    /// "unlimited" is RLIM_INFINITY.
    static func limitsFile(_ pid: Int32) -> [Int32: (cur: UInt64, max: UInt64)] {
        guard let text = try? ProcFS.read("/proc/\(pid)/limits") else { return [:] }
        var out = [Int32: (cur: UInt64, max: UInt64)]()
        for (i, line) in text.split(separator: "\n").dropFirst().enumerated() where ResourceLimits.all.contains(Int32(i)) {
            let fields = line.dropFirst(26).split(separator: " ")
            func value(_ s: Substring) -> UInt64? { s == "unlimited" ? UInt64.max : UInt64(s) }
            guard fields.count >= 2, let cur = value(fields[0]), let max = value(fields[1]) else { continue }
            out[Int32(i)] = (cur, max)
        }
        return out
    }
}

extension ProcessDumper {
    /// The uids, gids (real, effective, saved, file system) and groups a status file of
    /// /proc shows: the process's (/proc/PID/status) or one thread's (/proc/PID/task/TID).
    static func credentials(_ status: ProcStatus) -> Credentials {
        var creds = Credentials()
        creds.uids = status.ints("Uid").map { UInt32(truncatingIfNeeded: $0) }
        creds.gids = status.ints("Gid").map { UInt32(truncatingIfNeeded: $0) }
        creds.groups = status.ints("Groups").map { UInt32(truncatingIfNeeded: $0) }
        return creds
    }
}

extension ProcessRestorer {
    /// A program that raised its RLIMIT_NOFILE may use fd numbers above the soft limit a
    /// fresh process has (dup3(2) and fcntl F_DUPFD fail with EBADF/EINVAL past it): the soft
    /// limit is raised to the hard one while the fds are made; restoreResourceLimits then sets
    /// the saved values. Raising the soft limit up to the hard one needs no privilege.
    func raiseFileLimitForRestore() {
        guard let cur = ResourceLimits.get(ProcessID(pid), 7 /* RLIMIT_NOFILE */), cur.cur < cur.max else { return }
        _ = ResourceLimits.set(ProcessID(pid), 7, cur: cur.max, max: cur.max)
    }

    /// Personality, child-subreaper flag, THP and KSM flags, coredump filter and oom_score_adj
    /// (while rebuilding; the resource limits come in finish: restoreResourceLimits).
    func restoreProcessFlags() throws {
        try inj.call("personality", .personality, UInt64(image.personality))
        if image.childSubreaper == true { try inj.prctl(.setChildSubreaper, 1) }
        if image.thpDisabled == true { try inj.prctl(.setTHPDisable, 1) }
        if let mask = image.membarrierRegistrations {
            // Each REGISTER_* command the process had made: GLOBAL_EXPEDITED (4),
            // PRIVATE_EXPEDITED (16), its SYNC_CORE (64) and RSEQ (256) forms.
            for cmd: UInt32 in [4, 16, 64, 256] where mask & cmd != 0 {
                let r = try inj.raw(.membarrier, UInt64(cmd), 0, 0)
                if r < 0 { warn("PID \(pid): membarrier registration \(cmd) not made again: \(String(cString: strerror(Int32(-r))))") }
            }
        }
        if image.memoryMerge == true {
            do { try inj.prctl(.setMemoryMerge, 1, 0, 0, 0) } catch { warn("PID \(pid): PR_SET_MEMORY_MERGE could not be set again: \(error)") }
        }
        if let f = image.coredumpFilter {
            // Parsed with base 0 (kstrtoul): without its 0x prefix "3b" is no number.
            do { try ProcFS.write("/proc/\(pid)/coredump_filter", "0x" + String(f, radix: 16)) } catch { warn("PID \(pid): coredump_filter could not be set again: \(error)") }
        }
        try? ProcFS.write("/proc/\(pid)/oom_score_adj", "\(image.oomScoreAdj)")
    }

    /// The saved resource limits, once every process of the tree is forked (finish): set
    /// before a fork, a parent's lowered hard limit would be its children's, and raising a
    /// hard limit again needs CAP_SYS_RESOURCE (setrlimit(2)), which containers often lack
    /// (a server that forks its workers, then lowers its own RLIMIT_NOFILE or RLIMIT_CORE).
    /// Set from outside (prlimit(2)), which the credentials set since do not change.
    func restoreResourceLimits() {
        for l in image.rlimits {
            if let old = ResourceLimits.get(ProcessID(pid), l.resource), old.cur == l.cur && old.max == l.max { continue }
            let r = ResourceLimits.set(ProcessID(pid), l.resource, cur: l.cur, max: l.max)
            if r < 0 { warn("rlimit \(l.resource) of PID \(pid) could not be set to \(l.cur)/\(l.max): \(String(cString: strerror(Int32(-r))))") }
        }
    }

    /// The audit login uid and the autogroup's nice value (finish: the session exists, and
    /// the credentials are still the restorer's). The login uid can only be written by the
    /// process itself (proc_loginuid_write refuses any other writer) with CAP_AUDIT_CONTROL:
    /// an injected open, write and close of /proc/self/loginuid. The kernel gives the
    /// process a new audit session id with it, which cannot be chosen. The autogroup is
    /// written from here (any writer with CAP_SYS_NICE).
    func restoreAuditAndAutogroup() throws {
        if let want = image.loginUID,
           (try? ProcFS.read("/proc/\(pid)/loginuid")).flatMap({ UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) != want {
            let path = Array("/proc/self/loginuid".utf8) + [0], text = Array("\(want)".utf8)
            try mem.write(path, to: scratch)
            try mem.write(text, to: scratch + 64)
            let fd = try inj.raw(.openat, UInt64(bitPattern: Int64(AT_FDCWD)), scratch, UInt64(O_WRONLY | O_CLOEXEC))
            let r = fd < 0 ? fd : try inj.raw(.write, UInt64(fd), scratch + 64, UInt64(text.count))
            if fd >= 0 { _ = try inj.raw(.close, UInt64(fd)) }
            if r < 0 { warn("PID \(image.pid): its audit login uid \(want) could not be set again: \(String(cString: strerror(Int32(-r))))") }
        }
        if let nice = image.autogroupNice {
            do { try ProcFS.write("/proc/\(pid)/autogroup", "\(nice)") } catch { warn("PID \(image.pid): its autogroup's nice value \(nice) could not be set again: \(error)") }
        }
    }

    /// Credentials last but for what they reset: a uid change clears the dumpable flag and
    /// the parent-death signal (commit_creds), so those come after. Credentials belong to
    /// each thread (a raw setresuid changes only the caller's; glibc's setuid makes every
    /// thread call it): each thread sets its own, then its capabilities.
    func restoreCredentials() throws {
        for t in image.threads {
            let tinj = t.tid == image.pid ? inj : threadInjectors[t.tid]
            guard let tinj else { throw SSIError(.system, "PID \(image.pid) thread \(t.tid): no injector to set its credentials") }
            try restoreCredentials(of: t, inj: tinj)
        }
        try inj.prctl(.setDumpable, UInt64(image.dumpable))
        if image.parentDeathSignal != 0 { try inj.prctl(.setParentDeathSignal, UInt64(image.parentDeathSignal)) }
        for t in image.threads where t.tid != image.pid {
            guard let sig = t.parentDeathSignal, let tinj = threadInjectors[t.tid] else { continue }
            try tinj.prctl(.setParentDeathSignal, UInt64(sig))
        }
    }

    /// One thread's uids, gids, groups, capability sets and securebits. The restorer's thread
    /// is root with every capability (capabilities(7)); the order follows the kernel's rules:
    /// - SECBIT_KEEP_CAPS keeps the permitted set across the uid change, which otherwise
    ///   empties it (and the effective and ambient sets) when no uid stays 0;
    /// - capset then gives back the effective set the change emptied, with the saved
    ///   inheritable set (a new inheritable set must lie within the old one and the bounding
    ///   set: capset(2), so before the bounding set is narrowed);
    /// - the bounding set is dropped to the saved one (CAP_SETPCAP, effective again);
    /// - ambient capabilities (which need permitted and inheritable) are raised, and the
    ///   securebits set (CAP_SETPCAP);
    /// - a last capset narrows the sets to the saved ones (ambient ones outside them go),
    ///   after the seccomp filters (narrowCapabilities).
    private func restoreCredentials(of t: ThreadImage, inj: Injector) throws {
        let c = t.credentials ?? image.credentials
        let task = t.tid == image.pid ? pid : try taskID(t.tid)
        let now = CapabilitySets.current(task: task)
        let bits = UInt64(image.securebits ?? 0)
        // Nothing to do only when the sets are the restorer's and no uid change will clear
        // any of them (capabilities(7): an effective uid leaving 0 clears the effective set,
        // all three leaving 0 the permitted one too).
        let uidsStayRoot = c.uids.prefix(3).allSatisfy { $0 == 0 }
        let caps = t.capabilities.flatMap { saved in saved == now && bits == 0 && uidsStayRoot ? nil : saved }
        let who = "PID \(image.pid) thread \(t.tid)"
        if caps != nil, now != nil { try inj.prctl(.setSecurebits, 0x10 /* SECBIT_KEEP_CAPS */) }
        if c.uids.count == 4 && c.gids.count == 4 {
            try mem.write(words: c.groups + [0], to: scratch)
            try inj.call("setgroups", .setgroups, UInt64(c.groups.count), scratch)
            try inj.call("setresgid", .setresgid, UInt64(c.gids[0]), UInt64(c.gids[1]), UInt64(c.gids[2]))
            // The file-system ids (setfsuid(2)): setresgid and setresuid set them to the
            // effective ones; one a program set apart (a file server acting for a user) is
            // set again after each, while the thread may still (it was one of its ids, or it
            // had CAP_SETUID, which the keep-caps bit above keeps). setfs*id return the old
            // value, never an error.
            if c.gids[3] != c.gids[1] { _ = try inj.raw(.setfsgid, UInt64(c.gids[3])) }
            try inj.call("setresuid", .setresuid, UInt64(c.uids[0]), UInt64(c.uids[1]), UInt64(c.uids[2]))
            if c.uids[3] != c.uids[1] { _ = try inj.raw(.setfsuid, UInt64(c.uids[3])) }
        }
        guard let caps, let now else { return }
        try capset(inj, effective: now.permitted, permitted: now.permitted, inheritable: caps.inheritable, who: who)
        for cap in 0..<64 where now.bounding & (1 << cap) != 0 && caps.bounding & (1 << cap) == 0 {
            let r = try inj.rawPrctl(.capabilityBoundingSetDrop, UInt64(cap))
            if r < 0 { warn("\(who): capability \(cap) not dropped from the bounding set: \(String(cString: strerror(Int32(-r))))") }
        }
        for cap in 0..<64 where caps.ambient & (1 << cap) != 0 {
            let r = try inj.rawPrctl(.ambientCapability, 2 /* PR_CAP_AMBIENT_RAISE */, UInt64(cap))
            if r < 0 { warn("\(who): ambient capability \(cap) not raised: \(String(cString: strerror(Int32(-r))))") }
        }
        let r = try inj.rawPrctl(.setSecurebits, bits)
        if r < 0 { warn("\(who): securebits \(bits) not set: \(String(cString: strerror(Int32(-r))))") }
        pendingCapabilities.append((inj, caps, who))
    }

    /// Each thread's capability sets narrowed to the saved ones: after its seccomp filters,
    /// whose installation wants CAP_SYS_ADMIN without no_new_privs (seccomp(2)). The filters
    /// do not apply to these calls: the restore traces with PTRACE_O_SUSPEND_SECCOMP.
    func narrowCapabilities() throws {
        for p in pendingCapabilities {
            try capset(p.inj, effective: p.caps.effective, permitted: p.caps.permitted, inheritable: p.caps.inheritable, who: p.who)
        }
        pendingCapabilities = []
    }

    /// capset(2) in the thread, version 3 (two 32-bit words per set); a refusal is a warning:
    /// the application runs with more capabilities than it had, never fewer.
    private func capset(_ inj: Injector, effective: UInt64, permitted: UInt64, inheritable: UInt64, who: String) throws {
        // struct __user_cap_header_struct { u32 version; int pid; } then two
        // struct __user_cap_data_struct { u32 effective, permitted, inheritable; }.
        let words: [UInt32] = [0x2008_0522 /* _LINUX_CAPABILITY_VERSION_3 */, 0,
                               UInt32(truncatingIfNeeded: effective), UInt32(truncatingIfNeeded: permitted), UInt32(truncatingIfNeeded: inheritable),
                               UInt32(truncatingIfNeeded: effective >> 32), UInt32(truncatingIfNeeded: permitted >> 32), UInt32(truncatingIfNeeded: inheritable >> 32)]
        try mem.write(words: words, to: scratch + 2048)
        let r = try inj.raw(.capset, scratch + 2048, scratch + 2056)
        if r < 0 { warn("\(who): capabilities not set to effective \(String(effective, radix: 16)) permitted \(String(permitted, radix: 16)): \(String(cString: strerror(Int32(-r))))") }
    }
}

extension CapabilitySets {
    /// A task's sets now, from /proc/PID/task/TID/status; nil when it cannot be read.
    static func current(task: Int32) -> CapabilitySets? {
        CapabilitySets(status: ProcStatus.parse((try? ProcFS.read("/proc/\(task)/task/\(task)/status")) ?? ""))
    }

    /// The sets a task's status shows (CapInh, CapPrm, CapEff, CapBnd, CapAmb); nil when it
    /// shows none.
    init?(status st: ProcStatus) {
        guard st.fields["CapEff"] != nil else { return nil }
        self.init(inheritable: st.hexMask("CapInh"), permitted: st.hexMask("CapPrm"), effective: st.hexMask("CapEff"),
                  bounding: st.hexMask("CapBnd"), ambient: st.hexMask("CapAmb"))
    }
}
