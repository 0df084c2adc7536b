import Logging
import SSIMembership
import SSISystem
import SSITransport
import Synchronization

/// KDDM on one node: named sets of objects with a home node each, cached copies and a
/// write-invalidate coherence protocol (docs/cluster.md). It puts together the owner side
/// (`KDDMOwner`, the coherence protocol), the client side (`KDDMClient`, cached copies and
/// grabs), the store (`EtcdStore`) and the RPC services between nodes; the subsystems that
/// keep their tables in a set act on its objects through `KDDMSetHooks`.
///
/// So a `put` that returned is in etcd (durable, replicated when etcd is), and a node that
/// cannot reach etcd, or the owner, cannot complete a write. Owners keep nothing that etcd
/// does not hold but the reader lists, so when the online set changes every node drops its
/// owner entries and its cached copies, and new owners reload from etcd on first touch.
public final class KDDM: Sendable {
    let rpc: RPCNode
    let membership: Membership
    let store: any KDDMStore
    let sets: SetCatalog
    let logger: Logger
    public let owner: KDDMOwner
    public let client: KDDMClient
    private let operationObserver = ClosureCell<(@Sendable (String) -> Void)?>(nil)

    public init(rpc: RPCNode, etcd: EtcdClient, membership: Membership, logger: Logger) {
        self.rpc = rpc
        self.membership = membership
        self.logger = logger
        store = EtcdStore(etcd: etcd, sessionPrefix: membership.prefix)
        sets = SetCatalog(store: store)
        owner = KDDMOwner(me: rpc.nodeID, view: membership, store: store, peers: RPCPeers(rpc: rpc), sets: sets, logger: logger)
        client = KDDMClient(rpc: rpc, view: membership, sets: sets, logger: logger)
    }

    /// Registers the RPC services (the owner's, and the invalidations a reader gets) and the
    /// membership subscription.
    public func start() {
        let (owner, client) = (self.owner, self.client)
        func serve(_ service: UInt16, _ body: @escaping @Sendable (ObjMsg, NodeID) async throws -> [UInt8]) {
            rpc.register(service) { from, p in try await body(try KDDMCoding.dec(ObjMsg.self, p), from) }
        }
        serve(KDDMService.read) { m, from in try KDDMCoding.enc(try await owner.read(m, from: from)) }
        serve(KDDMService.grab) { m, from in try KDDMCoding.enc(try await owner.grab(m, from: from)) }
        serve(KDDMService.put) { m, from in try KDDMCoding.enc(try await owner.put(m, from: from, delete: false)) }
        serve(KDDMService.remove) { m, from in try KDDMCoding.enc(try await owner.put(m, from: from, delete: true)) }
        serve(KDDMService.release) { m, from in await owner.release(m.key, from: from, grab: m.grab); return [] }
        serve(KDDMService.invalidate) { m, _ in await client.invalidateLocal(m.key); return [] }
        serve(KDDMService.state) { m, _ in try KDDMCoding.enc(try await owner.state(m.key)) }
        rpc.register(KDDMService.dropSet) { [self] _, p in
            await dropSetLocal(String(decoding: p, as: UTF8.self))
            return []
        }
        membership.subscribe { [self] events, _ in await viewChanged(events) }
    }

    /// The online set changed: owners may have moved. Owner entries of older views go (their
    /// waiters' grabs fail and are retried), every cached copy goes, and calls in flight to a
    /// node that failed or left end at once.
    func viewChanged(_ events: [MembershipEvent]) async {
        await owner.viewChanged()
        await client.dropCache()
        for e in events {
            if case .failed(let n) = e { rpc.peerFailed(n) }
            if case .removed(let n) = e { rpc.peerFailed(n) }
        }
    }

    // MARK: sets

    public func register(hooks h: any KDDMSetHooks, for set: String) { sets.register(h, for: set) }

    /// Makes a set, unless it exists: a set's rule never changes under the nodes that use it
    /// (two rules would mean two owners). Creating it again with the same rule is a no-op.
    public func createSet(_ name: String, rule: OwnerRule) async throws {
        guard !name.isEmpty, !name.contains("/") else {
            throw SSIError(.invalidArgument, "kddm: bad set name '\(name)'", hint: "a set's name is not empty and has no '/'")
        }
        if let old = try await store.createSet(KDDMSetInfo(name: name, rule: rule)) {
            sets.remember(old)
            guard old.info.rule == rule else {
                throw SSIError(.busy, "kddm: set '\(name)' exists with rule \(old.info.rule)", hint: "ssi kddm delete-set \(name) first to change it")
            }
            return
        }
        _ = try await sets.set(name, reload: true)
    }

    /// Deletes a set and every object in it, from etcd and from every node's memory. Refused
    /// while this node holds one of its objects grabbed. A node that holds one grabbed
    /// elsewhere cannot put it back: its put is fenced on a revision that no longer exists.
    public func deleteSet(_ name: String) async throws {
        _ = try await sets.set(name)
        if let k = await client.grabbedKey(in: name) {
            throw SSIError(.busy, "kddm: set '\(name)' cannot be deleted while node \(rpc.nodeID) holds \(k) grabbed", hint: "put or release it first")
        }
        try await store.deleteSet(name)
        await dropSetLocal(name)
        let others = membership.view.values.filter { $0.state == .online && $0.id != rpc.nodeID }.map(\.id)
        for n in others {
            do { _ = try await rpc.call(n, service: KDDMService.dropSet, Array(name.utf8), timeout: owner.timing.invalidateTimeout) } catch {
                // It may still serve copies of the deleted objects: as for a reader that does
                // not acknowledge an invalidation, take its lease away.
                logger.warning("kddm: node \(n) did not acknowledge the deletion of set \(name): \(error)")
                try await owner.fenceOut(n, for: "set \(name)")
            }
        }
    }

    /// Forgets a deleted set: cached copies, owner entries and the set itself.
    func dropSetLocal(_ name: String) async {
        await client.dropSet(name)
        await owner.dropSet(name)
        sets.forget(name)
    }

    public func listSets() async throws -> [KDDMSetInfo] {
        let all = try await store.sets()
        sets.replaceAll(all)
        return all.map(\.info).sorted { $0.name < $1.name }
    }

    public func objectCount(_ set: String) async throws -> Int { try await store.objectCount(set) }

    /// Every object of a set with its value, in id order (`ssi kddm list`, `ssi ps`): one
    /// range read of the store, so it sees every put that has returned (a put returns once
    /// durable) and nothing half-written; an object grabbed meanwhile shows its last put
    /// value, as a get would. Values pass through the set's import hook, as copies do.
    public func list(_ set: String) async throws -> [(id: UInt64, value: [UInt8])] {
        _ = try await sets.set(set)
        let hooks = sets.hooks(set)
        return try await store.objects(in: set).map { ($0.id, hooks?.import($0.value) ?? $0.value) }
    }

    // MARK: objects (the client side)

    /// A read copy: from the local cache when valid (no network), else from the owner.
    public func get(_ set: String, _ id: UInt64) async throws -> [UInt8]? { counted("get"); return try await client.get(set, id) }
    /// Exclusive write access; returns the current value. Must be followed by put or release.
    public func grab(_ set: String, _ id: UInt64, timeout: Duration = .seconds(10)) async throws -> [UInt8]? {
        counted("grab")
        return try await client.grab(set, id, timeout: timeout)
    }
    /// Writes the new value and releases the grab; returns once the value is durable.
    public func put(_ set: String, _ id: UInt64, _ value: [UInt8]) async throws { counted("put"); try await client.put(set, id, value) }
    /// Gives a grabbed object back unchanged.
    public func release(_ set: String, _ id: UInt64) async throws { try await client.release(set, id) }
    public func remove(_ set: String, _ id: UInt64) async throws { counted("remove"); try await client.remove(set, id) }
    /// Grab and put, again after a lost race or an unknown outcome: `ssi kddm put`.
    public func store(_ set: String, _ id: UInt64, _ value: [UInt8]) async throws { counted("store"); try await client.store(set, id, value) }
    /// `count` grab/put increments of a decimal counter: `ssi kddm incr`.
    public func increment(_ set: String, _ id: UInt64, count: Int) async throws -> Int {
        counted("increment")
        return try await client.increment(set, id, count: count)
    }
    public func state(_ set: String, _ id: UInt64) async throws -> KDDMObjectState { try await client.state(set, id) }
    /// Drops this node's cached copies (the next gets go to the owners).
    public func flush() async { await client.flush() }
    public func sync() async throws { try await client.sync() }

    /// Told of every object operation asked of this node (get, grab, put, store, remove,
    /// increment): the metrics (SSIObserve) count them.
    public func observeOperations(_ f: @escaping @Sendable (String) -> Void) { operationObserver.set(f) }
    private func counted(_ op: String) { operationObserver.value?(op) }
}
