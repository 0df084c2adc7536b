import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// What `ssi migrate APP NODE` asks.
public struct MigrateSpec: Codable, Sendable, Equatable {
    public var app: Int32
    public var node: NodeID
    public init(app: Int32, node: NodeID) { (self.app, self.node) = (app, node) }
}

extension ProcessTableService {
    /// Asks the target of a migration to pull a version and restore it (a MigrateIn).
    public static let migrateIn = ServiceBlock.processTable.number(5)
}

struct MigrateIn: Codable {
    var app: Int32
    var version: Int
    var from: NodeID
    /// TCP connections to peers outside the application were saved (they follow it).
    var tcpEstablished: Bool? = nil
    /// The application's own address, as its record says (`addressSent`: the source said,
    /// so the target need not read the record while the application is frozen).
    var address: String? = nil
    var addressSent: Bool? = nil
}

/// Stop-and-copy migration, built on checkpoint and restart anywhere (docs/migration.md,
/// "Stop-and-copy"): the live, pre-copy protocol comes later in SSIMigration.
extension NodeApplications {
    /// Runs on the application's node S. Checks everything first (the application never
    /// stops for a refused migration); then dumps it and leaves every process stopped by a
    /// SIGSTOP queued while they are still seized (the engine's kill signal, so none runs
    /// past the snapshot); T pulls the snapshot and restores it; only once T's copy runs is
    /// S's killed. Any failure before that: S's copy gets SIGCONT and goes on, unchanged.
    public func migrate(_ spec: MigrateSpec) async throws -> AppRecord {
        let app = spec.app, target = spec.node
        let rec = try await table.record(app)
        guard rec.caps.contains("CAN_MIGRATE") else {
            throw SSIError(.permission, "application \(app) does not have the CAN_MIGRATE capability; nothing was changed",
                           hint: "ssi caps \(app) +CAN_MIGRATE")
        }
        guard target != me else {
            throw SSIError(.invalidArgument, "application \(app) already runs on node \(me); nothing was changed", hint: "give another node")
        }
        guard table.online.contains(target) else {
            throw SSIError(.unreachable, "node \(target) is not online; application \(app) stays on node \(me)", hint: "ssi nodes status shows the online nodes")
        }
        let root = try await localRoot(app)
        // What follows it besides its processes (its connections): refused here, before
        // anything stops, if it cannot.
        let plan = try await planMigration(app: app, root: root, address: rec.address, to: target)
        // One migration at a time: the record's state is set under the grab, so a second one
        // (a user's `ssi migrate` while the scheduler moves it, or the other way round) is
        // refused here instead of dumping the application twice at once.
        let me = self.me
        try await table.update(app) { r in
            guard r.state == .running || r.state == .frozen else {
                throw SSIError(.state, "application \(app) is \(r.state.rawValue) (on node \(r.node)); nothing was changed",
                               hint: r.state == .migrating ? "wait for the migration under way to end (ssi ps), then try again" : "ssi ps shows its state")
            }
            guard r.node == me else {
                throw SSIError(.state, "application \(app) now runs on node \(r.node), not on node \(me); nothing was changed", hint: "ssi ps shows where it runs")
            }
            r.state = .migrating
        }
        var o = CheckpointEngine.CheckpointOptions()
        o.description = "migration from node \(me) to node \(target)"
        o.applicationID = app
        o.killSignal = .stop
        o.tcpEstablished = plan.tcpEstablished
        let atFreeze = plan.whenFrozen
        if !atFreeze.isEmpty { o.whenFrozen = { for f in atFreeze { try f() } } }
        let beforeFreeze = plan.beforeFreeze
        if !beforeFreeze.isEmpty { o.beforeFreeze = { for f in beforeFreeze { try f() } } }
        let engine = CheckpointEngine(store: store), opts = o, rpc = self.rpc
        // The image goes to the target's store as it is produced (RemoteImage.swift); a dump
        // that fails leaves nothing there and the application running here (the engine lets
        // it go without the signal).
        let done: CheckpointEngine.CheckpointResult
        do {
            done = try await Self.onThread {
                try engine.checkpoint(app: root, options: opts, to: try RemoteImageWriter(rpc: rpc, node: target, app: app))
            }
        } catch {
            await settle(app)
            await eachHook { await $0.sourceDidFinish(app: app, committed: false) }
            throw SSIError(.system, "migration of application \(app) to node \(target) failed before it stopped: \(error); it goes on on node \(me)",
                           hint: (error as? SSIError)?.hint ?? "see node \(target)'s log")
        }
        var clock = PhaseClock()
        clock.mark("migrate: source dump sent")
        let stopped = Self.tree(root)
        do {
            // The catalog entry is written while the target restores: the application is
            // stopped until the target's copy runs, and the target needs only its own store.
            let table = self.table
            let entry = SnapshotCatalog.Version(version: done.version, date: done.date, description: done.description, size: done.pageBytes, nodes: [target])
            async let recorded: Void = table.addSnapshot(app, entry, holder: target)
            let req = Array(try JSONEncoder().encode(MigrateIn(app: app, version: done.version, from: me, tcpEstablished: plan.tcpEstablished, address: rec.address, addressSent: true)))
            _ = try await rpc.call(target, service: ProcessTableService.migrateIn, req, timeout: .seconds(600))
            clock.mark("migrate: target restored")
            try await recorded
        } catch {
            done.tracking?.stop()
            for p in stopped { kill(p, SIGCONT) }
            await settle(app)
            await eachHook { await $0.sourceDidFinish(app: app, committed: false) }
            throw SSIError(.system, "migration of application \(app) to node \(target) failed: \(error); it goes on on node \(me), unchanged",
                           hint: "see node \(target)'s log")
        }
        // T's copy runs and the record names T: ours goes (SIGKILL to the namespace's init
        // kills every process of the namespace, pid_namespaces(7)).
        await eachHook { await $0.sourceWillKill(app: app, root: root) }
        kill(root, SIGKILL)
        // Its write tracking goes after it (its pages are being freed: nothing left to walk).
        done.tracking?.stop()
        await eachHook { await $0.sourceDidFinish(app: app, committed: true) }
        return try await table.record(app)
    }

    /// After a failed migration: the record says the application runs here again. Retried
    /// for a while: a node that held a copy of the record and died with the migration (its
    /// target) holds the write back until KDDM has revoked it (seconds), and `ssi ps` must
    /// not go on saying `migrating`.
    func settle(_ app: Int32) async {
        let me = self.me
        for attempt in 0..<40 {
            do {
                _ = try await table.update(app) { r in if r.node == me { r.state = .running } }
                return
            } catch {
                if attempt == 39 { logger.warning("process table: application \(app) runs on node \(me) again, but its record could not say so: \(error)") }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// Runs on the target: pull, restore, take the record.
    func migrateIn(_ m: MigrateIn) async throws {
        var clock = PhaseClock()
        try await pull(m.app, m.version, from: m.from)
        clock.mark("migrate in: pull")
        try await eachHook { try await $0.targetWillRestore(app: m.app, from: m.from) }
        clock.mark("migrate in: hooks before restore")
        let engine = CheckpointEngine(store: store)
        let app = m.app, v = m.version
        // The source copy, frozen, still holds the application's names until it is killed.
        var o = CheckpointEngine.RestartOptions()
        o.takeOver = true
        // Every file's CRC-32C matched the source's as it arrived (RemoteImage.swift).
        o.checkedOnArrival = true
        // Its pages are copied in after it runs (LazyMemory): the daemon lives on.
        o.lazyMemory = true
        o.tcpEstablished = m.tcpEstablished ?? false
        // An application with an address gets its namespace here, address and link, before
        // its processes and sockets are rebuilt inside it.
        let address = m.addressSent == true ? m.address : try await table.record(app).address
        let netFD = try attachNetwork(app: app, address: address, routed: false)
        defer { if let netFD { close(netFD) } }
        o.rootNetwork = netFD
        let route = routeWhenRebuilt(app: app, address: address), hooks = migrationHooks.withLock({ $0 }), from = m.from
        o.beforeResume = {
            try route?()
            for h in hooks { h.targetRebuilt(app: app, from: from) }
        }
        clock.mark("migrate in: network")
        let opts = o
        let r = try await Self.onThread { try engine.restart(app: app, version: v, options: opts) }
        clock.mark("migrate in: restart")
        joinCPUGroups(root: r.pid)
        // Recorded first, then watched (as a restart: Restart.swift).
        let me = self.me
        do {
            try await table.update(app) { rec in
                (rec.node, rec.pid, rec.state, rec.exit_status) = (me, r.pid, .running, nil)
                rec.migrations += 1
            }
        } catch {
            watch(app: app, pid: r.pid)
            throw error
        }
        watch(app: app, pid: r.pid)
        clock.mark("migrate in: record")
        await eachHook { await $0.targetDidResume(app: app, root: r.pid, from: m.from) }
        // The image came in without fsync (IncomingSnapshots): on disk now, off the freeze.
        let store = self.store, logger = self.logger
        Task.detached {
            do { try store.sync(app: app) } catch { logger.warning("process table: snapshot v\(v) of application \(app) not synced: \(error)") }
        }
    }
}
