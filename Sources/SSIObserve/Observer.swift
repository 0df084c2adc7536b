import Foundation
import Logging
import SSIMembership
import SSISystem
import SSITransport
import Synchronization

/// A node's operator view: its event ring, its metrics, what it knows of applications, and the
/// cluster-wide views gathered over RPC (Gather.swift) that the dashboard and `ssi events`
/// read. The daemon makes one per node (`NodeCore.observe`); other subsystems report into it
/// with `record` and, for the process table, `setApplicationSource`.
public final class Observer: Sendable {
    public let node: NodeID
    public let session: UInt64
    public let rpc: RPCNode
    public let membership: Membership
    public let events: EventRing
    public let metrics: NodeMetrics
    let logger: Logger
    let started = Date()
    /// How long a cluster view waits for one node before showing it as not answering.
    public let nodeTimeout: Duration

    /// The applications this node heard of through events, until a real source is set.
    struct Known: Sendable {
        var command: String
        var lastVersion: Int?
        var checkpoints = 0
        var restarts = 0
    }
    private let known = Mutex<[Int32: Known]>([:])
    private let source = ClosureCell<(@Sendable () async -> [ApplicationRow])?>(nil)
    private let dashboardAddress = Mutex<String?>(nil)

    public init(node: NodeID, session: UInt64, rpc: RPCNode, membership: Membership, logger: Logger,
                capacity: Int = 1000, nodeTimeout: Duration = .milliseconds(1500)) {
        (self.node, self.session, self.rpc, self.membership, self.logger) = (node, session, rpc, membership, logger)
        events = EventRing(capacity: capacity)
        metrics = NodeMetrics(node: node)
        self.nodeTimeout = nodeTimeout
    }

    /// Keeps an event (stamped with this node and its next number), counts it in the metrics,
    /// and notes the application it names. Safe from any thread; never blocks on I/O.
    @discardableResult
    public func record(_ event: ObserveEvent) -> ObserveEvent {
        let e = events.append(event, node: node)
        metrics.record(e)
        // Only what happened to a real application makes it known: a failed checkpoint of a
        // mistyped PID must not list that PID.
        if let app = e.app, [.applicationStarted, .checkpointDone, .restartDone].contains(e.kind) { note(app: app, e) }
        let level: Logger.Level = e.kind.isFailure ? .warning : .info
        logger.log(level: level, "observe: \(e.kind): \(e.message)")
        return e
    }

    private func note(app: Int32, _ e: ObserveEvent) {
        known.withLock { k in
            var a = k[app] ?? Known(command: "")
            switch e.kind {
            case .applicationStarted: a.command = e.message.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            case .checkpointDone: a.checkpoints += 1; a.lastVersion = e.version ?? a.lastVersion
            case .restartDone: a.restarts += 1; a.lastVersion = e.version ?? a.lastVersion
            default: break
            }
            k[app] = a
            // A bounded table: the oldest ids go first once 500 are known.
            if k.count > 500, let oldest = k.keys.min() { k[oldest] = nil }
        }
    }

    /// The cluster process table (issue 17) plugs in here: from then on `/api/applications`
    /// lists what it returns for this node instead of the applications heard of in events.
    public func setApplicationSource(_ f: @escaping @Sendable () async -> [ApplicationRow]) {
        source.set(f)
    }

    /// Where this node's dashboard listens, once it does (shown in the node table).
    public func setDashboard(_ address: String?) { dashboardAddress.withLock { $0 = address } }
    public var dashboard: String? { dashboardAddress.withLock { $0 } }

    /// This node's applications: those of the plugged-in source (the cluster process table),
    /// with the checkpoint counts heard of in events, then the other applications heard of
    /// (processes checkpointed by PID), each looked up in /proc for state, command, memory.
    public func localApplications() async -> [ApplicationRow] {
        let sourced = await source.value?() ?? []
        let heard = known.withLock { $0 }
        let fromSource = sourced.map { row in
            var r = row
            if let k = heard[r.app] {
                (r.checkpoints, r.restarts) = (max(r.checkpoints, k.checkpoints), max(r.restarts, k.restarts))
                r.lastVersion = r.lastVersion ?? k.lastVersion
            }
            return r
        }
        let listed = Set(sourced.map(\.app))
        return fromSource + heard.filter { !listed.contains($0.key) }.sorted { $0.key < $1.key }.map { app, k in
            let p = ProcessLook.look(app)
            return ApplicationRow(app: app, node: node, state: p.state, command: p.command ?? k.command, memoryBytes: p.rssBytes,
                                  lastVersion: k.lastVersion, checkpoints: k.checkpoints, restarts: k.restarts)
        }
    }

    /// This node's row of the node table.
    public func localRow() async -> NodeRow {
        let me = membership.view[node]
        var r = NodeRow(id: node, state: me?.state.rawValue ?? "unknown", reachable: true,
                        address: me.map { "\($0.host):\($0.port)" } ?? "")
        let host = HostSample.read()
        let apps = await localApplications()
        r.dashboard = dashboard
        r.pid = getpid()
        r.uptimeSeconds = Date().timeIntervalSince(started)
        r.load = host.load
        (r.memoryTotalBytes, r.memoryAvailableBytes) = (host.memoryTotalBytes, host.memoryAvailableBytes)
        r.applications = apps.count
        r.checkpoints = apps.reduce(0) { $0 + $1.checkpoints }
        r.restarts = apps.reduce(0) { $0 + $1.restarts }
        r.events = events.recorded
        return r
    }

    /// `/metrics`: the gauges are read now, then the registry is written out.
    public func metricsText() async -> String {
        let apps = await localApplications()
        var byState: [String: Int] = [:]
        for a in apps { byState[a.state, default: 0] += 1 }
        var nodes: [String: Int] = [:]
        for n in membership.view.values { nodes[n.state.rawValue, default: 0] += 1 }
        metrics.refresh(.init(host: HostSample.read(), nodesByState: nodes, applicationsByState: byState,
                              rejectedPeers: rpc.rejectedPeers.load(ordering: .relaxed), eventsKept: events.all.count))
        return metrics.text()
    }

    /// Turns membership changes into events. Every node sees every change; one records it, so
    /// the merged history says it once: a node its own joining, and the lowest online node
    /// another's leaving or failure (the node gone cannot speak for itself).
    public func watchMembership() {
        membership.subscribe { [self] changes, view in
            let reporter = view.values.filter { $0.state == .online }.map(\.id).min()
            for c in changes {
                switch c {
                case .added(let n) where n == node:
                    record(ObserveEvent(kind: .nodeJoined, message: "node \(n) joined (\(view[n].map { "\($0.host):\($0.port)" } ?? "?"))"))
                case .removed(let n) where reporter == node:
                    record(ObserveEvent(kind: .nodeLeft, message: "node \(n) left the cluster"))
                case .failed(let n) where reporter == node:
                    record(ObserveEvent(kind: .nodeFailed, message: "node \(n) failed: its lease expired without a goodbye"))
                default:
                    break
                }
            }
        }
    }
}
