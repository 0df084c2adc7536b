import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The checkpoint/restart engine: the one entry point that the CLI, the daemon and
/// migration call. Its drivers are in this folder (Checkpoint.swift, Restart.swift,
/// Launch.swift); what they save and restore is in Resources/, one file per kind of state.
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
        /// Copy memory while the application runs and freeze it only for the last round
        /// (Precopy.swift): true `--precopy`, false `--no-precopy`, nil when it holds at
        /// least Precopy.autoThreshold of anonymous memory. Only into the version store.
        public var precopy: Bool? = nil
        /// A cluster application's id when it is not its root's PID (docs/migration.md): the
        /// snapshot is stored under it and its cgroup is `ssi/app-<id>`.
        public var applicationID: Int32? = nil
        /// The lowest version number the snapshot may take (SnapshotWriter.firstVersion): one
        /// above the cluster's highest version of a cluster application.
        public var firstVersion: Int? = nil
        /// Save TCP connections to peers outside the application (`--tcp-established`).
        public var tcpEstablished = false
        /// Called once every task is stopped, before any fd is read (a migration holds the
        /// application's network there, so that its sockets change no more until they are
        /// saved); a throw fails the checkpoint, the application going on.
        public var whenFrozen: (@Sendable () throws -> Void)? = nil
        /// Called just before the application is frozen for its dump (after any pre-copy
        /// rounds): a migration stops the application's incoming traffic there and lets it
        /// read what it has received, so that its sockets hold little to save. A throw fails
        /// the checkpoint before anything stops.
        public var beforeFreeze: (@Sendable () throws -> Void)? = nil
        /// A migration (with killSignal .stop): once the image is committed, the stopped copy
        /// lets go of its file locks for the target to take (HandedOverLocks, Locks.swift);
        /// `CheckpointResult.locks` takes them back if the migration fails.
        public var handOverLocks = false
        /// A migration (with killSignal .stop): called once every process is dumped, just
        /// before the commit, with whether the stop signal is queued right after it (the
        /// application holds no file lock to hand over): the commit may then carry the
        /// request to restore at once (the target takes the application over before this
        /// node hears back), since from then on the stopped copy never runs by itself, not
        /// even if this daemon dies (the kernel detaches its tracees, and the queued SIGSTOP
        /// stops them). A throw fails the checkpoint, the application going on.
        public var beforeCommit: (@Sendable (_ stopQueued: Bool) throws -> Void)? = nil
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
        /// Bytes copied in each pre-copy round while the application ran; empty without.
        public var precopyRounds: [UInt64] = []
        /// Bytes of pages taken from the previous version by reference, never read
        /// (IncrementalBase.swift); 0 without.
        public var referencedBytes: UInt64 = 0
        /// A migration's write tracking, still on (CheckpointOptions.killSignal .stop): the
        /// caller stops it once the application runs again somewhere, or dropping it does.
        public var tracking: WriteTracking? = nil
        /// The locks the stopped copy let go of (CheckpointOptions.handOverLocks); nil when
        /// it held none.
        public var locks: HandedOverLocks? = nil
    }

    /// The pre-copy's write tracking left on past the dump. Stopping it closes the
    /// userfaultfd, and the kernel then walks the areas' page tables to lift the protection
    /// (userfaultfd(2), UFFDIO_UNREGISTER's work done at release): 40 ms for 1 GiB, which a
    /// migration spends after its target resumed, not while the application is frozen.
    public final class WriteTracking: @unchecked Sendable {
        private let lock = NSLock()
        private var precopy: Precopy?
        init(_ precopy: Precopy) { self.precopy = precopy }
        public func stop() {
            lock.lock()
            let p = precopy
            precopy = nil
            lock.unlock()
            p?.stop()
        }
        deinit { precopy?.stop() }
    }

    /// Validates that `pid` is something we may checkpoint, with a message saying why not.
    public static func validateTarget(_ pid: Int32) throws {
        guard pid > 0 else { throw SSIError(.invalidArgument, "invalid PID \(pid)", hint: "give the application id (the PID of its root process)") }
        if pid == 1 { throw SSIError(.invalidArgument, "PID 1 (init) cannot be checkpointed") }
        if pid == getpid() { throw SSIError(.invalidArgument, "PID \(pid) is this ssi command itself") }
        let st = try ProcStat.read(pid: pid)
        if st.isKernelThread { throw SSIError(.invalidArgument, "PID \(pid) (\(st.comm)) is a kernel thread; only user processes can be checkpointed") }
        if (st.state == "Z" || st.state == "X") && ExitedLeader.liveThread(pid) == nil { throw SSIError(.state, "PID \(pid) has exited (it is a zombie)", hint: "its parent must reap it; restart it from a snapshot instead") }
        // /proc/TID answers for a thread too (proc(5)): a thread id is not an application.
        if let tgid = ProcStatus.parse((try? ProcFS.read("/proc/\(pid)/status")) ?? "").fields["Tgid"].flatMap({ Int32($0) }), tgid != pid {
            throw SSIError(.invalidArgument, "\(pid) is a thread of process \(tgid), not a process", hint: "give the process: ssi checkpoint \(tgid)")
        }
        // The tree under PID holds this very command (a shell that runs ssi): it would trace
        // itself.
        var p = getppid()
        while p > 1 {
            if p == pid { throw SSIError(.invalidArgument, "PID \(pid) is an ancestor of this ssi command (its tree holds ssi itself)", hint: "run ssi from outside the application, e.g. another terminal") }
            guard let up = try? ProcStat.read(pid: p) else { break }
            p = up.ppid
        }
    }

    /// Between two safe steps of a checkpoint (page batches, pre-copy buffers, processes, the
    /// commit): throws when the command that runs it was interrupted (Interrupts.swift); the
    /// caller's error path then lets the application go on as it was.
    static func stopIfInterrupted() throws {
        try Interrupts.check("the checkpoint stopped before its end; nothing was written and the application goes on as it was")
    }

    // MARK: freeze / unfreeze

    /// Freezes application `app` (the PID of its root) in its cgroup: its own group
    /// `applicationID` for a cluster application (made at launch), else one made for it now.
    public func freeze(app: Int32, applicationID: Int32? = nil) throws {
        try requireRoot("ssi checkpoint --freeze")
        try CheckpointEngine.validateTarget(app)
        let f = try CgroupFreezer.require()
        let group = applicationID ?? app
        if f.isFrozen(group) { throw SSIError(.state, "application \(group) is already frozen", hint: "ssi checkpoint -c \(group) dumps it; ssi checkpoint -u \(group) unfreezes it") }
        if applicationID == nil { try f.enroll(pid: app, app: app) }
        try f.freeze(group)
    }

    public func unfreeze(app: Int32, applicationID: Int32? = nil, signal: Signal?) throws {
        try requireRoot("ssi checkpoint --unfreeze")
        let f = try CgroupFreezer.require()
        let group = applicationID ?? app
        guard ProcFS.exists("/proc/\(app)") else { throw SSIError(.notFound, "no process with PID \(app)") }
        if !f.isFrozen(group) { throw SSIError(.state, "application \(group) is not frozen", hint: "freeze it with ssi checkpoint -f \(group)") }
        // Queued now, delivered as soon as it thaws.
        try signal?.send(to: ProcessID(app))
        try f.thaw(group)
    }
}
