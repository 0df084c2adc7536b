import Foundation
import SSISystem
import SSITransport
import Synchronization

/// The observe RPC services (block 700) and the cluster-wide views built from them: each view
/// asks every node in the membership view at once, and a node that does not answer within
/// `nodeTimeout` is shown as such. Nothing waits longer than that, whatever the peer does: a
/// killed node, a cut link and a wedged daemon all cost the page the same bounded time.
public enum ObserveService {
    public static let block = ServiceBlock.observe
    /// This node's row of the node table (`NodeRow`, JSON).
    public static let summary = block.number(1)
    /// This node's events after a number (`EventsAsk` in, `[ObserveEvent]` out, JSON).
    public static let events = block.number(2)
    /// This node's applications (`[ApplicationRow]`, JSON).
    public static let applications = block.number(3)
}

struct EventsAsk: Codable {
    var after: UInt64
    var limit: Int
}

extension Observer {
    /// Registers the block-700 services. Runs before the node joins.
    public func registerServices() {
        rpc.register(ObserveService.summary) { [self] _, _ in try JSONEncoder().encode(await localRow()).bytes }
        rpc.register(ObserveService.events) { [self] _, p in
            let ask = try JSONDecoder().decode(EventsAsk.self, from: Data(p))
            return try JSONEncoder().encode(events.events(after: ask.after, limit: ask.limit)).bytes
        }
        rpc.register(ObserveService.applications) { [self] _, _ in try JSONEncoder().encode(await localApplications()).bytes }
    }

    /// The nodes to ask: every node in the view but those known failed (they are shown
    /// without being asked: their daemon is gone).
    func peers() -> [(NodeID, String, Bool)] {
        membership.view.values.sorted { $0.id < $1.id }.map { ($0.id, $0.state.rawValue, $0.state != .failed) }
    }

    /// Calls `service` on every node to ask, at once; nil for a node that did not answer.
    func askAll<T: Decodable & Sendable>(_ service: UInt16, _ payload: [UInt8] = [], as: T.Type) async -> [NodeID: Result<T, SSIError>] {
        let asks = peers().filter(\.2).map(\.0)
        let timeout = nodeTimeout
        return await withTaskGroup(of: (NodeID, Result<T, SSIError>).self) { g in
            for n in asks {
                g.addTask { [rpc] in
                    let r = await bounded(timeout, what: "node \(n)") {
                        try JSONDecoder().decode(T.self, from: Data(try await rpc.call(n, service: service, payload, timeout: timeout)))
                    }
                    return (n, r)
                }
            }
            var out: [NodeID: Result<T, SSIError>] = [:]
            for await (n, r) in g { out[n] = r }
            return out
        }
    }

    /// `/api/nodes`: every node of the view, with its own numbers when it answered.
    public func clusterNodes() async -> [NodeRow] {
        let answers = await askAll(ObserveService.summary, as: NodeRow.self)
        return peers().map { id, state, _ in
            let address = membership.view[id].map { "\($0.host):\($0.port)" } ?? ""
            switch answers[id] {
            case .success(var row)?:
                row.state = state
                return row
            case .failure(let e)?:
                var row = NodeRow(id: id, state: state, reachable: false, address: address)
                row.error = e.message
                return row
            case nil:
                var row = NodeRow(id: id, state: state, reachable: false, address: address)
                row.error = "not asked: the node is \(state)"
                return row
            }
        }
    }

    /// `/api/applications`: every answering node's applications, by node then id.
    public func clusterApplications() async -> [ApplicationRow] {
        let answers = await askAll(ObserveService.applications, as: [ApplicationRow].self)
        return answers.keys.sorted().flatMap { (try? answers[$0]?.get()) ?? [] }
    }

    /// `/api/events`, `ssi events`: every answering node's events merged by time, the newest
    /// `limit`.
    public func clusterEvents(limit: Int = 200) async -> [ObserveEvent] {
        let ask = (try? JSONEncoder().encode(EventsAsk(after: 0, limit: limit)).bytes) ?? []
        let answers = await askAll(ObserveService.events, ask, as: [ObserveEvent].self)
        return ObserveEvent.merge(answers.values.compactMap { try? $0.get() }, limit: limit)
    }

    /// `/api/cluster`: the three views at once.
    public func cluster(eventLimit: Int = 100) async -> ClusterView {
        async let nodes = clusterNodes()
        async let apps = clusterApplications()
        async let events = clusterEvents(limit: eventLimit)
        return ClusterView(node: node, session: session, time: Date().timeIntervalSince1970,
                           nodes: await nodes, applications: await apps, events: await events)
    }
}

/// Runs `body` but gives up after `timeout`: the caller gets a timeout error then even if
/// `body` never returns (a peer that accepted the connection and went silent). `body` is
/// cancelled and left to finish on its own.
public func bounded<T: Sendable>(_ timeout: Duration, what: String, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, SSIError> {
    let once = Once()
    return await withCheckedContinuation { (c: CheckedContinuation<Result<T, SSIError>, Never>) in
        let work = Task {
            let r: Result<T, SSIError>
            do { r = .success(try await body()) } catch { r = .failure(SSIError.wrapping(error)) }
            if once.claim() { c.resume(returning: r) }
        }
        Task {
            try? await Task.sleep(for: timeout)
            if once.claim() {
                work.cancel()
                c.resume(returning: .failure(SSIError(.timeout, "\(what) did not answer within \(timeout)",
                                                      hint: "it may be overloaded, cut off or stopped; ssi nodes status shows its state")))
            }
        }
    }
}

/// A flag that is won once: who resumes a continuation raced by two tasks.
final class Once: Sendable {
    private let done = Mutex(false)
    func claim() -> Bool { done.withLock { d in defer { d = true }; return !d } }
}

extension Data {
    var bytes: [UInt8] { [UInt8](self) }
}
