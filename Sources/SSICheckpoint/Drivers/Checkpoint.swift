import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The checkpoint driver: stop every task of the application, describe every fd (an
// unsupported one fails before anything is written), dump each process through the
// resources, let the application go (or kill it once the snapshot is whole), commit.

extension CheckpointEngine {
    /// Checkpoints application `app` into the version store (a new version).
    public func checkpoint(app: Int32, options: CheckpointOptions = CheckpointOptions()) throws -> CheckpointResult {
        let frozen = try checkCheckpointable(app, options: options)
        let key = IncrementalBase.Key(store: store.root, app: options.applicationID ?? app, root: app)
        // The previous version's tracking, when this process made it (IncrementalBase.swift):
        // its first round then reads only what was written since, which pays off even
        // before a --kill. A -c or --no-precopy dump leaves it for the next checkpoint.
        let base = frozen || options.precopy == false || !store.pool ? nil : IncrementalBase.take(key)
        func begin() throws -> SnapshotWriter {
            let w = try store.beginWrite(app: options.applicationID ?? app)
            w.firstVersion = options.firstVersion ?? 1
            return w
        }
        let writer = try begin()
        var precopy: Precopy? = nil
        if base != nil || Precopy.wanted(app: app, options: options, frozen: frozen) {
            do { precopy = try Precopy(app: app, writer: writer, base: base) } catch {
                // Explicitly asked for: say why it cannot be done. Chosen by size: dump frozen.
                if options.precopy == true { writer.abort(); throw error }
                writer.abort()
                return try dump(app: app, options: options, writer: try begin(), frozen: frozen)
            }
        }
        // The tracking is kept for the next version when the application goes on, into a
        // page pool; otherwise lifted once it runs again (unregistering walks every page table).
        let keep = options.killSignal == nil && store.pool && IncrementalBase.enabled
        var kept = false
        defer { if !kept { precopy?.stop() } }
        var result = try dump(app: app, options: options, writer: writer, frozen: frozen, precopy: precopy) { images, version in
            guard keep, let precopy,
                  let next = IncrementalBase.make(precopy: precopy, images: images, writer: writer, version: version, root: app) else { return }
            IncrementalBase.put(key, next)
            kept = true
        }
        result.precopyRounds = precopy?.rounds ?? []
        result.referencedBytes = precopy?.referencedBytes ?? 0
        return result
    }

    /// Checkpoints application `app` into `writer` (an archive to a peer, for migration),
    /// copying its memory first while it runs when pre-copy is wanted (Precopy.wanted).
    public func checkpoint(app: Int32, options: CheckpointOptions = CheckpointOptions(), to writer: any ImageWriter) throws -> CheckpointResult {
        let frozen = try checkCheckpointable(app, options: options)
        // A tracking kept for incremental versions would keep this one from registering the
        // application's areas (a range is registered with one userfaultfd at a time), and
        // the application leaves this node.
        IncrementalBase.drop(root: app)
        var precopy: Precopy? = nil
        if Precopy.wanted(app: app, options: options, frozen: frozen) {
            // A tracker that cannot start leaves nothing behind: dump frozen, as before
            // (the pages files it made are written again from the start by the dump).
            precopy = try? Precopy(app: app, writer: writer)
        }
        // A migration (SIGSTOP) takes the tracking along, to stop it once the target runs.
        let handOver = options.killSignal == .stop
        var result: CheckpointResult
        do { result = try dump(app: app, options: options, writer: writer, frozen: frozen, precopy: precopy) } catch {
            precopy?.stop()
            throw error
        }
        result.precopyRounds = precopy?.rounds ?? []
        if let precopy { if handOver { result.tracking = WriteTracking(precopy) } else { precopy.stop() } }
        return result
    }

    /// Root, a valid target, and a freezer state that matches -c. Returns whether the
    /// application is frozen now.
    private func checkCheckpointable(_ app: Int32, options: CheckpointOptions) throws -> Bool {
        try requireRoot("ssi checkpoint")
        try CheckpointEngine.validateTarget(app)
        // A restored process whose pages are still being filled (LazyMemory) is dumped
        // once they are all in.
        LazyMemory.waitForAll()
        let frozen = CgroupFreezer.find()?.isFrozen(options.applicationID ?? app) ?? false
        if options.alreadyFrozen && !frozen {
            throw SSIError(.state, "application \(app) is not frozen", hint: "freeze it first with `ssi checkpoint -f \(app)`, or drop -c")
        }
        if options.alreadyFrozen && options.precopy == true {
            throw SSIError(.invalidArgument, "--precopy copies memory while application \(app) runs, and -c dumps it frozen as it is: the two do not go together",
                           hint: "drop --precopy, or unfreeze it (ssi checkpoint -u \(app)) and checkpoint with --precopy")
        }
        if !options.alreadyFrozen && frozen {
            let id = options.applicationID ?? app
            throw SSIError(.state, "application \(id) is frozen", hint: "use `ssi checkpoint -c \(id)` to dump it as it is, or `ssi checkpoint -u \(id)` to unfreeze it")
        }
        return frozen
    }

    /// `committed`: called once the snapshot is committed and the application runs again
    /// (not with --kill), with the processes' images and the version.
    private func dump(app root: Int32, options: CheckpointOptions, writer: any ImageWriter, frozen: Bool, precopy: Precopy? = nil,
                      committed: (([ProcessImage], Int) -> Void)? = nil) throws -> CheckpointResult {
        let freezer = CgroupFreezer.find()
        let seized = SeizedApplication(root: root)
        // The cgroup and the snapshot's id: the root's PID, or a cluster application's id.
        let app = options.applicationID ?? root
        var refreeze = false
        var pin: DumpPin? = nil
        func letGo(signal: Signal? = nil) {
            pin?.undo()
            if !seized.released { seized.requeueHeldSignals(killing: signal) }
            // A -c checkpoint leaves the application frozen: freeze the group again before
            // the tasks leave their ptrace stops.
            if refreeze, let freezer { try? ProcFS.write("\(freezer.path(app))/cgroup.freeze", "1") }
            seized.release(signal: signal)
        }
        // An application started by `ssi run` has its own cgroup: freezing it first stops
        // every task at once, forks included, before ptrace takes them one by one. Others are
        // taken by ptrace alone, rescanning until no new task appears.
        var freezeFirst = false
        var pre = PhaseClock()
        if !frozen { try options.beforeFreeze?() }
        pre.profile("checkpoint: before the freeze")
        // The timers of the waits the stop is about to end (0.3 ms, before the freeze).
        let witness = frozen ? nil : TimerWitness(root: root)
        pre.profile("checkpoint: timer witness")
        if !frozen, let freezer, (try? ProcFS.read("/proc/\(root)/cgroup"))?.contains("/ssi/app-\(app)\n") == true {
            var waited = PhaseClock()
            try freezer.freeze(app)
            seized.frozenAt = Clock.monotonicNanoseconds()
            freezeFirst = true
            if PhaseClock.enabled { waited.mark("checkpoint: cgroup frozen") }
        }
        do {
            var phase = PhaseClock()
            phase.mark("checkpoint: freeze")
            try seized.seize(thaw: frozen || freezeFirst ? { try freezer?.thaw(app); refreeze = frozen } : nil)
            phase.mark("checkpoint: seize")
            pin = DumpPin(seized)
            let t0 = DispatchTime.now()
            phase.mark("checkpoint: stop every task")
            try options.whenFrozen?()
            try ProcessDumper.refuseOwnNamespaces(root: root, pids: seized.tree.pids.filter { seized.threads[$0] != nil })
            let sharing = try ProcessSharing.detect(root: root, pids: seized.tree.pids.filter { seized.threads[$0] != nil }, parent: seized.tree.parent)
            try ProcessSharing.refuseThreadContexts(seized.threads, exitedLeaders: seized.exitedLeaders)
            phase.profile("checkpoint: sharing (kcmp)")
            let fdTables = try describeFiles(seized, options: options)
            phase.mark("checkpoint: file descriptors")
            var images = try dumpProcesses(seized, fdTables: fdTables, sharing: sharing, options: options, writer: writer, precopy: precopy, witness: witness)
            // Signals a thread dequeued during the injected calls are still its pending ones.
            for i in images.indices {
                for k in images[i].threads.indices {
                    images[i].threads[k].pending += HeldSignals.of(images[i].threads[k].tid).map { Data($0) }
                }
            }
            // Processes in PID namespaces the application made keep their ids there too.
            try PIDNamespace.recordNested(&images, root: root)
            AppNamespaces.resolveProcMounts(&images)
            // A cluster application's ids are those inside its own PID namespace.
            if PIDNamespace.isOwnInit(root) { try PIDNamespace.translate(&images) } else { SocketOwners.keepApplicationCreators(&images) }
            phase.mark("checkpoint: all processes")
            let frozenTime = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
            // The last place to stop: once committed, the snapshot is whole and kept.
            try CheckpointEngine.stopIfInterrupted()
            if let sig = options.killSignal {
                // The snapshot must be on disk before the application is killed; the signal is
                // queued while every task is still stopped, so none runs past the snapshot.
                if sig == .stop, let before = options.beforeCommit {
                    // Queued before the commit when nothing is left to do after it: a commit
                    // that carries the target's restore may be acted on at once there.
                    let early = !(options.handOverLocks && !HandedOverLocks.toHandOver(seized, fdTables: fdTables).isEmpty)
                    try before(early)
                    if early { seized.queueStop() }
                }
                var result = try commit(writer: writer, images: images, app: app, options: options, frozenTime: frozenTime)
                phase.mark("checkpoint: commit")
                if options.handOverLocks && sig == .stop {
                    // A failure here leaves the locks held and the application going on
                    // (the catch below lets it go without the signal); the committed image
                    // is then a version the caller drops or keeps.
                    result.locks = try HandedOverLocks.letGo(seized, fdTables: fdTables)
                    if result.locks != nil { phase.mark("checkpoint: locks let go") }
                }
                ProcessDumper.silenceExternalTCP(fdTables)
                // A migration's stopped copy goes on if the migration fails: only a kill here.
                if sig != .stop { ProcessDumper.forgetRobustLists(seized) }
                letGo(signal: sig)
                return result
            }
            letGo()
            phase.mark("checkpoint: let go")
            let result = try commit(writer: writer, images: images, app: app, options: options, frozenTime: frozenTime)
            committed?(images, result.version)
            return result
        } catch {
            writer.abort()
            letGo()
            // Frozen by us (freezeFirst) and never thawed: the seize failed before it let the
            // tasks into their ptrace stops (a task already traced, by strace or a debugger).
            // The application goes on as it was: running.
            if freezeFirst && !frozen, let freezer, freezer.isFrozen(app) { try? freezer.thaw(app) }
            throw error
        }
    }

    /// The fds of every process, checked across the application: a socket needs its peer,
    /// its pending clients and its listener inside; a pipe both its ends.
    private func describeFiles(_ seized: SeizedApplication, options: CheckpointOptions) throws -> [Int32: [FileDescriptorImage]] {
        var fdTables = [Int32: [FileDescriptorImage]]()
        var clock = PhaseClock()
        let live = seized.tree.pids.filter { seized.threads[$0] != nil }
        // sock_diag lists every unix socket of a namespace (hundreds on a busy machine), while
        // the application is stopped: asked only when it holds a socket at all.
        let hasSockets = live.contains { pid in
            let dir = "/proc/\(seized.exitedLeaders[pid] ?? pid)/fd"
            return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]).contains {
                (try? ProcFS.readLink("\(dir)/\($0)"))?.hasPrefix("socket:") ?? true
            }
        }
        // sock_diag lists the sockets of the namespace of the socket it is asked on: those of
        // network namespaces the application made are asked from inside each.
        var unixSockets = hasSockets ? (try? UnixDiag.sockets()) ?? [:] : [:]
        var rootNetStat = stat()
        let rootNet = stat(ProcessDumper.referenceNetwork(root: seized.root), &rootNetStat) == 0 ? UInt64(rootNetStat.st_ino) : 0
        var asked: Set<String> = [(try? ProcFS.readLink("/proc/self/ns/net")) ?? ""]
        for pid in live where hasSockets {
            guard let ns = try? ProcFS.readLink("/proc/\(pid)/ns/net"), asked.insert(ns).inserted else { continue }
            let fd = open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if let more = AppNamespaces.inside(fd, type: AppNamespaces.newNet, { try? UnixDiag.sockets() }) ?? nil {
                unixSockets.merge(more) { a, _ in a }
            }
        }
        clock.profile("files: unix sockets listed")
        for pid in seized.tree.pids where seized.threads[pid] != nil {
            // A process whose leader exited is read through a live thread (ExitedLeader).
            var d = ProcessDumper(pid: seized.exitedLeaders[pid] ?? pid)
            d.ignoreUnsupported = options.ignoreUnsupported
            d.unixSockets = unixSockets
            d.rootNetworkNamespace = rootNet
            fdTables[pid] = try d.dumpFileDescriptors()
        }
        clock.profile("files: each process's fds")
        try ProcessDumper.checkSockets(&fdTables, ignoreUnsupported: options.ignoreUnsupported, tcpEstablished: options.tcpEstablished)
        try ProcessDumper.rereadReceiveQueues(&fdTables, exitedLeaders: seized.exitedLeaders)
        clock.profile("files: sockets checked, queues read again")
        try ProcessDumper.completePipes(&fdTables, ignoreUnsupported: options.ignoreUnsupported)
        _ = ProcessDumper.completePTYs(&fdTables)
        try ProcessDumper.completeFifos(&fdTables)
        try ProcessDumper.completeInotify(&fdTables, ignoreUnsupported: options.ignoreUnsupported)
        // A pidfd of a thread (PIDFD_THREAD, Linux 6.9) names a thread id.
        let tasks = Set(seized.tree.pids).union(seized.threads.values.joined())
        try ProcessDumper.completePidfds(&fdTables, pids: tasks, ignoreUnsupported: options.ignoreUnsupported)
        ProcessDumper.markSharedDescriptions(&fdTables)
        try ProcessDumper.checkSharedEpolls(&fdTables, ignoreUnsupported: options.ignoreUnsupported)
        return fdTables
    }

    /// Every process's image, root first, zombies included; pages go to `writer`.
    private func dumpProcesses(_ seized: SeizedApplication, fdTables: [Int32: [FileDescriptorImage]], sharing: ProcessSharing,
                               options: CheckpointOptions, writer: any ImageWriter, precopy: Precopy?, witness: TimerWitness?) throws -> [ProcessImage] {
        var images = [ProcessImage]()
        var precopyUsed = Set<Int32>()
        var deletedDone = Set<String>()
        let namespaces = NamespaceSaver(root: seized.root, writer: writer)
        let ptyMasters = Set(fdTables.values.flatMap { $0 }.compactMap { $0.kind == .ptyMaster ? $0.pty?.index : nil })
        let areas = DumpedAreas()
        // ssi-init as process 1, its command running: saved as that state (FreshInit.swift).
        let root = seized.root
        let fresh = seized.threads[root]?.count == 1 && !seized.jobStopped.contains(root) && seized.exitedLeaders[root] == nil
            ? FreshInit.detect(root: root, stopped: true) : nil
        // Before the IPC namespaces' values are saved: measuring an adjustment changes them
        // for a moment (SemaphoreUndo.swift).
        // ssi-init, one thread that never makes a semop, has no undo list: a process whose
        // list equals its (ssi-init itself included) has none either.
        let undo = try SemaphoreUndo.measure(seized, withoutList: fresh != nil ? root : nil)
        var removedSegments = Set<Int32>()
        for pid in seized.tree.pids {
            try CheckpointEngine.stopIfInterrupted()
            if let status = seized.zombies[pid] {
                images.append(ProcessDumper.zombieImage(pid, status: status, parent: seized.tree.parent[pid]))
                // Exited after pre-copy's rounds: its pages file ends empty of use (a
                // migration's target waits for every file's end before its commit).
                if let p = precopy?.processes[pid], !p.exited { p.exited = true; try p.pages.finish(sync: false) }
                continue
            }
            guard let tids = seized.threads[pid] else { continue }
            let handle = seized.exitedLeaders[pid] ?? pid
            var dumper = ProcessDumper(pid: handle)
            dumper.ignoreUnsupported = options.ignoreUnsupported
            dumper.stoppedAt = seized.stoppedAt
            dumper.timerWitness = witness
            dumper.syscallDispatch = seized.syscallDispatch
            dumper.precopied = precopy?.processes[pid].flatMap { $0.exited ? nil : $0 }
            if dumper.precopied != nil { precopyUsed.insert(pid) }
            dumper.areas = areas
            // Pages shared copy-on-write with the parent are left to the parent's copy, which a
            // fresh init does not have (its command exec'd anyway, sharing nothing with it).
            if let ppid = seized.tree.parent[pid], seized.threads[ppid] != nil, !(fresh != nil && ppid == root) { dumper.parent = ppid }
            var img = try pid == root && fresh != nil
                ? dumper.dumpFreshInit(fresh!, threads: tids, fds: fdTables[pid] ?? [], writer: writer, deletedDone: &deletedDone)
                : dumper.dumpProcess(threads: tids, fds: fdTables[pid] ?? [], writer: writer, deletedDone: &deletedDone)
            if handle != pid {
                img.pid = pid
                img.leaderExited = true
                // A thread's exit_signal is -1 (/proc/TID/stat): the process's is its leader's.
                img.exitSignal = (try? ProcStat.read(pid: pid))?.exitSignal ?? SIGCHLD
            }
            img.pagesFile = "pages-\(handle).img"   // named by the dumper's pid (a live thread's id for an exited leader)
            img.jobStopped = seized.jobStopped.contains(pid) ? true : nil
            if img.jobStopped == true { img.stopSignal = seized.stopSignals[pid] ?? 0 }
            sharing.apply(to: &img)
            img.semaphoreUndo = undo[pid]
            img.namespaces = try namespaces.namespaces(of: handle)
            try RemovedSegments.save(&img, writer: writer, done: &removedSegments)
            if let c = ProcessDumper.controllingPTY(handle, masters: ptyMasters) {
                img.controllingPTY = c.index
                if img.sid == pid { img.foregroundGroup = c.foreground }
            }
            images.append(img)
        }
        // A process reaped (or gone from the tree) after the rounds: its pages file ends
        // unused (a migration's target waits for every file's end).
        for (pid, p) in precopy?.processes ?? [:] where !p.exited && !precopyUsed.contains(pid) {
            p.exited = true
            try p.pages.finish(sync: false)
        }
        return images
    }

    private func commit(writer: any ImageWriter, images: [ProcessImage], app: Int32, options: CheckpointOptions, frozenTime: Double) throws -> CheckpointResult {
        // Profiled only (not phases a user follows): a migration's commit is in its freeze.
        var clock = PhaseClock()
        for image in images {
            try writer.addCore(image)
            if PhaseClock.enabled { clock.mark("commit: core \(image.pid) (\(image.vmas.count) vmas)") }
        }
        let (version, manifest) = try writer.commit(description: options.description, processes: images.map(\.pid), arch: Arch.name)
        if PhaseClock.enabled { clock.mark("commit: writer commit") }
        let bytes = images.reduce(UInt64(0)) { acc, image in
            acc + image.vmas.reduce(0) { $0 + $1.pages.reduce(0) { $0 + $1.count * SnapshotFormat.pageSize } }
        }
        let directory = writer is SnapshotWriter ? store.directory(app, version: version) : writer.location
        return CheckpointResult(app: app, version: version, description: options.description, date: manifest.date,
                                directory: directory, frozenSeconds: frozenTime, pageBytes: bytes)
    }
}
