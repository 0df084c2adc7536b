import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
import SSITransport

/// What `ssi restart APP [V] [--node N]` asks.
public struct RestartSpec: Codable, Sendable, Equatable {
    public var app: Int32
    /// Nil: the latest version.
    public var version: Int?
    /// Where to restart it; nil: the node asked.
    public var node: NodeID?
    public init(app: Int32, version: Int?, node: NodeID?) { (self.app, self.version, self.node) = (app, version, node) }
}

extension NodeApplications {
    /// Restarts a cluster application on this node from one of its snapshots, wherever it is:
    /// a version this node lacks is pulled first from an online node holding it (the
    /// `snapshots` set says which). Refused while the application runs: one copy only.
    public func restart(_ spec: RestartSpec) async throws -> AppRecord {
        let app = spec.app
        let rec = try await table.record(app)
        if [.running, .frozen, .migrating].contains(rec.state) {
            throw SSIError(.busy, "application \(app) is \(rec.state.rawValue) on node \(rec.node) (pid \(rec.pid)): it cannot be restarted while it runs; nothing was changed",
                           hint: "ssi checkpoint --kill \(app) first, or ssi migrate \(app) NODE to move it")
        }
        let catalog = try await table.catalog(app)
        guard let v = spec.version ?? catalog.versions.last?.version ?? store.versions(app).last else {
            throw SSIError(.notFound, "application \(app) has no snapshot", hint: "it can only be restarted from a snapshot: ssi checkpoint \(app) while it runs")
        }
        if !store.versions(app).contains(v) { try await fetchForRestart(app, v, catalog) }
        let engine = CheckpointEngine(store: store)
        // Its address comes back with it: its namespace is made here first.
        let netFD = try attachNetwork(app: app, address: rec.address, routed: false)
        defer { if let netFD { close(netFD) } }
        var o = CheckpointEngine.RestartOptions()
        o.rootNetwork = netFD
        if let route = routeWhenRebuilt(app: app, address: rec.address, namespace: netFD) { o.beforeResume = { _ in try route() } }
        // Its connections to other applications were saved (Snapshots.swift); each comes back
        // as saved, or reset on both sides if its peer has moved past the snapshot.
        // Of two ends restarted one after the other, the first finds its peer stopped and
        // rebuilds its side as saved; the second is checked against that rebuilt side, so
        // snapshots taken apart (which the peers had talked past) are reset, not rebuilt to
        // hang, and snapshots taken together come back intact.
        if rec.address != nil {
            o.tcpEstablished = true
            o.tcpPeerCheck = appNetwork.withLock({ $0 })?.tcpPeerCheck()
        }
        let opts = o
        let r = try await Self.onThread { try engine.restart(app: app, version: v, options: opts) }
        joinCPUGroups(root: r.pid)
        // Recorded before it is watched: the watcher records an end only for the pid the
        // record has, and a program that ends at once (a client finding its connection
        // reset) would otherwise be left "running" with the old pid overwritten after it.
        let me = self.me, usage = Self.usage(r.pid)
        let updated: AppRecord
        do {
            updated = try await table.update(app) { rec in
                (rec.node, rec.pid, rec.state, rec.exit_status) = (me, r.pid, .running, nil)
                (rec.processes, rec.rss_bytes) = usage
            }
        } catch {
            watch(app: app, pid: r.pid)
            throw error
        }
        watch(app: app, pid: r.pid)
        if rec.address != nil { await appNetwork.withLock({ $0 })?.placed(app: app) }
        return updated
    }

    private func fetchForRestart(_ app: Int32, _ v: Int, _ catalog: SnapshotCatalog) async throws {
        guard let entry = catalog.versions.first(where: { $0.version == v }) else {
            let all = catalog.versions.map { "v\($0.version)" }.joined(separator: ", ")
            throw SSIError(.notFound, "application \(app) has no snapshot v\(v) (versions: \(all.isEmpty ? "none" : all))", hint: "ssi snapshots \(app) lists them")
        }
        let online = table.online
        let holders = entry.nodes.filter { online.contains($0) && $0 != me }
        guard !holders.isEmpty else {
            throw SSIError(.unreachable, "snapshot v\(v) of application \(app) is held by node(s) \(entry.nodes.map(String.init).joined(separator: ",")), none of them online",
                           hint: "bring one of them back, or restart another version (ssi snapshots \(app))")
        }
        var last: Error?
        for h in holders {
            do { try await pull(app, v, from: h); return } catch { last = error }
        }
        throw last!
    }
}
