import Foundation
import Logging
import SSISystem
import SSITransport
import Synchronization

/// Node states, as in Kerrighed.
public enum NodeState: String, Sendable, Codable, Comparable {
    /// Known to the cluster (configured), but no daemon runs there.
    case possible
    /// Its daemon runs and holds a lease, but it is not a member (not added).
    case present
    /// A member: it owns objects and serves calls.
    case online
    /// A member whose daemon lost its lease: dead, or cut off from the others.
    case failed

    public static func < (a: NodeState, b: NodeState) -> Bool { a.rawValue < b.rawValue }
}

public struct NodeInfo: Sendable, Codable, Equatable {
    public var id: NodeID
    public var state: NodeState
    public var host: String
    public var port: Int
}

public enum MembershipEvent: Sendable, Equatable {
    case added(NodeID), removed(NodeID), failed(NodeID)
}

/// What KDDM decides on, read in one go: the online set and how far this node may trust it.
public struct ViewSnapshot: Sendable {
    /// Online members, sorted: the input of the KDDM owner rules.
    public var online: [NodeID]
    /// Names the online set and the incarnation (lease) of each member: two nodes with the
    /// same id agree on who owns what.
    public var viewID: UInt64
    /// The etcd conditions under which this view is still current.
    public var fence: EtcdClient.Fence
    /// This node's lease.
    public var lease: Int64
    /// Until when this node may serve cached copies: its lease is surely alive in etcd, and
    /// its view is recent enough that a change it has not seen yet cannot have been acted on.
    public var trustedUntil: ContinuousClock.Instant
    /// From when this node, as an owner, may hand out write access: every node that read
    /// under the previous view has stopped trusting its copies by then.
    public var grantsFrom: ContinuousClock.Instant

    public init(online: [NodeID], viewID: UInt64, fence: EtcdClient.Fence, lease: Int64,
                trustedUntil: ContinuousClock.Instant, grantsFrom: ContinuousClock.Instant) {
        (self.online, self.viewID, self.fence) = (online, viewID, fence)
        (self.lease, self.trustedUntil, self.grantsFrom) = (lease, trustedUntil, grantsFrom)
    }
}

/// Where a daemon stands in etcd. Keys under `/ssi/<session>/`:
///
///     possible/<id>   the node is part of the cluster's configuration (no lease)
///     present/<id>    {"id","host","port"} under the daemon's lease (TTL 2 s)
///     online/<id>     an administrator (or autojoin) added the node (no lease)
///
/// A node's state follows: present+online = online, present only = present, online without
/// present = failed, possible only = possible. The lease, kept alive every 300 ms, expires
/// 2 s after the daemon's last keep-alive; etcd revokes expired leases every 500 ms and every
/// daemon reads the view every 100 ms, so a killed daemon is seen failed within ~2.6 s.
public final class Membership: Sendable {
    public let me: NodeID
    public let prefix: String
    let etcd: EtcdClient
    let logger: Logger
    let host: String
    let port: Int
    public static let leaseTTL = 2
    /// A node stops trusting its lease this long before the lease could have expired in etcd:
    /// room for the two clocks' rates to differ over a TTL.
    public static let leaseMargin: Duration = .milliseconds(200)
    /// After the online set changes, an owner waits this long before it hands out write
    /// access; a node trusts its view (to serve cached copies) for this long minus
    /// `viewMargin` after it sent the request that read it. Views are read every 100 ms.
    public static let viewGrace: Duration = .milliseconds(600)
    public static let viewMargin: Duration = .milliseconds(100)

    private struct State {
        var view: [NodeID: NodeInfo] = [:]
        /// The online members, sorted (kept with the view: a cached get reads it).
        var online: [NodeID] = []
        var lease: Int64 = 0
        var lastContact: ContinuousClock.Instant = .now
        var subscribers: [@Sendable ([MembershipEvent], [NodeID: NodeInfo]) async -> Void] = []
        var viewVersion = 0
        var viewID: UInt64 = 0
        var viewRevision: Int64 = 0
        var fence = EtcdClient.Fence.none
        /// When the request that read the current view was sent.
        var viewReadAt: ContinuousClock.Instant = .now - .seconds(3600)
        /// When this node learnt that the online set changed (the reply's arrival).
        var onlineChangedAt: ContinuousClock.Instant = .now
        /// Before this instant our lease is alive in etcd: etcd extends a lease to TTL from
        /// when it handles the keep-alive, which is after we sent it.
        var leaseValidUntil: ContinuousClock.Instant = .now - .seconds(3600)
    }
    private let state = Mutex(State())

    public init(me: NodeID, session: UInt64, etcd: EtcdClient, host: String, port: Int, logger: Logger) {
        self.me = me
        self.prefix = "/ssi/\(session)/"
        self.etcd = etcd
        self.host = host
        self.port = port
        self.logger = logger
    }

    public func subscribe(_ f: @escaping @Sendable ([MembershipEvent], [NodeID: NodeInfo]) async -> Void) {
        state.withLock { $0.subscribers.append(f) }
    }

    public var view: [NodeID: NodeInfo] { state.withLock { $0.view } }
    public var viewVersion: Int { state.withLock { $0.viewVersion } }

    /// Online members, sorted: the input of the KDDM owner rules.
    public var online: [NodeID] { state.withLock { $0.online } }

    public var snapshot: ViewSnapshot {
        state.withLock { s in
            ViewSnapshot(online: s.online, viewID: s.viewID, fence: s.fence,
                         lease: s.lease, trustedUntil: min(s.leaseValidUntil, s.viewReadAt + Self.viewGrace - Self.viewMargin),
                         grantsFrom: s.onlineChangedAt + Self.viewGrace)
        }
    }

    /// Milliseconds until KDDM owners on this node grant writes again after the last change
    /// of the online nodes (`ViewSnapshot.grantsFrom`); 0 when they do now.
    public var grantsIn: Int {
        let left = snapshot.grantsFrom - ContinuousClock.now
        return left > .zero ? Int(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1 : 0
    }

    /// True when this node has not heard from etcd for over a second: it may be cut off, and
    /// must not trust what it caches.
    public var cutOff: Bool {
        state.withLock { ContinuousClock.now - $0.lastContact > .seconds(1) }
    }

    /// Registers this node (possible, present under a fresh lease, and online when `join`).
    public func register(join: Bool) async throws {
        try await etcd.put(prefix + "possible/\(me)", Array("1".utf8))
        try await renewLease()
        if join { try await etcd.put(prefix + "online/\(me)", Array("1".utf8)) }
    }

    private func renewLease() async throws {
        let sent = ContinuousClock.now
        let lease = try await etcd.grantLease(ttl: Self.leaseTTL)
        let info = try JSONEncoder().encode(NodeInfo(id: me, state: .present, host: host, port: port))
        try await etcd.put(prefix + "present/\(me)", Array(info), lease: lease)
        state.withLock {
            $0.lease = lease
            $0.lastContact = .now
            $0.leaseValidUntil = sent + .seconds(Self.leaseTTL) - Self.leaseMargin
        }
        logger.info("membership: node \(me) present under lease \(lease)")
    }

    /// Keeps the lease alive and refreshes the view until cancelled; then revokes the lease so
    /// that a clean shutdown is seen at once.
    public func run() async {
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.keepAliveLoop() }
            g.addTask { await self.watchLoop() }
            await g.waitForAll()
        }
        let lease = state.withLock { $0.lease }
        _ = try? await etcd.revoke(lease)
        try? await etcd.delete(prefix + "present/\(me)")
    }

    private func keepAliveLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(300))
            let lease = state.withLock { $0.lease }
            let sent = ContinuousClock.now
            do {
                if try await etcd.keepAlive(lease) {
                    state.withLock {
                        $0.lastContact = .now
                        if $0.lease == lease { $0.leaseValidUntil = max($0.leaseValidUntil, sent + .seconds(Self.leaseTTL) - Self.leaseMargin) }
                    }
                } else {
                    logger.warning("membership: lease \(lease) expired (we were cut off); registering again")
                    try await renewLease()
                }
            } catch {
                logger.debug("membership: keep-alive failed: \(error)")
            }
        }
    }

    private func watchLoop() async {
        while !Task.isCancelled {
            await refresh()
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Reads the view once and notifies subscribers of what changed.
    public func refresh() async {
        // Only the membership keys: online/ < possible/ < present/ sort together, and the
        // KDDM objects under kddm/ stay out of the 100 ms poll.
        let kvs: [EtcdClient.KeyValue], revision: Int64
        let sent = ContinuousClock.now
        do {
            (kvs, revision) = try await etcd.list(from: prefix + "online/", to: EtcdClient.prefixEnd(prefix + "present/"))
        } catch {
            return
        }
        let (view, hash, fence) = Self.view(from: kvs, prefix: prefix, revision: revision)
        let (events, subs) = state.withLock { s -> ([MembershipEvent], [@Sendable ([MembershipEvent], [NodeID: NodeInfo]) async -> Void]) in
            s.lastContact = .now
            // Refreshes may overlap (the poll, a caller's retry): never go back to an older view.
            guard revision >= s.viewRevision else { return ([], []) }
            s.viewRevision = revision
            s.viewReadAt = max(s.viewReadAt, sent)
            s.fence = fence
            let idChanged = hash != s.viewID
            if idChanged {
                s.viewID = hash
                s.onlineChangedAt = .now
            }
            var ev: [MembershipEvent] = []
            for (id, n) in view {
                let old = s.view[id]?.state
                if n.state == .online && old != .online { ev.append(.added(id)) }
                if n.state == .failed && old == .online { ev.append(.failed(id)) }
                if n.state == .present && old == .online { ev.append(.removed(id)) }
            }
            for (id, n) in s.view where view[id] == nil && n.state == .online { ev.append(.removed(id)) }
            let addrChanged = view.contains { s.view[$0.key]?.port != $0.value.port || s.view[$0.key]?.host != $0.value.host }
            s.view = view
            s.online = view.values.filter { $0.state == .online }.map(\.id).sorted()
            let changed = !ev.isEmpty || addrChanged || idChanged
            if changed { s.viewVersion += 1 }
            return (ev, changed ? s.subscribers : [])
        }
        for e in events { logger.info("membership: \(e)") }
        for f in subs { await f(events, view) }
    }

    /// The view in the membership keys read at `revision`: each node's state, the view's id
    /// (a hash of each member's online and present keys with their mod revisions) and the
    /// fence that holds while etcd's view is still this one.
    static func view(from kvs: [EtcdClient.KeyValue], prefix: String, revision: Int64) -> (view: [NodeID: NodeInfo], id: UInt64, fence: EtcdClient.Fence) {
        var possible = Set<NodeID>(), online = Set<NodeID>(), present: [NodeID: NodeInfo] = [:]
        var revs: [String: Int64] = [:]
        for kv in kvs {
            let rest = kv.key.dropFirst(prefix.count)
            let parts = rest.split(separator: "/")
            guard parts.count == 2, let id = NodeID(parts[1]) else { continue }
            switch parts[0] {
            case "possible": possible.insert(id)
            case "online": online.insert(id); revs[kv.key] = kv.modRevision
            case "present":
                present[id] = try? JSONDecoder().decode(NodeInfo.self, from: Data(kv.value))
                revs[kv.key] = kv.modRevision
            default: break
            }
        }
        // The view's identity and fence: each member's online and present keys with their mod
        // revisions. A daemon that took a new lease put its present key again: a new
        // incarnation, even when it restarted before its old lease expired (the key kept its
        // create revision).
        let members = online.filter { present[$0] != nil }.sorted()
        var fenceKeys: [String: Int64] = [:]
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a
        for id in members {
            for k in [prefix + "online/\(id)", prefix + "present/\(id)"] {
                fenceKeys[k] = revs[k] ?? 0
                for b in withUnsafeBytes(of: (revs[k] ?? 0).littleEndian, Array.init) + [UInt8(id)] {
                    hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3
                }
            }
        }
        let fence = EtcdClient.Fence(keys: fenceKeys, prefixes: [prefix + "online/", prefix + "present/"], revision: revision)
        var view: [NodeID: NodeInfo] = [:]
        for id in possible.union(online).union(present.keys) {
            let p = present[id]
            let st: NodeState = p != nil ? (online.contains(id) ? .online : .present) : (online.contains(id) ? .failed : .possible)
            view[id] = NodeInfo(id: id, state: st, host: p?.host ?? "", port: p?.port ?? 0)
        }
        return (view, hash, fence)
    }
}

/// Parses Kerrighed's node lists: "2,3,6-10".
public func parseNodeList(_ s: String) throws -> [NodeID] {
    var out: [NodeID] = []
    for part in s.split(separator: ",") {
        let r = part.split(separator: "-", maxSplits: 1)
        if r.count == 2, let a = NodeID(r[0]), let b = NodeID(r[1]), a <= b {
            out += Array(a...b)
        } else if r.count == 1, let a = NodeID(r[0]) {
            out.append(a)
        } else {
            throw SSIError(.invalidArgument, "bad node list '\(s)'", hint: "use ids 0..255 like 2,3,6-10")
        }
    }
    return out
}
