import CoreMetrics
import Prometheus
import SSITransport
import Synchronization

/// One node's metrics, recorded through swift-metrics into a swift-prometheus registry of its
/// own (not the process-wide `MetricsSystem`: tests run several observers in one process, and
/// a daemon never needs another backend). `/metrics` is `text()`, the Prometheus text
/// exposition format. Every series carries `node`; names and meanings: docs/observe.md.
public final class NodeMetrics: Sendable {
    public let node: NodeID
    public let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    /// What the last refresh saw of counters kept elsewhere (RPCNode.rejectedPeers), so that
    /// only the difference is added: a Prometheus counter only goes up.
    private let lastRejected = Mutex(0)

    /// Checkpoints and restarts take from milliseconds (a small process) to minutes (a big
    /// heap); RPCs from tens of microseconds (loopback) to the 5 s call timeout.
    static let operationBuckets: [Duration] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120].map { .milliseconds(Int($0 * 1000)) }
    static let rpcBuckets: [Duration] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 250_000, 1_000_000, 5_000_000].map { .microseconds($0) }

    public init(node: NodeID) {
        self.node = node
        var f = PrometheusMetricsFactory(registry: registry)
        f.durationHistogramBuckets = [
            "ssi_checkpoint_duration_seconds": Self.operationBuckets,
            "ssi_restart_duration_seconds": Self.operationBuckets,
            "ssi_rpc_latency_seconds": Self.rpcBuckets,
        ]
        factory = f
        // Series that exist from the start, at 0, so that rate() works from the first scrape.
        for result in ["ok", "failed"] {
            counter("ssi_checkpoints_total", ["result": result]).increment(by: 0)
            counter("ssi_restarts_total", ["result": result]).increment(by: 0)
        }
        counter("ssi_checkpoint_bytes_total").increment(by: 0)
        counter("ssi_rpc_requests_total").increment(by: 0)
        counter("ssi_rpc_errors_total").increment(by: 0)
        counter("ssi_membership_failures_total").increment(by: 0)
        counter("ssi_rpc_rejected_peers_total").increment(by: 0)
    }

    private func dims(_ extra: [String: String]) -> [(String, String)] {
        [("node", "\(node)")] + extra.sorted { $0.key < $1.key }
    }

    func counter(_ name: String, _ extra: [String: String] = [:]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: name, dimensions: dims(extra), factory: factory)
    }

    func gauge(_ name: String, _ extra: [String: String] = [:]) -> Meter {
        Meter(label: name, dimensions: dims(extra), factory: factory)
    }

    func timer(_ name: String, _ extra: [String: String] = [:]) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: name, dimensions: dims(extra), factory: factory)
    }

    /// Counts an event, and the duration and bytes of the checkpoint or restart it reports.
    public func record(_ e: ObserveEvent) {
        counter("ssi_events_total", ["kind": e.kind.rawValue]).increment()
        switch e.kind {
        case .checkpointDone, .checkpointFailed:
            counter("ssi_checkpoints_total", ["result": e.kind == .checkpointDone ? "ok" : "failed"]).increment()
            if e.kind == .checkpointDone {
                if let s = e.seconds { timer("ssi_checkpoint_duration_seconds").recordSeconds(s) }
                if let b = e.bytes { counter("ssi_checkpoint_bytes_total").increment(by: Int64(clamping: b)) }
            }
        case .restartDone, .restartFailed:
            counter("ssi_restarts_total", ["result": e.kind == .restartDone ? "ok" : "failed"]).increment()
            if e.kind == .restartDone, let s = e.seconds { timer("ssi_restart_duration_seconds").recordSeconds(s) }
        case .nodeFailed:
            counter("ssi_membership_failures_total").increment()
        default:
            break
        }
    }

    /// One RPC this node sent: its latency, and whether it failed (error or timeout).
    public func rpcCall(service: UInt16, seconds: Double, ok: Bool) {
        let block = ServiceBlock.owner(of: service)?.name ?? "unknown"
        counter("ssi_rpc_requests_total").increment()
        counter("ssi_rpc_requests_by_block_total", ["block": block]).increment()
        if !ok { counter("ssi_rpc_errors_total").increment() }
        timer("ssi_rpc_latency_seconds").recordSeconds(seconds)
    }

    /// One KDDM operation asked of this node (get, grab, put, store, remove, increment).
    public func kddmOperation(_ op: String) {
        counter("ssi_kddm_operations_total", ["op": op]).increment()
    }

    /// The gauges, read at scrape time.
    public struct Sample: Sendable {
        public var host: HostSample
        /// Membership state -> nodes in it, as this node's view has them.
        public var nodesByState: [String: Int]
        /// Application state -> count, of the applications this node lists.
        public var applicationsByState: [String: Int]
        public var rejectedPeers: Int
        public var eventsKept: Int
        public init(host: HostSample, nodesByState: [String: Int], applicationsByState: [String: Int], rejectedPeers: Int, eventsKept: Int) {
            (self.host, self.nodesByState, self.applicationsByState) = (host, nodesByState, applicationsByState)
            (self.rejectedPeers, self.eventsKept) = (rejectedPeers, eventsKept)
        }
    }

    public func refresh(_ s: Sample) {
        gauge("ssi_node_up").set(1)
        for (i, window) in ["1m", "5m", "15m"].enumerated() where i < s.host.load.count {
            gauge("ssi_node_load", ["window": window]).set(s.host.load[i])
        }
        gauge("ssi_node_memory_total_bytes").set(Int64(clamping: s.host.memoryTotalBytes))
        gauge("ssi_node_memory_available_bytes").set(Int64(clamping: s.host.memoryAvailableBytes))
        // Every state is written, 0 included, so that a state nobody is in any more drops to 0
        // instead of keeping its last value.
        for state in ["online", "present", "failed", "possible"] {
            gauge("ssi_nodes", ["state": state]).set(s.nodesByState[state] ?? 0)
        }
        for state in Set(["running", "stopped", "zombie", "exited"]).union(s.applicationsByState.keys) {
            gauge("ssi_applications", ["state": state]).set(s.applicationsByState[state] ?? 0)
        }
        gauge("ssi_events_kept").set(s.eventsKept)
        let delta = lastRejected.withLock { last in
            defer { last = max(last, s.rejectedPeers) }
            return max(0, s.rejectedPeers - last)
        }
        counter("ssi_rpc_rejected_peers_total").increment(by: delta)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    public func text() -> String { registry.emitToString() }
}
