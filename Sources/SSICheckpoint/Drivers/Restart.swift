import Foundation
import SSIImage
import SSIIPC
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The restart driver: verify the snapshot and what can be checked from outside, create the
// root with its old PID, then the tree top-down (each process forks its children itself),
// rebuild every process through the resources, join the groups, finish, let go. On any
// failure everything created is killed and reaped: the PIDs are free, the snapshot untouched.

extension CheckpointEngine {
    public struct RestartOptions: Sendable {
        /// Leave the restarted application frozen (`-U`); `ssi checkpoint -u` thaws it.
        public var leaveFrozen: Bool
        /// Give fds that were terminals the caller's terminal (`-t`).
        public var useCallerTerminal: Bool

        /// fds that were connected to processes outside the application (pipes): the
        /// application's fd N becomes the caller's fd N. 0, 1 and 2 always are (the caller's
        /// stdin, stdout, stderr); others only when listed (`--inherit-fd N`, CRIU's option
        /// of that name, without its key syntax).
        public var inheritFDs: Set<Int32>
        /// TCP connections to peers outside the application are rebuilt (`--tcp-established`,
        /// as given to the checkpoint).
        public var tcpEstablished = false
        /// The target of a migration: a frozen copy of the application still holds its
        /// names (unix socket paths, FIFO bytes) on this machine or a shared file system, and
        /// the restart takes them over (NameTakeover.swift).
        public var takeOver = false
        /// The network namespace the root goes into, where its own was not saved (an fd of
        /// the caller, kept open by it): a cluster application's own namespace with its
        /// address, made again on this node before the restart (SSINetwork/AppNetwork.swift).
        /// Its sockets are built inside it. nil: the caller's namespace.
        public var rootNetwork: Int32? = nil
        /// Asked for each saved TCP connection to a peer outside the application: one the
        /// peer has moved past is reset on both sides instead of rebuilt (TCPPeers.swift).
        /// nil: every one is rebuilt as saved (a migration: the peer cannot have moved).
        public var tcpPeerCheck: TCPPeerCheck? = nil
        /// The last acknowledgement each peer of a saved TCP connection sent after the
        /// snapshot, by flow ("peer-address:peer-port>local-port"): the restored send queue
        /// starts there (what the peer has is not sent again), so that the restored copy,
        /// which counts its whole queue as not yet sent, does not take the peer's
        /// acknowledgements for ones of data it never sent and drop them (a migration's
        /// source holds the peers' packets during the freeze, and gives these).
        public var tcpPeerAcks: [String: UInt32] = [:]
        /// Rebuild each TCP send queue with the part that had been sent counted as sent
        /// (tcp(7) repair mode): a peer's acknowledgement of it, however late, is then taken.
        /// The default counts the whole queue as unsent and sends it at once, since a part
        /// sent but lost would otherwise wait for a retransmission timeout (a second on a
        /// socket that has measured no round trip); that is right when what the copy sent
        /// last may have been lost on its node, wrong when the peer may acknowledge it after
        /// the snapshot (it takes that for an acknowledgement of unsent data, and stalls).
        public var tcpKeepSent = false
        /// Called once every process and socket is rebuilt, before any process runs again
        /// (a cluster application's address is routed to its namespace then), with the
        /// root's PID as this node sees it; a throw fails the restart like any other step.
        public var beforeResume: (@Sendable (_ root: Int32) throws -> Void)? = nil
        /// The version's bytes were checked as they arrived (a migration's stream: the source
        /// and this node each computed every file's CRC-32C and they matched, RemoteImage.swift),
        /// so the restart checks sizes and the manifest only and does not read every page
        /// again: for 1 GiB that read was a third of a second of the frozen time.
        public var checkedOnArrival = false
        /// The pages of processes with no children are copied into place after the
        /// application runs again, on a thread of the caller, which must live on until then
        /// (LazyMemory.swift): the target of a migration, a daemon. Off for the CLI.
        public var lazyMemory = false

        public init(leaveFrozen: Bool = false, useCallerTerminal: Bool = false, inheritFDs: Set<Int32> = []) {
            self.leaveFrozen = leaveFrozen
            self.useCallerTerminal = useCallerTerminal
            self.inheritFDs = inheritFDs
        }
    }

    public struct RestartResult: Sendable {
        public var app: Int32
        public var version: Int
        /// The root process, our child.
        public var pid: Int32
        public var restoreSeconds: Double
    }

    /// Rebuilds application `app` from snapshot `version` (latest if nil) of the version
    /// store. The snapshot is verified whole before any process runs (its files before
    /// anything is created, the pages of its pool while the processes are rebuilt); on any failure the
    /// half-built process is killed and reaped, so the PID is free again and the snapshot
    /// untouched. The restarted process is a child of the caller, which may wait for it.
    public func restart(app: Int32, version: Int?, options: RestartOptions = RestartOptions()) throws -> RestartResult {
        try requireRoot("ssi restart")
        let t0 = DispatchTime.now()
        var clock = PhaseClock()
        // The pool's pages are checked while the processes are rebuilt (none runs before
        // the check passes): the restore no longer waits for a pass over every page first.
        let snap = try store.open(app: app, version: version, verify: !options.checkedOnArrival, deferPageCheck: true)
        clock.mark("verify snapshot")
        return try RestartSession(snapshot: snap, app: app, options: options, pageCheck: snap.pageCheck).run(startedAt: t0)
    }

    /// Rebuilds the application of a snapshot read through any reader (the version store,
    /// an archive received from a peer), verified already.
    public func restart(from snapshot: any ImageReader, options: RestartOptions = RestartOptions()) throws -> RestartResult {
        try requireRoot("ssi restart")
        return try RestartSession(snapshot: snapshot, app: snapshot.manifest.appID, options: options).run(startedAt: DispatchTime.now())
    }
}

/// One restart: the processes created so far (killed if it fails), their restorers, and
/// what ssi holds for them meanwhile (pipes, unnamed files, inotify instances and FIFOs).
final class RestartSession {
    let snap: any ImageReader
    let app: Int32
    let options: CheckpointEngine.RestartOptions
    /// The processes created so far, by their PID here (killed if the restart fails).
    private var created: [Int32] = []
    /// The same, by their PID in the snapshot.
    private var createdIDs: Set<Int32> = []
    /// The root is the init of a PID namespace of its own (PIDNamespace.swift).
    private var ownNamespace = false
    private var restorers: [ProcessRestorer] = []
    /// The CPU mask this thread had before it pinned itself for the restore (run): a
    /// restored task whose own cannot be set gets it.
    private var unpinnedCPUs: [UInt64]?
    private let pipes = PipeRegistry()
    private let deletedFiles = DeletedFileRegistry()
    private let removedSegments = RemovedSegmentRegistry()
    /// Segments of IPC namespaces made again that had been removed while attached, by the
    /// namespace's fd: removed again once every process has attached them.
    private var removedInNamespaces: [Int32: [Int32]] = [:]
    private let fsObjects = FSObjects()
    private let ptys = PTYRegistry()
    private let pendingMounts = PendingMounts()
    private let takeover: NameTakeover
    /// Network namespaces the application made, made again before the tree (saved id -> fd).
    private var netNamespaces: [UInt64: Int32] = [:]
    /// IPC namespaces the application made, made again with their objects (saved id -> fd).
    private var ipcNamespaces: [UInt64: Int32] = [:]
    private var clock = PhaseClock()
    /// The pages filled after the resume (options.lazyMemory), nil otherwise.
    private let lazy: LazyMemory?
    /// The check of the snapshot's pages, run meanwhile (Snapshot.pageCheck).
    private let pageCheck: DeferredPageCheck?

    init(snapshot: any ImageReader, app: Int32, options: CheckpointEngine.RestartOptions, pageCheck: DeferredPageCheck? = nil) {
        snap = snapshot
        self.app = app
        self.options = options
        self.pageCheck = pageCheck
        takeover = NameTakeover(enabled: options.takeOver)
        lazy = options.lazyMemory ? LazyMemory() : nil
    }

    deinit {
        pipes.closeAll()
        // A restart that failed leaves no segment behind: it goes with the processes killed.
        removedSegments.removeAll()
        deletedFiles.closeAll()
        fsObjects.closeAll()
        ptys.closeAll()
        for fd in netNamespaces.values { close(fd) }
        for fd in ipcNamespaces.values { close(fd) }
    }

    func run(startedAt t0: DispatchTime) throws -> CheckpointEngine.RestartResult {
        guard let root = snap.processes.first else { throw SSIError(.corrupt, "\(snap.location) holds no process") }
        ownNamespace = root.pidNamespaceInit == true
        // Only the root of an application's own PID namespace is ever saved as a fresh init.
        for p in snap.processes where p.freshInit != nil && (p.pid != root.pid || !ownNamespace) {
            throw SSIError(.corrupt, "\(snap.location): PID \(p.pid) is saved as ssi-init's state alone but is not process 1 of the application's namespace; nothing was restarted",
                           hint: "restart another version")
        }
        for image in snap.processes { try ProcessRestorer.preflight(image, useCallerTerminal: options.useCallerTerminal, newNamespace: ownNamespace, app: snap.processes.first?.pid) }
        try checkExternalFDs()
        let freezer = CgroupFreezer.find()
        if options.leaveFrozen && freezer == nil {
            throw SSIError(.unsupported, "-U needs the cgroup v2 freezer, which is not available here; nothing was restarted")
        }
        // Processes orphaned by a failed restart are reparented to us and reaped below
        // (prctl(2) PR_SET_CHILD_SUBREAPER), so no PID stays taken by a zombie.
        Prctl.becomeSubreaper()
        // Opened before the shell is cloned, so that the shell has it (FDTransfer.selfPidFD).
        _ = FDTransfer.selfPidFD
        // The snapshot's pages are checked on other threads while the tree is built; the
        // result is awaited before any process may run (below), and a failed restart waits
        // for it too, so that a corrupt page is what it reports rather than what a restore
        // step made of it.
        let check = pageCheck.map(BackgroundCheck.init)
        // This thread and every task it creates (forks and clones inherit the mask) on one
        // CPU (CPUPin) until each task's own affinity is set (finish: restoreScheduling).
        let pin = CPUPin(words: Scheduling.maskWords)
        unpinnedCPUs = pin?.before
        defer { pin?.undo() }
        let stub: Tracee
        do { stub = try spawnRoot(root, freezer: freezer) } catch { throw check?.finish() ?? error }
        clock.mark("restart: spawn root shell")
        created = [stub.pid.rawValue]
        createdIDs = [root.pid]
        do {
            try pipes.create(from: snap.processes, inherited: inherited)
            try deletedFiles.create(from: snap.processes, source: snap, mountNamespaceOf: ownNamespace ? stub.pid.rawValue : nil)
            try fsObjects.create(from: snap.processes, deletedFiles: deletedFiles, takeover: takeover)
            // Before the tree: the root builds every socket before it forks, and sockets of
            // these namespaces are built inside them (SocketRebuilder).
            for image in snap.processes {
                if let ns = image.namespaces?.net, netNamespaces[ns.id] == nil { netNamespaces[ns.id] = try AppNamespaces.makeNetwork(ns) }
                if let ns = image.namespaces?.ipc, ipcNamespaces[ns.id] == nil {
                    let made = try AppNamespaces.makeIPC(ns, from: snap)
                    ipcNamespaces[ns.id] = made.fd
                    if !made.removedSegments.isEmpty { removedInNamespaces[made.fd] = made.removedSegments }
                }
            }
            try MessageQueues.create(from: snap.processes, ipcNamespaces: ipcNamespaces)
            try removedSegments.create(from: snap.processes, source: snap)
            try ptys.create(from: snap.processes, anyIndex: options.takeOver)
            // SIGTRAP: it exec'd the restore stub; SIGSTOP: it is a copy of us (Tracee.restoreStub).
            let stop = try stub.wait()
            guard stop == .signal(.trap) || stop == .signal(.stop) else {
                // The shell shares our memory until its exec (cssi_spawn_restore_shell) and
                // cannot fall back to stopping as a copy of us: a stub it cannot run ends it.
                if stop == .exited(127), !Tracee.restoreStub.isEmpty {
                    throw SSIError(.system, "the restore stub \(Tracee.restoreStub) could not be run as process \(root.pid) (its shell exited with 127); nothing was restarted",
                                   hint: "SSI_RESTORE_STUB must name an executable (the default is ssi-init next to ssi): fix or unset it")
                }
                throw SSIError(.system, "restored process \(root.pid) did not stop as expected (\(stop))")
            }
            clock.mark("restart: pipes, files")
            try createTree(root: root, stub: stub)
            clock.mark("create process tree")
            let known = createdIDs
            let nested = Dictionary(snap.processes.compactMap { p in p.nestedPIDs.map { (p.pid, $0) } }, uniquingKeysWith: { a, _ in a })
            for pr in restorers { try pr.joinGroup(leaders: true, known: known, nested: nested) }
            for pr in restorers { try pr.joinGroup(leaders: false, known: known, nested: nested) }
            // Once every process exists: pidfds name them, and epoll instances shared by
            // several processes or watching a pidfd are built from them (EventFiles.swift);
            // before finish, which gives each process its own credentials.
            for pr in restorers { try pr.restorePidfds(); try pr.restoreProcessFiles() }
            try ProcessRestorer.restoreLateEpolls(restorers)
            for pr in restorers { try pr.finish() }
            try deletedFiles.sealLate()
            removedSegments.removeAll()
            for (fd, ids) in removedInNamespaces {
                _ = AppNamespaces.inside(fd, type: AppNamespaces.newIPC) { for id in ids { SysVIPC.removeSegment(id) } }
            }
            // Every process has its fds: let go of the FIFOs before any process runs, or a
            // process that was blocked opening one would find ssi as its partner.
            fsObjects.closeAll()
            // The processes hold their pairs now; a master must see its slave closed when
            // theirs are (EIO), not kept open by ssi.
            ptys.closeAll()
            clock.mark("rebuild processes")
            if let failed = check?.finish() { throw failed }
            if check != nil { clock.mark("restart: pages checked") }
            try options.beforeResume?(created[0])
        } catch {
            let corrupt = check?.finish()
            lazy?.end(failed: true)
            killCreated()
            takeover.undo()
            throw corrupt ?? error
        }
        // Before any process runs: one that wakes on this CPU (a spinning loop) would
        // otherwise keep this pinned thread from the rest for its whole time slice (5 ms
        // seen between two detaches).
        pin?.undo()
        if PhaseClock.enabled { clock.mark("restart: unpinned") }
        takeover.commit()
        if PhaseClock.enabled { clock.mark("restart: names taken over") }
        if options.leaveFrozen, let freezer {
            try ProcFS.write("\(freezer.path(app))/cgroup.freeze", "1")
            for pr in restorers.reversed() { pr.settleStoppedChildren(children(of: pr.image.pid)); pr.detach() }
            try freezer.freeze(app)
        } else {
            for pr in restorers.reversed() { pr.settleStoppedChildren(children(of: pr.image.pid)); pr.detach() }
        }
        lazy?.end(failed: false)
        clock.mark("restart: let go")
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
        return CheckpointEngine.RestartResult(app: app, version: snap.manifest.version, pid: created[0], restoreSeconds: secs)
    }

    /// The root's empty shell with its old PID, born in the application's cgroup if there is
    /// a freezer.
    private func spawnRoot(_ root: ProcessImage, freezer: CgroupFreezer?) throws -> Tracee {
        var cgroupFD: Int32 = -1
        if let freezer { cgroupFD = (try? freezer.openGroup(app)) ?? -1 }
        defer { if cgroupFD >= 0 { close(cgroupFD) } }
        // A fresh init (FreshInit.swift) is the stub exec'd with its saved command line and
        // the command it takes over.
        let fresh = root.freshInit
        let shell: (ProcessID, Int32?, Int32) -> Result<Tracee, SSIError> = ownNamespace
            ? { Tracee.spawnRestoreNamespaceShell($0, cgroup: $1, keep: $2, arguments: fresh?.arguments,
                                                  environment: fresh.map { $0.environment + ["\(FreshInit.resumeVariable)=\($0.command)"] }) }
            : { Tracee.spawnRestoreShell($0, cgroup: $1, keep: $2) }
        var r = shell(ProcessID(root.pid), cgroupFD >= 0 ? cgroupFD : nil, FDTransfer.selfPidFD)
        // Another `ssi run` may have removed the group while it was empty (CgroupFreezer.sweep),
        // after we opened it: CLONE_INTO_CGROUP then fails with ENOENT. Make it again.
        for _ in 0..<3 where r.errno == ENOENT && cgroupFD >= 0 {
            close(cgroupFD)
            cgroupFD = (try? freezer?.openGroup(app)) ?? -1
            r = shell(ProcessID(root.pid), cgroupFD >= 0 ? cgroupFD : nil, FDTransfer.selfPidFD)
        }
        if r.errno == EEXIST { throw ProcessTreeBuilder.pidBusy(root.pid) }
        switch r {
        case .success(let t): return t
        case .failure(let e): throw SSIError(e.kind, e.message, hint: e.errno == EPERM ? "run as root (CAP_CHECKPOINT_RESTORE)" : nil, errno: e.errno)
        }
    }

    /// Creates the tree top-down: each process forks its children itself, after taking its
    /// session, so that parent links and sessions are the original ones.
    private func createTree(root: ProcessImage, stub: Tracee) throws {
        var children = [Int32: [ProcessImage]]()
        for p in snap.processes where p.pid != root.pid { children[p.ppid, default: []].append(p) }
        // Open file descriptions shared by several fds are opened once, in the root before
        // it forks, so that every process inherits the same description.
        let shared = SharedDescriptions(images: snap.processes)
        let selfPidFD = FDTransfer.selfPidFD
        var queue: [(ProcessImage, Tracee, UInt64?)] = [(root, stub, selfPidFD >= 0 ? UInt64(selfPidFD) : nil)]
        let byPID = Dictionary(snap.processes.map { ($0.pid, $0) }, uniquingKeysWith: { a, _ in a })
        var madeNamespaces = [String: Int32]()
        var hostPIDs: [Int32: Int32] = [root.pid: stub.pid.rawValue]
        var laterJoins: [(ProcessRestorer, Int32)] = []
        while !queue.isEmpty {
            let (image, t, pidfdSlot) = queue.removeFirst()
            let pr = try ProcessRestorer(image: image, source: snap, stub: t)
            pr.ssiPidFD = pidfdSlot
            pr.unpinnedCPUs = unpinnedCPUs
            pr.pipes = pipes
            pr.deletedFiles = deletedFiles
            pr.shared = shared
            pr.fsObjects = fsObjects
            pr.takeover = takeover
            pr.netNamespaces = netNamespaces
            pr.rootNetwork = options.rootNetwork
            pr.tcpPeerCheck = options.tcpPeerCheck
            pr.tcpPeerAcks = options.tcpPeerAcks
            pr.tcpKeepSent = options.tcpKeepSent
            pr.ipcNamespaces = ipcNamespaces
            pr.ptys = ptys
            // A member of a session whose terminal is a pair of the application, that had none
            // itself (forked before its leader's TIOCSCTTY, or after TIOCNOTTY): it gets the
            // terminal by its fork from the restored leader, and lets it go (finish).
            if image.sid != image.pid, image.controllingPTY == nil,
               snap.processes.contains(where: { $0.pid == image.sid && $0.controllingPTY != nil }) { pr.dropsControllingTerminal = true }
            pr.pendingMounts = pendingMounts
            pr.rootMountNamespace = root.namespaces?.mnt?.id
            // Its children are forked from its memory during the restore: filled before.
            if (children[image.pid] ?? []).isEmpty { pr.lazy = lazy }
            pr.pidNamespaceInit = ownNamespace
            if image.pid == root.pid { try pr.openShared(useCallerTerminal: options.useCallerTerminal) }
            pr.useCallerTerminal = options.useCallerTerminal
            pr.inheritFDs = Dictionary(uniqueKeysWithValues: inherited.map { ($0, $0) })
            restorers.append(pr)
            try pr.enterNamespaces(parent: image.pid == root.pid ? nil : byPID[image.ppid]?.namespaces, isRoot: image.pid == root.pid, made: &madeNamespaces)
            try pr.becomeSessionLeaderIfNeeded()
            // Memory and files first, then the children: they are forked from the restored
            // process, so the pages it shared copy-on-write with them are shared again.
            try pr.rebuild()
            // Children in three groups (clone(2) refuses CLONE_NEWPID, and CLONE_THREAD, once
            // pid_for_children is another namespace than the caller's): the first process of
            // each PID namespace this one made, then those of its own namespace, then its
            // threads; then it joins the namespace its children go to (or unshares a new one)
            // and forks the children that live there.
            func forkChild(_ child: ProcessImage) throws {
                // A child whose session lost its leader (not in the snapshot) is made in it.
                let lostSession = child.sid != image.sid && child.sid != child.pid && !snap.processes.contains { $0.pid == child.sid }
                let ct = lostSession ? try pr.forkIntoLostSession(child: child) : try pr.fork(child: child)
                created.append(ct.pid.rawValue)
                createdIDs.insert(child.pid)
                hostPIDs[child.pid] = ct.pid.rawValue
                if let status = child.zombieStatus {
                    try pr.makeZombie(ct, status: status)
                } else {
                    queue.append((child, ct, pr.ssiPidFD))
                }
            }
            let kids = (children[image.pid] ?? []).sorted { $0.pid < $1.pid }
            let inits = kids.filter { ProcessRestorer.startsPIDNamespace($0, parent: image) }
            let nested = kids.filter { ProcessRestorer.needsChildPIDNamespace($0, parent: image) }
            for child in inits + kids.filter({ !ProcessRestorer.startsPIDNamespace($0, parent: image) && !ProcessRestorer.needsChildPIDNamespace($0, parent: image) }) {
                try forkChild(child)
            }
            try pr.createThreads()
            if let next = image.childPIDNamespace {
                if let h = next.holder, let host = hostPIDs[h] {
                    try pr.joinChildPIDNamespace(holder: host)
                } else if let h = next.holder, nested.isEmpty {
                    laterJoins.append((pr, h))
                } else if next.holder == nil {
                    try pr.unshareChildPIDNamespace()
                }
            }
            guard nested.isEmpty || (image.childPIDNamespace?.holder).flatMap({ hostPIDs[$0] }) != nil else {
                throw SSIError(.unsupported, "\(snap.location): PID \(nested[0].pid) lives in a PID namespace whose first process is not restored before it; nothing was restarted",
                               hint: "the checkpoint should have refused this tree: restart another version, and report it with this snapshot")
            }
            for child in nested { try forkChild(child) }
        }
        for p in snap.processes where !createdIDs.contains(p.pid) {
            throw SSIError(.corrupt, "\(snap.location): PID \(p.pid) has no parent in the snapshot")
        }
        // Namespaces joined for later children whose holder was created after the process.
        for (pr, h) in laterJoins {
            guard let host = hostPIDs[h] else { throw SSIError(.corrupt, "\(snap.location): PID \(pr.image.pid)'s children go to the PID namespace of PID \(h), which is not in the snapshot") }
            try pr.joinChildPIDNamespace(holder: host)
        }
    }

    /// The caller's fds that replace the application's fds connected outside it: 0-2 and
    /// the ones given with --inherit-fd.
    private var inherited: Set<Int32> { options.inheritFDs.union([0, 1, 2]) }

    /// An fd connected outside the application that the caller does not replace comes back
    /// as a pipe with no peer: its unread bytes, then EOF (or EPIPE for a write end), as if
    /// the outside process had closed its end. Said on stderr, with the option that would
    /// connect it.
    private func checkExternalFDs() throws {
        for image in snap.processes {
            for f in image.fds where f.kind == .tcpSocket && f.external == true && !options.tcpEstablished {
                throw SSIError(.invalidArgument, "PID \(image.pid) fd \(f.fd) was a TCP connection to a peer outside the application, saved with --tcp-established; nothing was restarted",
                               hint: "restart with --tcp-established too, soon: the peer drops the connection when it times out")
            }
        }
        for image in snap.processes {
            for f in image.fds where f.kind == .pipe && f.external == true && !inherited.contains(f.fd) {
                warn("PID \(image.pid) fd \(f.fd) was a pipe to a process outside the application (\(f.path)); it comes back with no process at the other end (use --inherit-fd \(f.fd) to give it this command's fd \(f.fd))")
            }
        }
    }

    private func children(of pid: Int32) -> [ProcessImage] { snap.processes.filter { $0.ppid == pid } }

    /// Kills and reaps every process created, so that no PID stays taken.
    private func killCreated() {
        for pid in created.reversed() { kill(pid, SIGKILL) }
        let deadline = DispatchTime.now().uptimeNanoseconds + 2_000_000_000
        while DispatchTime.now().uptimeNanoseconds < deadline {
            let w = reapAnyChild()
            if w < 0 { break }
            if w == 0 { usleep(1000) }
        }
    }
}

/// A DeferredPageCheck run on another thread from the moment it is made; `finish` waits for
/// it and gives its error, if any (as often as asked). @unchecked Sendable: `error` is
/// written once by the check's thread before it signals, and read only after the wait.
final class BackgroundCheck: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var error: (any Error)?

    init(_ check: DeferredPageCheck) {
        DispatchQueue.global(qos: .userInitiated).async { [self] in
            do { try check.run() } catch { self.error = error }
            done.signal()
        }
    }

    func finish() -> (any Error)? {
        done.wait()
        done.signal()
        return error
    }
}
