import CSSILinux
import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The checkpoint/restart engine: the one entry point that the CLI, the daemon and
/// migration call.
public struct CheckpointEngine: Sendable {
    public let store: SnapshotStore

    public init(store: SnapshotStore = SnapshotStore()) { self.store = store }

    public struct CheckpointOptions: Sendable {
        public var description: String = ""
        /// Send this signal once the snapshot is safely on disk (`--kill`).
        public var killSignal: Int32? = nil
        /// The application is already frozen (`--ckpt-only`): dump it and leave it frozen.
        public var alreadyFrozen = false
        /// Turn unsupported fds into closed fds at restart (`-i`).
        public var ignoreUnsupported = false
        public init() {}
    }

    public struct CheckpointResult: Sendable {
        public var app: Int32
        public var version: Int
        public var description: String
        public var date: String
        public var directory: String
        /// From the moment the process stopped to the moment it could run again.
        public var frozenSeconds: Double
        public var pageBytes: UInt64
    }

    /// Validates that `pid` is something we may checkpoint, with a message saying why not.
    public static func validateTarget(_ pid: Int32) throws {
        guard pid > 0 else { throw SSIError(.invalidArgument, "invalid PID \(pid)", hint: "give the application id (the PID of its root process)") }
        if pid == 1 { throw SSIError(.invalidArgument, "PID 1 (init) cannot be checkpointed") }
        if pid == getpid() { throw SSIError(.invalidArgument, "PID \(pid) is this ssi command itself") }
        let st = try ProcStat.read(pid: pid)
        if st.isKernelThread { throw SSIError(.invalidArgument, "PID \(pid) (\(st.comm)) is a kernel thread; only user processes can be checkpointed") }
        if st.state == "Z" || st.state == "X" { throw SSIError(.state, "PID \(pid) has exited (it is a zombie)", hint: "its parent must reap it; restart it from a snapshot instead") }
    }

    public func checkpoint(app: Int32, options: CheckpointOptions = CheckpointOptions()) throws -> CheckpointResult {
        try requireRoot("ssi checkpoint")
        try CheckpointEngine.validateTarget(app)
        let threads = try threadIDs(of: app)
        if threads.count > 1 {
            throw SSIError(.unsupported, "PID \(app) has \(threads.count) threads; multi-threaded processes are not supported yet (engine part 2); nothing was written")
        }
        let freezer = CgroupFreezer.find()
        let frozen = freezer?.isFrozen(app) ?? false
        if options.alreadyFrozen && !frozen {
            throw SSIError(.state, "application \(app) is not frozen", hint: "freeze it first with `ssi checkpoint -f \(app)`, or drop -c")
        }
        if !options.alreadyFrozen && frozen {
            throw SSIError(.state, "application \(app) is frozen", hint: "use `ssi checkpoint -c \(app)` to dump it as it is, or `ssi checkpoint -u \(app)` to unfreeze it")
        }
        let writer = try store.beginWrite(app: app)
        let tracee = try Tracee.seize(app)
        try tracee.interrupt()
        // A cgroup-frozen task only enters the ptrace stop once thawed; ptrace keeps it stopped.
        if frozen, let freezer { try freezer.thaw(app) }
        let t0 = DispatchTime.now()
        var attached = true
        var stopSignal: Int32 = 0
        func letGo() {
            guard attached else { return }
            attached = false
            if frozen, let freezer { try? freezer.freeze(app) }
        }
        do {
            stop: while true {
                switch try tracee.wait() {
                case .event: break stop
                case .signal(let s):
                    // A signal arrived before our interrupt: deliver it, the stop follows.
                    stopSignal = s
                    try tracee.cont(signal: s)
                case .exited, .killed:
                    throw SSIError(.state, "PID \(app) exited while being checkpointed; nothing was written")
                }
            }
            _ = stopSignal
            var dumper = ProcessDumper(pid: app)
            dumper.ignoreUnsupported = options.ignoreUnsupported
            var image = try dumpProcess(dumper: dumper, tracee: tracee, writer: writer)
            image.pagesFile = "pages-\(app).img"
            let frozenTime = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
            var result: CheckpointResult
            if let sig = options.killSignal {
                // The snapshot must be on disk before the application is killed.
                result = try commit(writer: writer, image: image, app: app, options: options, frozenTime: frozenTime)
                // Queue the signal while the process is still stopped: it is delivered before
                // the process runs a single instruction more (SIGKILL ends it even in the
                // ptrace stop), so nothing happens after the snapshot that it does not hold.
                kill(app, sig)
                letGo()
                try? tracee.detach(signal: 0)
            } else {
                letGo()
                try tracee.detach()
                result = try commit(writer: writer, image: image, app: app, options: options, frozenTime: frozenTime)
            }
            return result
        } catch {
            writer.abort()
            letGo()
            try? tracee.detach()
            throw error
        }
    }

    private func dumpProcess(dumper: ProcessDumper, tracee: Tracee, writer: SnapshotWriter) throws -> ProcessImage {
        let pid = dumper.pid
        var img = ProcessImage(pid: pid)
        let fds = try dumper.dumpFileDescriptors()
        let saved = try tracee.registers()
        let stat = try ProcStat.read(pid: pid)
        let status = try ProcStatus.read(pid: pid)
        var clock = PhaseClock()
        let inj = try dumper.dumpInjected(saved: saved, status: status, tracee: tracee)
        clock.mark("dump: injected syscalls")
        var thread = ThreadImage(tid: pid)
        thread.registers = saved.named
        thread.xstate = Data(try tracee.xstate())
        thread.blockedMask = try tracee.sigmask()
        thread.pending = try tracee.pendingSiginfo(shared: false).map { Data($0) }
        img.sharedPending = try tracee.pendingSiginfo(shared: true).map { Data($0) }
        thread.altStack = inj.altStack
        if let r = try tracee.rseqConfiguration() {
            thread.rseq = RSeq(pointer: r.rseq_abi_pointer, length: r.rseq_abi_size, signature: r.signature)
        }
        var head: UInt64 = 0, len: UInt64 = 0
        if cssi_get_robust_list(pid, &head, &len) >= 0 { thread.robustListHead = head; thread.robustListLength = len }
        thread.clearChildTID = inj.clearChildTID
        img.threads = [thread]
        img.sigactions = inj.sigactions
        img.parentDeathSignal = inj.parentDeathSignal
        img.dumpable = inj.dumpable
        img.fds = fds
        img.ppid = stat.ppid; img.pgid = stat.pgid; img.sid = stat.sid
        img.comm = (try? ProcFS.read("/proc/\(pid)/comm"))?.trimmingCharacters(in: .newlines) ?? stat.comm
        img.exe = try ProcFS.readLink("/proc/\(pid)/exe")
        img.cwd = try ProcFS.readLink("/proc/\(pid)/cwd")
        img.root = try ProcFS.readLink("/proc/\(pid)/root")
        img.umask = UInt32(status.fields["Umask"] ?? "22", radix: 8) ?? 0o22
        img.personality = UInt32((try? ProcFS.read("/proc/\(pid)/personality"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0", radix: 16) ?? 0
        img.oomScoreAdj = Int32((try? ProcFS.read("/proc/\(pid)/oom_score_adj"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "0") ?? 0
        var creds = Credentials()
        creds.uids = status.ints("Uid").map { UInt32(truncatingIfNeeded: $0) }
        creds.gids = status.ints("Gid").map { UInt32(truncatingIfNeeded: $0) }
        creds.groups = status.ints("Groups").map { UInt32(truncatingIfNeeded: $0) }
        img.credentials = creds
        if status.fields["Seccomp"].map({ $0 != "0" }) ?? false {
            throw SSIError(.unsupported, "PID \(pid) runs under a seccomp filter, which is not supported yet; nothing was written")
        }
        for r in Int32(0)..<16 {
            var lim: [UInt64] = [0, 0]
            if cssi_prlimit(pid, r, nil, &lim) >= 0 { img.rlimits.append(RLimit(resource: r, cur: lim[0], max: lim[1])) }
        }
        var mm = MMFields()
        mm.startCode = stat.startCode; mm.endCode = stat.endCode; mm.startData = stat.startData; mm.endData = stat.endData
        mm.startBrk = stat.startBrk; mm.brk = inj.brk; mm.startStack = stat.startStack
        mm.argStart = stat.argStart; mm.argEnd = stat.argEnd; mm.envStart = stat.envStart; mm.envEnd = stat.envEnd
        mm.auxv = try ProcFS.readBytes("/proc/\(pid)/auxv").withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        img.mm = mm
        let pages = try writer.createStream("pages-\(pid).img")
        clock.mark("dump: /proc, fds, registers")
        img.vmas = try dumper.dumpMemory(to: pages)
        clock.mark("dump: memory")
        writer.addFinished(try pages.finish(name: "pages-\(pid).img"))
        clock.mark("dump: fsync pages")
        return img
    }

    private func commit(writer: SnapshotWriter, image: ProcessImage, app: Int32, options: CheckpointOptions, frozenTime: Double) throws -> CheckpointResult {
        try writer.addJSON("core-\(image.pid).json", image)
        let (version, manifest) = try writer.commit(description: options.description, processes: [image.pid])
        let bytes = image.vmas.reduce(UInt64(0)) { $0 + $1.pages.reduce(0) { $0 + $1.count * SnapshotFormat.pageSize } }
        return CheckpointResult(app: app, version: version, description: options.description, date: manifest.date,
                                directory: store.directory(app, version: version), frozenSeconds: frozenTime, pageBytes: bytes)
    }

    // MARK: freeze / unfreeze

    public func freeze(app: Int32) throws {
        try requireRoot("ssi checkpoint --freeze")
        try CheckpointEngine.validateTarget(app)
        let f = try CgroupFreezer.require()
        if f.isFrozen(app) { throw SSIError(.state, "application \(app) is already frozen", hint: "ssi checkpoint -c \(app) dumps it; ssi checkpoint -u \(app) unfreezes it") }
        try f.enroll(pid: app, app: app)
        try f.freeze(app)
    }

    public func unfreeze(app: Int32, signal: Int32?) throws {
        try requireRoot("ssi checkpoint --unfreeze")
        let f = try CgroupFreezer.require()
        guard ProcFS.exists("/proc/\(app)") else { throw SSIError(.notFound, "no process with PID \(app)") }
        if !f.isFrozen(app) { throw SSIError(.state, "application \(app) is not frozen", hint: "freeze it with ssi checkpoint -f \(app)") }
        // Queued now, delivered as soon as it thaws.
        if let signal, kill(app, signal) != 0 { throw SSIError.sys("kill(\(app), \(signal))", errno: errno) }
        try f.thaw(app)
    }
}

extension CheckpointEngine {
    public struct RestartOptions: Sendable {
        /// Leave the restarted application frozen (`-U`); `ssi checkpoint -u` thaws it.
        public var leaveFrozen = false
        /// Give fds that were terminals the caller's terminal (`-t`).
        public var useCallerTerminal = false
        public init() {}
    }

    public struct RestartResult: Sendable {
        public var app: Int32
        public var version: Int
        public var pid: Int32
        public var restoreSeconds: Double
    }

    /// Rebuilds application `app` from snapshot `version` (latest if nil). The snapshot is
    /// verified whole before anything is created; on any failure the half-built process is
    /// killed and reaped, so the PID is free again and the snapshot untouched.
    /// The restarted process is a child of the caller, which may wait for it.
    public func restart(app: Int32, version: Int?, options: RestartOptions = RestartOptions()) throws -> RestartResult {
        try requireRoot("ssi restart")
        let t0 = DispatchTime.now()
        var clock = PhaseClock()
        let snap = try store.open(app: app, version: version)
        clock.mark("verify snapshot")
        guard let image = snap.processes.first else { throw SSIError(.corrupt, "\(snap.directory) holds no process") }
        var restorer = ProcessRestorer(image: image, snapshotDir: snap.directory)
        restorer.useCallerTerminal = options.useCallerTerminal
        try restorer.preflight()
        let freezer = CgroupFreezer.find()
        var cgroupFD: Int32 = -1
        if let freezer { cgroupFD = (try? freezer.openGroup(app)) ?? -1 }
        defer { if cgroupFD >= 0 { close(cgroupFD) } }
        let tracee = try restorer.restore(cgroupFD: cgroupFD)
        clock.mark("rebuild process")
        if options.leaveFrozen {
            guard let freezer, cgroupFD >= 0 else {
                kill(image.pid, SIGKILL)
                var st: Int32 = 0
                _ = cssi_waitpid(image.pid, &st, 0)
                throw SSIError(.unsupported, "-U needs the cgroup v2 freezer, which is not available here; nothing was restarted")
            }
            try ProcFS.write("\(freezer.path(app))/cgroup.freeze", "1")
            try tracee.detach()
            try freezer.freeze(app)
        } else {
            try tracee.detach()
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
        return RestartResult(app: app, version: snap.manifest.version, pid: image.pid, restoreSeconds: secs)
    }
}
