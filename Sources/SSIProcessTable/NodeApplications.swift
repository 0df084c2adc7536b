import Foundation
import Logging
import SSICheckpoint
import SSIImage
import SSIKDDM
import SSIMembership
import SSISystem
import SSITransport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// This node's side of the cluster's applications: launching (Launch.swift), watching and
/// refreshing their records, checkpoint and restart through the engine (Snapshots.swift),
/// logs. The daemon's process-table subsystem routes requests here once they reached the
/// application's node.
public final class NodeApplications: Sendable {
    public let table: ProcessTable
    let rpc: RPCNode
    let me: NodeID
    /// This node's own snapshot directory: nothing relies on another node seeing it.
    public let store: SnapshotStore
    let logDir: String
    let initPath: String
    let logger: Logger
    /// Applications running here: id -> root PID (in this node's PID namespace).
    let local = Mutex<[Int32: Int32]>([:])
    /// What the last refresh wrote, per application (processes, rss).
    let written = Mutex<[Int32: (Int, UInt64, AppState)]>([:])
    /// Applications being checkpointed here: their freezer state is the checkpoint's for a
    /// moment (frozen for the dump; a frozen one thawed for the seize and frozen again), not
    /// theirs, and `refresh` leaves their record alone until it is over.
    let checkpointing = Mutex<Set<Int32>>([])
    /// Snapshots other nodes are streaming into this node's store (RemoteImage.swift).
    let incoming = IncomingSnapshots()
    /// cgroup directories every application of this node is put in (CPUGroups.swift).
    public let cpuGroups = Mutex<[String]>([])
    /// What follows an application when it moves, besides its processes (MigrationHooks.swift).
    public let migrationHooks = Mutex<[any MigrationHooks]>([])
    /// Application addresses, when this node has an application subnet (AppNetworkHook.swift).
    public let appNetwork = Mutex<(any ApplicationNetwork)?>(nil)
    /// Migrations of this node's applications under way, by application: their token and
    /// target, and whether the one who asked gave them up (`cancelMigration`).
    let migrationsHere = Mutex<[Int32: ActiveMigration]>([:])
    /// Migrations to this node whose source gave them up (MigrateAbort), by token.
    let abandonedMigrations = Mutex<Set<UInt64>>([])
    /// Restores started here by the commit of their image (`IncomingStep.restore`), by
    /// token, until the source's request to restore comes for their outcome.
    let restoresOnCommit = Mutex<[UInt64: Task<Void, Error>]>([:])
    /// Applications frozen here with their address locked (Together.swift), until unfrozen.
    let networkLocked = Mutex<[Int32: String]>([:])

    public init(table: ProcessTable, rpc: RPCNode, snapshots: String, logs: String, initPath: String, logger: Logger) {
        self.table = table
        self.rpc = rpc
        me = rpc.nodeID
        store = SnapshotStore(root: snapshots)
        logDir = logs
        self.initPath = initPath
        self.logger = logger
    }

    /// The applications whose processes live on this node now (id -> root PID): a
    /// migration's source copy included until it is killed, whatever the record says.
    public var localApplications: [Int32: Int32] { local.withLock { $0 } }

    /// The root PID of a local application, or an error saying where it is.
    func localRoot(_ app: Int32) async throws -> Int32 {
        if let pid = local.withLock({ $0[app] }) { return pid }
        let r = try await table.record(app)
        throw SSIError(.state, "application \(app) is not running on node \(me) (it is \(r.state.rawValue) on node \(r.node))",
                       hint: r.state == .running ? "ask node \(r.node)" : "ssi restart \(app) brings it back from a snapshot")
    }

    // MARK: the records' refresh

    /// Every 2 s: each local application's process count and resident memory (VmRSS of
    /// each, /proc/PID/status), and frozen or not; written only when changed, so a quiet
    /// cluster makes no KDDM traffic. The processes are the init's descendants: in a PID
    /// namespace every process descends from its init, orphans included (pid_namespaces(7)),
    /// whereas a cgroup `app-<id>` may hold strays of an earlier cluster that gave out the
    /// same id (a local cluster starts its counter again).
    public func refreshLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(2))
            for (app, pid) in local.withLock({ $0 }) { await refresh(app, root: pid) }
        }
    }

    func refresh(_ app: Int32, root: Int32) async {
        let freezer = CgroupFreezer.find()
        let (n, rss) = Self.usage(root)
        let state: AppState = freezer?.isFrozen(app) == true ? .frozen : .running
        // Read after the state: seen in CI, `ssi checkpoint -c` of a frozen application,
        // whose group is thawed for the seize, left its record "running" until the next
        // refresh, 2 s later (and a checkpoint's freeze could show a running one "frozen").
        if checkpointing.withLock({ $0.contains(app) }) { return }
        if let w = written.withLock({ $0[app] }), w.0 == n, w.1 == rss, w.2 == state { return }
        do {
            try await table.update(app) { r in
                // Not while a migration is under way: its state (migrating) and mark are the
                // migration's to settle (Migrate.swift).
                guard r.node == self.me, r.pid == root, r.state != .stopped, r.migration == nil, r.state != .migrating else { return }
                (r.processes, r.rss_bytes, r.state) = (n, rss, state)
            }
            written.withLock { $0[app] = (n, rss, state) }
        } catch {
            logger.debug("process table: refresh of \(app) failed: \(error)")
        }
    }

    /// The root and its descendants (SSISystem.processTree).
    static func tree(_ root: Int32) -> [Int32] { processTree(root) }

    /// What a record says of the processes under `root`: their count (the root included)
    /// and resident memory.
    static func usage(_ root: Int32) -> (processes: Int, rss: UInt64) {
        let pids = tree(root)
        return (pids.count, pids.reduce(UInt64(0)) { $0 + rss(of: $1) })
    }

    static func rss(of pid: Int32) -> UInt64 {
        guard let s = try? ProcFS.read("/proc/\(pid)/status") else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { UInt64($0) } ?? 0
            return kb * 1024
        }
        return 0
    }

    /// kill(2) of a local application's init. A signal from an ancestor namespace reaches
    /// a namespace's init only if it has a handler for it, or for SIGKILL/SIGSTOP
    /// (pid_namespaces(7)); ssi-init handles those it forwards to the command.
    public func signal(_ app: Int32, _ sig: Int32) async throws -> AppRecord {
        let root = try await localRoot(app)
        guard (1...64).contains(sig) else { throw SSIError(.invalidArgument, "signal \(sig) is not a signal number (1-64)") }
        guard kill(root, sig) == 0 else { throw SSIError.sys("node \(me): kill(\(root), \(sig)) for application \(app)", errno: errno) }
        return try await table.record(app)
    }

    // MARK: logs

    /// Up to 1 MiB of the application's log from `offset`.
    public func log(_ app: Int32, from offset: UInt64) throws -> LogChunk {
        let path = logPath(app)
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw SSIError(.notFound, "node \(me) has no log of application \(app) (\(path))",
                           hint: "an application started with the caller's terminal or files has no log; ssi ps shows its log_node")
        }
        defer { try? fh.close() }
        try fh.seek(toOffset: offset)
        let data = fh.readData(ofLength: 1 << 20)
        let running = local.withLock { $0[app] != nil }
        return LogChunk(data: String(decoding: data, as: UTF8.self), next: offset + UInt64(data.count), running: running)
    }

    /// Runs a blocking engine call on a thread of its own: ptrace requests are accepted only
    /// from the thread that attached (ptrace(2)), so a whole checkpoint or restart must stay
    /// on one thread, never hop between a cooperative pool's threads.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            let t = Thread { c.resume(with: Result { try body() }) }
            t.stackSize = 8 << 20
            t.start()
        }
    }
}

/// A migration under way on its source node.
struct ActiveMigration: Sendable {
    var token: UInt64
    var target: NodeID
    var cancelled = false
}

/// A piece of an application's log.
public struct LogChunk: Codable, Sendable {
    public var data: String
    /// The offset to ask from next.
    public var next: UInt64
    public var running: Bool
    public init(data: String, next: UInt64, running: Bool) { (self.data, self.next, self.running) = (data, next, running) }
}
