import Foundation
import SSIImage
import SSIInject
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
        public var killSignal: Signal? = nil
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
        let freezer = CgroupFreezer.find()
        let frozen = freezer?.isFrozen(app) ?? false
        if options.alreadyFrozen && !frozen {
            throw SSIError(.state, "application \(app) is not frozen", hint: "freeze it first with `ssi checkpoint -f \(app)`, or drop -c")
        }
        if !options.alreadyFrozen && frozen {
            throw SSIError(.state, "application \(app) is frozen", hint: "use `ssi checkpoint -c \(app)` to dump it as it is, or `ssi checkpoint -u \(app)` to unfreeze it")
        }
        let writer = try store.beginWrite(app: app)
        let seized = SeizedApplication(root: app)
        var refreeze = false
        func letGo(signal: Signal? = nil) {
            // A -c checkpoint leaves the application frozen: freeze the group again before
            // the tasks leave their ptrace stops.
            if refreeze, let freezer { try? ProcFS.write("\(freezer.path(app))/cgroup.freeze", "1") }
            seized.release(signal: signal)
        }
        // An application started by `ssi run` has its own cgroup: freezing it first stops
        // every task at once, forks included, before ptrace takes them one by one. Others are
        // taken by ptrace alone, rescanning until no new task appears.
        var freezeFirst = false
        if !frozen, let freezer, (try? ProcFS.read("/proc/\(app)/cgroup"))?.contains("/ssi/app-\(app)\n") == true {
            try freezer.freeze(app)
            seized.frozenAt = Clock.monotonicNanoseconds()
            freezeFirst = true
        }
        do {
            try seized.seize(thaw: frozen || freezeFirst ? { try freezer?.thaw(app); refreeze = frozen } : nil)
            let t0 = DispatchTime.now()
            var phase = PhaseClock()
            phase.mark("checkpoint: stop every task")
            var images = [ProcessImage]()
            // File descriptors of every process first: an unsupported one must fail the
            // checkpoint before anything is written.
            var fdTables = [Int32: [FileDescriptorImage]]()
            let sharing = try ProcessSharing.detect(root: app, pids: seized.tree.pids.filter { seized.threads[$0] != nil }, parent: seized.tree.parent)
            let unixSockets = (try? UnixDiag.sockets()) ?? [:]
            var deletedDone = Set<String>()
            for pid in seized.tree.pids where seized.threads[pid] != nil {
                var d = ProcessDumper(pid: pid)
                d.ignoreUnsupported = options.ignoreUnsupported
                d.unixSockets = unixSockets
                fdTables[pid] = try d.dumpFileDescriptors()
            }
            // A socket is restored only with its peer, its pending clients and its listener.
            try ProcessDumper.checkSockets(&fdTables, ignoreUnsupported: options.ignoreUnsupported)
            try ProcessDumper.completePipes(&fdTables, ignoreUnsupported: options.ignoreUnsupported)
            try ProcessDumper.completeFifos(&fdTables)
            ProcessDumper.markSharedDescriptions(&fdTables)
            try ProcessDumper.refuseSharedEpoll(&fdTables, ignoreUnsupported: options.ignoreUnsupported)
            phase.mark("checkpoint: file descriptors")
            for pid in seized.tree.pids {
                if let status = seized.zombies[pid] {
                    var img = ProcessImage(pid: pid)
                    img.ppid = seized.tree.parent[pid] ?? 0
                    img.zombieStatus = status
                    if let st = try? ProcStat.read(pid: pid) { img.pgid = st.pgid; img.sid = st.sid; img.comm = st.comm; img.exitSignal = st.exitSignal }
                    images.append(img)
                    continue
                }
                guard let tids = seized.threads[pid] else { continue }
                var dumper = ProcessDumper(pid: pid)
                dumper.ignoreUnsupported = options.ignoreUnsupported
                dumper.stoppedAt = seized.stoppedAt
                if let ppid = seized.tree.parent[pid], seized.threads[ppid] != nil { dumper.parent = ppid }
                var img = try dumpProcess(dumper: dumper, threads: tids, fds: fdTables[pid] ?? [], writer: writer, deletedDone: &deletedDone)
                img.pagesFile = "pages-\(pid).img"
                img.jobStopped = seized.jobStopped.contains(pid) ? true : nil
                sharing.apply(to: &img)
                images.append(img)
            }
            phase.mark("checkpoint: all processes")
            let frozenTime = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
            if let sig = options.killSignal {
                // The snapshot must be on disk before the application is killed; the signal is
                // queued while every task is still stopped, so none runs past the snapshot.
                let result = try commit(writer: writer, images: images, app: app, options: options, frozenTime: frozenTime)
                letGo(signal: sig)
                return result
            }
            letGo()
            return try commit(writer: writer, images: images, app: app, options: options, frozenTime: frozenTime)
        } catch {
            writer.abort()
            letGo()
            throw error
        }
    }

    private func dumpProcess(dumper: ProcessDumper, threads tids: [Int32], fds: [FileDescriptorImage], writer: SnapshotWriter,
                             deletedDone: inout Set<String>) throws -> ProcessImage {
        let pid = dumper.pid
        var img = ProcessImage(pid: pid)
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let saved = try main.registers()
        let stat = try ProcStat.read(pid: pid)
        let status = try ProcStatus.read(pid: pid)
        var clock = PhaseClock()
        let inj = try dumper.dumpInjected(saved: saved, status: status, threads: tids)
        clock.mark("dump: injected syscalls")
        for (i, tid) in tids.enumerated() {
            let t = Tracee.adoptTraceMe(ProcessID(tid))
            var thread = ThreadImage(tid: tid)
            thread.registers = (tid == pid ? saved : try t.registers()).named
            thread.xstate = Data(try t.extendedState())
            thread.blockedMask = try t.sigmask()
            thread.pending = try t.pendingSiginfo(shared: false).map { Data($0) }
            thread.altStack = inj.threads[i].altStack
            thread.clearChildTID = inj.threads[i].clearChildTID
            if let r = try t.rseqConfiguration() {
                thread.rseq = RSeq(pointer: r.pointer, length: r.length, signature: r.signature)
            }
            if let list = robustList(of: ProcessID(tid)) { thread.robustListHead = list.head; thread.robustListLength = list.length }
            thread.name = (try? ProcFS.read("/proc/\(pid)/task/\(tid)/comm"))?.trimmingCharacters(in: .newlines)
            thread.interruptedSleep = try dumper.interruptedSleep(tid: tid, registers: try Registers(named: thread.registers))
            img.threads.append(thread)
        }
        img.sharedPending = try main.pendingSiginfo(shared: true).map { Data($0) }
        img.sigactions = inj.sigactions
        img.parentDeathSignal = inj.parentDeathSignal
        img.dumpable = inj.dumpable
        img.childSubreaper = inj.childSubreaper ? true : nil
        img.intervalTimers = inj.intervalTimers.isEmpty ? nil : inj.intervalTimers
        img.posixTimers = inj.posixTimers.isEmpty ? nil : inj.posixTimers
        img.fds = fds
        img.ppid = stat.ppid; img.pgid = stat.pgid; img.sid = stat.sid
        img.exitSignal = stat.exitSignal
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
        for r in ResourceLimits.all {
            if let lim = ResourceLimits.get(ProcessID(pid), r) { img.rlimits.append(RLimit(resource: r, cur: lim.cur, max: lim.max)) }
        }
        var mm = MMFields()
        mm.startCode = stat.startCode; mm.endCode = stat.endCode; mm.startData = stat.startData; mm.endData = stat.endData
        mm.startBrk = stat.startBrk; mm.brk = inj.brk; mm.startStack = stat.startStack
        mm.argStart = stat.argStart; mm.argEnd = stat.argEnd; mm.envStart = stat.envStart; mm.envEnd = stat.envEnd
        mm.auxv = try ProcFS.readBytes("/proc/\(pid)/auxv").withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        img.mm = mm
        clock.mark("dump: /proc, fds, registers")
        let pages = try writer.createStream("pages-\(pid).img")
        img.vmas = try dumper.dumpMemory(to: pages)
        clock.mark("dump: memory")
        writer.addFinished(try pages.finish(name: "pages-\(pid).img"))
        let deleted = try dumper.dumpDeletedFiles(fds: fds, vmas: img.vmas, writer: writer, done: &deletedDone)
        img.deletedFiles = deleted.isEmpty ? nil : deleted
        clock.mark("dump: fsync pages")
        return img
    }

    private func commit(writer: SnapshotWriter, images: [ProcessImage], app: Int32, options: CheckpointOptions, frozenTime: Double) throws -> CheckpointResult {
        for image in images { try writer.addJSON("core-\(image.pid).json", image) }
        let (version, manifest) = try writer.commit(description: options.description, processes: images.map(\.pid), arch: Arch.name)
        let bytes = images.reduce(UInt64(0)) { acc, image in
            acc + image.vmas.reduce(0) { $0 + $1.pages.reduce(0) { $0 + $1.count * SnapshotFormat.pageSize } }
        }
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

    public func unfreeze(app: Int32, signal: Signal?) throws {
        try requireRoot("ssi checkpoint --unfreeze")
        let f = try CgroupFreezer.require()
        guard ProcFS.exists("/proc/\(app)") else { throw SSIError(.notFound, "no process with PID \(app)") }
        if !f.isFrozen(app) { throw SSIError(.state, "application \(app) is not frozen", hint: "freeze it with ssi checkpoint -f \(app)") }
        // Queued now, delivered as soon as it thaws.
        try signal?.send(to: ProcessID(app))
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
        guard let root = snap.processes.first else { throw SSIError(.corrupt, "\(snap.directory) holds no process") }
        for image in snap.processes { try ProcessRestorer.preflight(image, useCallerTerminal: options.useCallerTerminal) }
        let freezer = CgroupFreezer.find()
        if options.leaveFrozen && freezer == nil {
            throw SSIError(.unsupported, "-U needs the cgroup v2 freezer, which is not available here; nothing was restarted")
        }
        var cgroupFD: Int32 = -1
        if let freezer { cgroupFD = (try? freezer.openGroup(app)) ?? -1 }
        defer { if cgroupFD >= 0 { close(cgroupFD) } }
        // Processes orphaned by a failed restart are reparented to us and reaped below
        // (prctl(2) PR_SET_CHILD_SUBREAPER), so no PID stays taken by a zombie.
        Prctl.becomeSubreaper()

        var r = Tracee.spawnRestoreShell(ProcessID(root.pid), cgroup: cgroupFD >= 0 ? cgroupFD : nil)
        // Another `ssi run` may have removed the group while it was empty (CgroupFreezer.sweep),
        // after we opened it: CLONE_INTO_CGROUP then fails with ENOENT. Make it again.
        for _ in 0..<3 where r.errno == ENOENT && cgroupFD >= 0 {
            close(cgroupFD)
            cgroupFD = (try? freezer?.openGroup(app)) ?? -1
            r = Tracee.spawnRestoreShell(ProcessID(root.pid), cgroup: cgroupFD >= 0 ? cgroupFD : nil)
        }
        if r.errno == EEXIST { throw SSIError(.busy, "PID \(root.pid) is busy (taken while restarting); nothing was changed") }
        if case .failure(let e) = r { throw SSIError(e.kind, e.message, hint: e.errno == EPERM ? "run as root (CAP_CHECKPOINT_RESTORE)" : nil, errno: e.errno) }
        var created: [Int32] = [root.pid]
        var restorers: [ProcessRestorer] = []
        let pipes = PipeRegistry()
        defer { pipes.closeAll() }
        let fsObjects = FSObjects()
        defer { fsObjects.closeAll() }
        do {
            try pipes.create(from: snap.processes)
            try pipes.createDeletedFiles(from: snap.processes, snapshotDir: snap.directory)
            try fsObjects.create(from: snap.processes)
            let stub = Tracee.adoptTraceMe(ProcessID(root.pid))
            guard try stub.wait() == .signal(.stop) else { throw SSIError(.system, "restored process \(root.pid) did not stop as expected") }
            // Create the tree top-down: each process forks its children itself, after taking
            // its session, so that parent links and sessions are the original ones.
            let byPID = Dictionary(snap.processes.map { ($0.pid, $0) }, uniquingKeysWith: { a, _ in a })
            var children = [Int32: [ProcessImage]]()
            for p in snap.processes where p.pid != root.pid { children[p.ppid, default: []].append(p) }
            // Open file descriptions shared by several fds are opened once, in the root before
            // it forks, so that every process inherits the same description.
            let shared = SharedDescriptions(images: snap.processes)
            var queue: [(ProcessImage, Tracee)] = [(root, stub)]
            while !queue.isEmpty {
                let (image, t) = queue.removeFirst()
                let pr = try ProcessRestorer(image: image, snapshotDir: snap.directory, stub: t)
                pr.pipes = pipes
                pr.shared = shared
                pr.fsObjects = fsObjects
                if image.pid == root.pid { try pr.openShared(useCallerTerminal: options.useCallerTerminal) }
                pr.useCallerTerminal = options.useCallerTerminal
                restorers.append(pr)
                try pr.becomeSessionLeaderIfNeeded()
                // Memory and files first, then the children: they are forked from the restored
                // process, so the pages it shared copy-on-write with them are shared again.
                try pr.rebuild()
                for child in (children[image.pid] ?? []).sorted(by: { $0.pid < $1.pid }) {
                    let ct = try pr.fork(child: child)
                    created.append(child.pid)
                    if let status = child.zombieStatus {
                        try pr.makeZombie(ct, status: status)
                    } else {
                        queue.append((child, ct))
                    }
                }
                try pr.createThreads()
            }
            for pid in byPID.keys where !created.contains(pid) {
                throw SSIError(.corrupt, "\(snap.directory): PID \(pid) has no parent in the snapshot")
            }
            clock.mark("create process tree")
            let known = Set(created)
            for pr in restorers { try pr.joinGroup(leaders: true, known: known) }
            for pr in restorers { try pr.joinGroup(leaders: false, known: known) }
            for pr in restorers { try pr.finish() }
            // Every process has its fds: let go of the FIFOs before any process runs, or a
            // process that was blocked opening one would find ssi as its partner.
            fsObjects.closeAll()
            clock.mark("rebuild processes")
        } catch {
            for pid in created.reversed() { kill(pid, SIGKILL) }
            let deadline = DispatchTime.now().uptimeNanoseconds + 2_000_000_000
            while DispatchTime.now().uptimeNanoseconds < deadline {
                let w = reapAnyChild()
                if w < 0 { break }
                if w == 0 { usleep(1000) }
            }
            throw error
        }
        if options.leaveFrozen, let freezer {
            try ProcFS.write("\(freezer.path(app))/cgroup.freeze", "1")
            for pr in restorers.reversed() { pr.detach() }
            try freezer.freeze(app)
        } else {
            for pr in restorers.reversed() { pr.detach() }
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
        return RestartResult(app: app, version: snap.manifest.version, pid: root.pid, restoreSeconds: secs)
    }
}
