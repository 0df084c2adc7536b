import Foundation
import SSIControl
import SSIKDDM
import SSIObserve
import SSIProcessTable
import SSISystem
import SSITransport
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Cluster applications in the daemon (docs/migration.md): the `applications` and
/// `snapshots` sets, RPC block 200, and `ssi run/ps/caps/checkpoint/restart/snapshots/logs`.
/// A request reaches any node; this routes it to the node that must answer (the
/// application's, or a restart's target) through the forward service, and answers there.
struct ProcessTableSubsystem: Subsystem {
    static let name = "apps"
    static let configuration: [ConfigKey] = [
        ConfigKey("snapshots", default: "/var/chkpt", help: "this node's snapshot directory (each node keeps its own)"),
        ConfigKey("logs", default: "/var/log/ssi", help: "where logs of applications without the caller's stdout/stderr go"),
        ConfigKey("init", default: "", help: "ssi-init's path (default: beside ssid)"),
        ConfigKey("cpugroups", default: "", help: "cgroup directories (space-separated) every application of this node is put in, e.g. the node's cpu and cpuacct groups of ssi cluster up --cpus"),
    ]
    let core: NodeCore
    let apps: NodeApplications
    /// Each application's CPU use, from the scheduler's views (Wiring.swift), for `ssi ps`.
    let cpuUse = CPUUse()

    init(core: NodeCore, settings: [String: String]) {
        self.core = core
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let initPath = settings["init"].flatMap { $0.isEmpty ? nil : $0 }
            ?? URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("ssi-init").path
        let table = ProcessTable(kddm: core.kddm, membership: core.membership)
        apps = NodeApplications(table: table, rpc: core.rpc, snapshots: settings["snapshots"] ?? "/var/chkpt",
                                logs: settings["logs"] ?? "/var/log/ssi", initPath: initPath, logger: core.logger)
        let groups = (settings["cpugroups"] ?? "").split(separator: " ").map(String.init)
        apps.cpuGroups.withLock { $0 = groups }
    }

    var serviceBlock: ServiceBlock? { .processTable }
    var sets: [KDDMSetInfo] {
        [KDDMSetInfo(name: ProcessTable.applicationsSet, rule: .hash), KDDMSetInfo(name: ProcessTable.snapshotsSet, rule: .hash)]
    }

    func start() async throws {
        apps.registerServices()
        // Apps are children of ssid; processes orphaned inside a failed restart are too
        // (prctl(2) PR_SET_CHILD_SUBREAPER), and each is reaped by its watcher or the engine.
        Prctl.becomeSubreaper()
        let me = self
        core.rpc.register(ProcessTableService.forward) { _, p in
            let r = try JSONDecoder().decode(AppsRequest.self, from: Data(p))
            return Array(try JSONEncoder().encode(try await me.answer(r, fds: [])))
        }
    }

    var services: [any Service] { [RefreshService(apps: apps)] }

    func handle(_ request: ControlRequest) async throws -> ControlReply { try await handle(request, fds: []) }

    func handle(_ request: ControlRequest, fds: [Int32]) async throws -> ControlReply {
        guard case .apps(let r) = request else {
            fds.forEach { close($0) }
            throw misrouted(request)
        }
        return try await answer(r, fds: fds)
    }

    func answer(_ r: AppsRequest, fds: [Int32]) async throws -> ControlReply {
        let me = core.config.node, table = apps.table
        switch r {
        case .launch(let spec):
            if let n = spec.node, n != me {
                fds.forEach { close($0) }
                return try await forward(r, to: n)
            }
            let r = try await apps.launch(spec, stdio: fds.count == 3 ? fds : nil)
            note(.applicationStarted, r.app, "application \(r.app) started on node \(me): \(spec.command.joined(separator: " "))")
            return .application(r)
        case .list:
            let use = await cpuUse.now()
            return .applications(try await table.list().map { r in
                var r = r
                r.cpu = use[r.app].map { ($0 * 1000).rounded() / 10 }
                return r
            })
        case .show(let app):
            return .application(try await table.record(app))
        case .caps(let app, let changes):
            let parsed = try Capabilities.parse(changes)
            return .application(try await table.update(app) { Capabilities.apply(parsed, to: &$0.caps) }.seen(online: table.onlineNodes))
        case .checkpoint(let spec):
            let rec = try await table.record(spec.app)
            guard rec.state == .running || rec.state == .frozen else {
                throw SSIError(.state, "application \(spec.app) is \(rec.state.rawValue) (node \(rec.node)): only a running application can be checkpointed",
                               hint: rec.state == .lost || rec.state == .stopped ? "ssi restart \(spec.app) [VERSION] --node N brings it back" : "try again once it settles")
            }
            if rec.node != me { return try await forward(r, to: rec.node, timeout: .seconds(600)) }
            return .checkpointed(try await reported(spec.app, done: .checkpointDone, failed: .checkpointFailed, "checkpoint") {
                let d = try await apps.checkpoint(spec)
                return (d, "application \(spec.app): snapshot v\(d.version) on node \(me)\(d.replicas.isEmpty ? "" : ", replicas on \(d.replicas)")", d.version)
            })
        case .checkpointTogether(let spec):
            return .checkpointedAll(try await checkpointTogether(spec))
        case .freeze(let app, let lock):
            let rec = try await table.record(app)
            guard rec.state == .running else {
                throw SSIError(.state, "application \(app) is \(rec.state.rawValue) (node \(rec.node)): only a running application can be frozen",
                               hint: rec.state == .frozen ? "ssi checkpoint -c \(app) dumps it; ssi checkpoint -u \(app) unfreezes it" : "try again once it settles")
            }
            if rec.node != me { return try await forward(r, to: rec.node) }
            return .application(try await apps.freeze(app, lockNetwork: lock))
        case .unfreeze(let app, let sig):
            let rec = try await table.record(app)
            if rec.node != me { return try await forward(r, to: rec.node) }
            return .application(try await apps.unfreeze(app, signal: sig))
        case .restart(let spec):
            let target = spec.node ?? me
            if target != me { return try await forward(r, to: target, timeout: .seconds(600)) }
            return .application(try await reported(spec.app, done: .restartDone, failed: .restartFailed, "restart") {
                let r = try await apps.restart(spec)
                return (r, "application \(spec.app) restarted on node \(me) (pid \(r.pid))", spec.version)
            })
        case .snapshots(let app):
            if let app { return .catalogs([try await table.catalog(app)]) }
            return .catalogs(try await table.catalogs())
        case .deleteSnapshot(let app, let version):
            return .catalogs([try await apps.deleteSnapshot(app, version)])
        case .migrate(let spec):
            let rec = try await table.record(spec.app)
            guard rec.state == .running else {
                throw SSIError(.state, "application \(spec.app) is \(rec.state.rawValue) on node \(rec.node): only a running application can be migrated",
                               hint: rec.state == .lost || rec.state == .stopped ? "ssi restart \(spec.app) --node \(spec.node) brings it back there" : "try again once it settles")
            }
            // The caller going away (ControlServer cancels the request when its client hangs
            // up) gives the migration up, on whichever node runs it.
            let source = rec.node, rpc = core.rpc, apps = self.apps
            if source != me {
                return try await withTaskCancellationHandler {
                    try await forward(r, to: source, timeout: .seconds(900))
                } onCancel: {
                    Task { _ = try? await rpc.call(source, service: ProcessTableService.migrateCancel, Array((try? JSONEncoder().encode(spec.app)) ?? Data())) }
                }
            }
            return try await withTaskCancellationHandler {
                .application(try await reported(spec.app, done: Self.migrationDone, failed: Self.migrationFailed, "migration") {
                    let r = try await apps.migrate(spec)
                    return (r, "application \(spec.app) moved from node \(me) to node \(r.node)", nil)
                })
            } onCancel: {
                Task { await apps.cancelMigration(spec.app) }
            }
        case .signal(let app, let sig):
            let rec = try await table.record(app)
            if rec.node != me { return try await forward(r, to: rec.node) }
            return .application(try await apps.signal(app, sig))
        case .logs(let app, let offset):
            let rec = try await table.record(app)
            let n = rec.log_node ?? rec.node
            if n != me { return try await forward(r, to: n) }
            return .log(try apps.log(app, from: offset))
        }
    }

    static let migrationDone = ObserveEvent.Kind(rawValue: "migration-done")
    static let migrationFailed = ObserveEvent.Kind(rawValue: "migration-failed")

    /// An event for the operators' view (dashboard, `ssi events`, metrics).
    private func note(_ kind: ObserveEvent.Kind, _ app: Int32, _ message: String, seconds: Double? = nil, version: Int? = nil) {
        _ = core.observe.record(ObserveEvent(kind: kind, app: app, seconds: seconds, version: version, message: message))
    }

    /// Runs an operation done on this node and records its outcome as an event.
    private func reported<T>(_ app: Int32, done: ObserveEvent.Kind, failed: ObserveEvent.Kind, _ what: String,
                             _ body: () async throws -> (T, String, Int?)) async throws -> T {
        let t0 = ContinuousClock.now
        do {
            let (r, message, version) = try await body()
            let d = ContinuousClock.now - t0
            note(done, app, message, seconds: Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18, version: version)
            return r
        } catch {
            note(failed, app, "application \(app): \(what) on node \(core.config.node) failed: \(error)")
            throw error
        }
    }

    /// Asks node `n`'s process table to answer `r`.
    func forward(_ r: AppsRequest, to n: NodeID, timeout: Duration = .seconds(60)) async throws -> ControlReply {
        guard core.membership.view[n]?.state == .online else {
            throw SSIError(.unreachable, "node \(n) is not online (\(core.membership.view[n]?.state.rawValue ?? "unknown"))",
                           hint: "ssi nodes status shows the nodes; choose an online one")
        }
        let out = try await core.rpc.call(n, service: ProcessTableService.forward, Array(try JSONEncoder().encode(r)), timeout: timeout)
        return try JSONDecoder().decode(ControlReply.self, from: Data(out))
    }
}

/// Kerrighed's per-application capabilities (krgcapset): +CAP adds, -CAP removes.
enum Capabilities {
    static let known = ["CAN_MIGRATE", "DISTANT_FORK", "CHECKPOINTABLE", "SEE_LOCAL_PROC_STAT"]

    static func parse(_ changes: [String]) throws -> [(add: Bool, cap: String)] {
        try changes.map { c in
            guard let sign = c.first, sign == "+" || sign == "-" else {
                throw SSIError(.invalidArgument, "capability change '\(c)' must start with + or -", hint: "e.g. +CAN_MIGRATE or -CAN_MIGRATE")
            }
            let name = String(c.dropFirst()).uppercased()
            guard known.contains(name) else {
                throw SSIError(.invalidArgument, "unknown capability '\(name)'", hint: "known: \(known.joined(separator: ", "))")
            }
            return (sign == "+", name)
        }
    }

    static func apply(_ changes: [(add: Bool, cap: String)], to caps: inout [String]) {
        for c in changes {
            caps.removeAll { $0 == c.cap }
            if c.add { caps.append(c.cap) }
        }
        caps.sort()
    }
}

/// Refreshes the local applications' records every 2 s.
struct RefreshService: Service {
    let apps: NodeApplications
    func run() async throws {
        await cancelWhenGracefulShutdown {
            // The migrations this node was the source of when an earlier ssid died first:
            // they decide which copies stay, which reconcile then adopts.
            await apps.reconcileMigrations()
            await apps.reconcile()
            await apps.refreshLoop()
        }
    }
}
