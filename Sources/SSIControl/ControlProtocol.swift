import SSIKDDM
import SSIScheduler
import SSIMembership
import SSINetwork
import SSIObserve
import SSIProcessTable
import SSISystem
import SSITransport

// The control protocol between `ssi` and its node's `ssid`: on a unix stream socket, one
// request per connection, a JSON line (`ControlRequest`), answered by one JSON line
// (`ControlAnswer`). This file is the whole vocabulary. A subsystem adds its operations as one
// case of `ControlRequest` holding its own request type, and the replies they need; the daemon
// routes each request to the subsystem named by `ControlRequest.subsystem`.

/// What `ssi` can ask its daemon.
public enum ControlRequest: Codable, Sendable, Equatable {
    case membership(MembershipRequest)
    case kddm(KDDMRequest)
    case bench(BenchRequest)
    case scheduler(SchedulerRequest)
    case jobs(JobsRequest)
    case observe(ObserveRequest)
    case apps(AppsRequest)
    case network(NetworkRequest)

    /// The subsystem that answers it (`Subsystem.name` in the daemon).
    public var subsystem: String {
        switch self {
        case .membership: return "membership"
        case .kddm: return "kddm"
        case .bench: return "bench"
        case .scheduler: return "scheduler"
        case .jobs: return "jobs"
        case .observe: return "observe"
        case .apps: return "apps"
        case .network: return "network"
        }
    }
}

/// Membership (`ssi nodes`, `ssi cluster status`).
public enum MembershipRequest: Codable, Sendable, Equatable {
    /// The daemon's status and its view of the nodes.
    case status
    /// Present nodes become online; answers `.nodes` (those added).
    case add(NodeSelection)
    /// Online or failed nodes leave; answers `.nodes` (those removed).
    case remove(NodeSelection)
}

/// Kerrighed's `-n LIST | -c COUNT | -a`.
public enum NodeSelection: Codable, Sendable, Equatable {
    case nodes([NodeID])
    case count(Int)
    case all
}

/// KDDM (`ssi kddm`). Values travel as UTF-8 text, as the commands print them.
public enum KDDMRequest: Codable, Sendable, Equatable {
    /// Answers `.sets`.
    case sets
    case createSet(name: String, rule: OwnerRule)
    case deleteSet(name: String)
    /// Answers `.object`.
    case show(set: String, id: UInt64)
    /// Answers `.value` (nil: no such object).
    case get(set: String, id: UInt64)
    case put(set: String, id: UInt64, value: String)
    case remove(set: String, id: UInt64)
    /// Answers `.count`, the last value written.
    case increment(set: String, id: UInt64, count: Int)
    case flush
    /// Answers `.objects`: every object of the set, in id order.
    case list(set: String)
}

/// One object of a listing, its value as UTF-8 text.
public struct ObjectValue: Codable, Sendable, Equatable {
    public var id: UInt64
    public var value: String
    public init(id: UInt64, value: String) { (self.id, self.value) = (id, value) }
}

/// Cluster applications (`ssi run` with a daemon, `ps`, `caps`, `checkpoint`, `restart`,
/// `snapshots`, `logs`): asked of any node, answered by the one that must (the
/// application's node, or the restart's target), which the asked daemon reaches by RPC.
public enum AppsRequest: Codable, Sendable, Equatable {
    /// Answers `.application`. The caller's fds 0-2 may come along (SCM_RIGHTS).
    case launch(LaunchSpec)
    /// Answers `.applications`.
    case list
    /// Answers `.application`.
    case show(app: Int32)
    /// Changes such as "+CAN_MIGRATE", "-CAN_MIGRATE"; answers `.application`.
    case caps(app: Int32, changes: [String])
    /// Answers `.checkpointed`.
    case checkpoint(CheckpointSpec)
    /// Several applications frozen together, each dumped, all let go (or killed); answers
    /// `.checkpointedAll`.
    case checkpointTogether(TogetherSpec)
    /// `ssi checkpoint -f`; with `lockNetwork`, its address's traffic is held too (a step of
    /// checkpointTogether). Answers `.application`.
    case freeze(app: Int32, lockNetwork: Bool)
    /// `ssi checkpoint -u [SIG]`; answers `.application`.
    case unfreeze(app: Int32, signal: Int32?)
    /// Answers `.application`.
    case restart(RestartSpec)
    /// Answers `.catalogs` (nil: every application's).
    case snapshots(app: Int32?)
    /// Deletes one version on every node holding it; answers `.catalogs` (what remains).
    case deleteSnapshot(app: Int32, version: Int)
    /// Answers `.log`.
    case logs(app: Int32, offset: UInt64)
    /// Stop-and-copy migration; answers `.application`.
    case migrate(MigrateSpec)
    /// Sends a signal to the application's init on its node (ssi-init passes TERM, INT,
    /// HUP, USR1... on to the command; KILL ends the whole namespace); answers `.application`.
    case signal(app: Int32, signal: Int32)
}

/// The operators' view (`ssi events`, `ssi cluster status`, `ssi dashboard`; the CLI's reports).
public enum ObserveRequest: Codable, Sendable, Equatable {
    /// Keeps an event in the node's ring (the CLI's checkpoints and restarts); answers `.done`.
    case record(ObserveEvent)
    /// The cluster's events merged by time, the newest `limit`; answers `.events`.
    case events(limit: Int)
    /// Nodes, applications and events of the whole cluster; answers `.cluster`.
    case cluster
}

/// The cluster address and the port table (`ssi ports`, `ssi run --exclusive-port`).
public enum NetworkRequest: Codable, Sendable, Equatable {
    /// Answers `.ports`.
    case ports
    /// Claims a port for an application alone (nil: only checks that it could be); answers
    /// `.done` or fails naming the application that has it.
    case claim(port: UInt16, app: Int32?)
    /// Answers `.streams`: the connections between applications (`ssi streams`).
    case streams
}

/// The in-daemon part of `ssi-bench kddm`: measured against `peer`, the owner.
public struct BenchRequest: Codable, Sendable, Equatable {
    public var peer: NodeID
    public var iterations: Int
    public init(peer: NodeID, iterations: Int) { (self.peer, self.iterations) = (peer, iterations) }
}

/// The scheduler (`ssi sched`).
public enum SchedulerRequest: Codable, Sendable, Equatable {
    /// Answers `.schedulerStatus`.
    case status(logLines: Int)
    /// New settings (the file's text: the CLI reads it, the node may be another machine).
    /// Validated, then applied; a bad file changes nothing.
    case load(xml: String, source: String)
    /// `ssi sched set ELEMENT.PARAM VALUE`: one parameter of a loaded element.
    case set(element: String, parameter: String, value: String)
    /// Answers `.decision`: where `ssi run --node auto` should start an application.
    case place
}

/// What a request answers.
public enum ControlReply: Codable, Sendable {
    case done
    case status(DaemonStatus)
    case nodes([NodeID])
    case sets([SetSummary])
    case object(KDDMObjectState, asker: NodeID)
    case value(String?)
    case count(Int)
    case bench(BenchReport)
    case schedulerStatus(SchedulerStatus)
    case decision(Decision?)
    case job(JobRecord)
    case jobList([JobRecord])
    /// Events merged by time, and the nodes that did not answer (their events are missing).
    case events([ObserveEvent], missing: [NodeID])
    case cluster(ClusterView)
    case objects([ObjectValue])
    case application(AppRecord)
    case applications([AppRecord])
    case checkpointed(CheckpointDone)
    case checkpointedAll([CheckpointDone])
    case catalogs([SnapshotCatalog])
    case log(LogChunk)
    case ports(PortsView)
    case streams([StreamRow])
}

/// The line the daemon writes back.
public enum ControlAnswer: Codable, Sendable {
    case ok(ControlReply)
    case failed(SSIError)
}

public struct DaemonStatus: Codable, Sendable {
    public var node: NodeID
    public var session: UInt64
    public var pid: Int32
    public var nodes: [NodeInfo]
    public var cutOff: Bool
    /// RPC requests sent to other nodes since start.
    public var rpcCalls: Int
    /// Peers dropped for garbage or failed authentication since start.
    public var rejectedPeers: Int
    /// Milliseconds before this node's KDDM grants writes again after the last change of the
    /// online nodes (the grace in which nodes may still trust copies read under the previous
    /// view): a cluster just brought up is usable once every node says 0. nil: an older daemon.
    public var grantsInMs: Int?

    public init(node: NodeID, session: UInt64, pid: Int32, nodes: [NodeInfo], cutOff: Bool, rpcCalls: Int, rejectedPeers: Int, grantsInMs: Int? = nil) {
        (self.node, self.session, self.pid) = (node, session, pid)
        (self.nodes, self.cutOff, self.rpcCalls, self.rejectedPeers) = (nodes, cutOff, rpcCalls, rejectedPeers)
        self.grantsInMs = grantsInMs
    }

    public var online: Int { nodes.filter { $0.state == .online }.count }
}

public struct SetSummary: Codable, Sendable {
    public var name: String
    public var rule: OwnerRule
    public var objects: Int
    public init(name: String, rule: OwnerRule, objects: Int) {
        (self.name, self.rule, self.objects) = (name, rule, objects)
    }
}

public struct BenchReport: Codable, Sendable {
    public struct Series: Codable, Sendable {
        public var name: String
        public var n: Int
        public var p50us: Double
        public var p99us: Double
        public var opsPerSecond: Double
        public var rpcsPerOp: Double
        public init(name: String, n: Int, p50us: Double, p99us: Double, opsPerSecond: Double, rpcsPerOp: Double) {
            (self.name, self.n, self.p50us) = (name, n, p50us)
            (self.p99us, self.opsPerSecond, self.rpcsPerOp) = (p99us, opsPerSecond, rpcsPerOp)
        }

        /// The summary of one timing per operation, in microseconds.
        public init(name: String, micros: [Double], rpcs: Int) {
            let s = micros.sorted()
            func pct(_ p: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))] }
            let seconds: Double = s.reduce(0, +) / 1e6
            let ops: Double = seconds > 0 ? Double(s.count) / seconds : 0
            let perOp: Double = s.isEmpty ? 0 : Double(rpcs) / Double(s.count)
            self.init(name: name, n: s.count, p50us: pct(0.5), p99us: pct(0.99), opsPerSecond: ops, rpcsPerOp: perOp)
        }
    }
    public var from: NodeID
    public var to: NodeID
    public var results: [Series]
    public init(from: NodeID, to: NodeID, results: [Series]) {
        (self.from, self.to, self.results) = (from, to, results)
    }
}

extension ControlReply {
    public func streams() throws -> [StreamRow] { try expect("the table of streams") { if case .streams(let v) = $0 { v } else { nil } } }

    public func ports() throws -> PortsView { try expect("the port table") { if case .ports(let v) = $0 { v } else { nil } } }

    /// A reply of another case than the request answers: a daemon of another version.
    static func unexpected(_ r: ControlReply, _ wanted: String) -> SSIError {
        SSIError(.corrupt, "the daemon answered \(r) where \(wanted) was expected", hint: "are ssi and ssid from the same build?")
    }

    /// The value `extract` finds in this reply; else the error names what was `wanted`.
    private func expect<T>(_ wanted: String, _ extract: (ControlReply) -> T?) throws -> T {
        guard let v = extract(self) else { throw Self.unexpected(self, wanted) }
        return v
    }

    public func status() throws -> DaemonStatus { try expect("a status") { if case .status(let v) = $0 { v } else { nil } } }

    public func nodes() throws -> [NodeID] { try expect("a node list") { if case .nodes(let v) = $0 { v } else { nil } } }

    public func sets() throws -> [SetSummary] { try expect("a set list") { if case .sets(let v) = $0 { v } else { nil } } }

    public func object() throws -> (KDDMObjectState, asker: NodeID) {
        guard case .object(let o, let asker) = self else { throw Self.unexpected(self, "an object's state") }
        return (o, asker)
    }

    public func schedulerStatus() throws -> SchedulerStatus { try expect("the scheduler's status") { if case .schedulerStatus(let v) = $0 { v } else { nil } } }

    public func job() throws -> JobRecord { try expect("a job") { if case .job(let v) = $0 { v } else { nil } } }

    public func jobList() throws -> [JobRecord] { try expect("a job list") { if case .jobList(let v) = $0 { v } else { nil } } }

    public func decision() throws -> Decision? { try expect("a decision") { if case .decision(let v) = $0 { v } else { nil } } }

    public func value() throws -> String? { try expect("a value") { if case .value(let v) = $0 { v } else { nil } } }

    public func count() throws -> Int { try expect("a count") { if case .count(let v) = $0 { v } else { nil } } }

    public func events() throws -> (events: [ObserveEvent], missing: [NodeID]) {
        guard case .events(let e, let missing) = self else { throw Self.unexpected(self, "a list of events") }
        return (e, missing)
    }

    public func cluster() throws -> ClusterView { try expect("a cluster view") { if case .cluster(let v) = $0 { v } else { nil } } }

    public func application() throws -> AppRecord { try expect("an application") { if case .application(let v) = $0 { v } else { nil } } }

    public func applications() throws -> [AppRecord] { try expect("an application list") { if case .applications(let v) = $0 { v } else { nil } } }

    public func checkpointed() throws -> CheckpointDone { try expect("a checkpoint result") { if case .checkpointed(let v) = $0 { v } else { nil } } }

    public func checkpointedAll() throws -> [CheckpointDone] { try expect("checkpoint results") { if case .checkpointedAll(let v) = $0 { v } else { nil } } }

    public func catalogs() throws -> [SnapshotCatalog] { try expect("a snapshot list") { if case .catalogs(let v) = $0 { v } else { nil } } }

    public func log() throws -> LogChunk { try expect("a log") { if case .log(let v) = $0 { v } else { nil } } }

    public func objects() throws -> [ObjectValue] { try expect("an object listing") { if case .objects(let v) = $0 { v } else { nil } } }

    public func bench() throws -> BenchReport { try expect("a benchmark report") { if case .bench(let v) = $0 { v } else { nil } } }
}
