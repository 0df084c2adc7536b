import Foundation
import Logging
import Synchronization

/// How a set picks the home (owner) node of an object.
public enum OwnerRule: Sendable, Codable, Equatable, CustomStringConvertible {
    /// A fixed node; when it is not online, the hash rule applies.
    case fixed(NodeID)
    /// A hash of the id over the online nodes.
    case hash

    public init(parsing s: String) throws {
        if s == "hash" { self = .hash; return }
        if s.hasPrefix("fixed:"), let n = NodeID(s.dropFirst(6)) { self = .fixed(n); return }
        throw ClusterError.config("bad owner rule '\(s)': use hash or fixed:NODE")
    }

    public var description: String {
        switch self {
        case .hash: return "hash"
        case .fixed(let n): return "fixed:\(n)"
        }
    }

    public func owner(of id: UInt64, online: [NodeID]) -> NodeID? {
        guard !online.isEmpty else { return nil }
        if case .fixed(let n) = self, online.contains(n) { return n }
        let h = (id &* 0x9E37_79B9_7F4A_7C15) >> 32
        return online[Int(h % UInt64(online.count))]
    }
}

/// The hooks through which the subsystem that owns a set acts on its objects.
public protocol KDDMSetHooks: Sendable {
    /// The owner touches an object that does not exist yet: its first value, or nil to leave it
    /// missing.
    func firstTouch(id: UInt64) -> [UInt8]?
    /// Turns a value into the bytes that are stored and shipped (export) and back (import).
    func export(_ value: [UInt8]) -> [UInt8]
    func `import`(_ bytes: [UInt8]) -> [UInt8]
    /// A node's cached copy was invalidated.
    func invalidated(id: UInt64, on node: NodeID)
}

public struct DefaultHooks: KDDMSetHooks {
    public init() {}
    public func firstTouch(id: UInt64) -> [UInt8]? { nil }
    public func export(_ value: [UInt8]) -> [UInt8] { value }
    public func `import`(_ bytes: [UInt8]) -> [UInt8] { bytes }
    public func invalidated(id: UInt64, on node: NodeID) {}
}

public struct KDDMSetInfo: Sendable, Codable, Equatable {
    public var name: String
    public var rule: OwnerRule
}

/// The RPC services of KDDM.
public enum KDDMService {
    public static let read: UInt16 = 101
    public static let grab: UInt16 = 102
    public static let put: UInt16 = 103
    public static let release: UInt16 = 104
    public static let invalidate: UInt16 = 105
    public static let remove: UInt16 = 106
    public static let state: UInt16 = 107
    public static let dropSet: UInt16 = 108
    public static let ping: UInt16 = 1
}

struct ObjKey: Hashable, Sendable, Codable, CustomStringConvertible {
    var set: String
    var id: UInt64
    var description: String { "\(set)/\(id)" }
}

struct ObjMsg: Codable, Sendable {
    var key: ObjKey
    var value: [UInt8]? = nil
    var rev: Int64 = 0
}

/// What `ssi kddm show` prints: the owner's coherence state plus the asking node's.
public struct KDDMObjectState: Sendable, Codable {
    public var set: String
    public var id: UInt64
    public var owner: NodeID
    public var exists: Bool
    public var value: [UInt8]?
    public var revision: Int64
    public var readers: [NodeID]
    public var writer: NodeID?
    public var waiting: Int
    public var localCopy: String
}

/// KDDM on one node: the owner side (home of the objects that the owner rules give this node)
/// and the client side (this node's cached copies and grabs).
///
/// Coherence is write-invalidate, many readers or one writer: `get` asks the owner for a read
/// copy (the owner records the reader), `grab` waits until no one else writes, invalidates
/// every read copy, then hands the object over; `put` sends the new value back to the owner,
/// which writes it to etcd under a compare-on-revision transaction before it answers. So a
/// `put` that returned is in etcd (durable, replicated when etcd is), and a node that cannot
/// reach etcd, or the owner, cannot complete a write. Owners keep nothing that etcd does not
/// hold but the reader lists, so when the online set changes every node drops its owner
/// entries and its cached copies, and new owners reload from etcd on first touch.
public actor KDDM {
    let rpc: RPCNode
    let etcd: EtcdClient
    let membership: Membership
    let logger: Logger
    let prefix: String

    // Owner side.
    struct Entry {
        var value: [UInt8]?
        var rev: Int64
        var readers: Set<NodeID> = []
        var writer: NodeID?
        var writeWaiters: [(NodeID, CheckedContinuation<Void, Never>)] = []
        var readWaiters: [CheckedContinuation<Void, Never>] = []
    }
    var entries: [ObjKey: Entry] = [:]

    // Client side.
    var cache: [ObjKey: (value: [UInt8]?, rev: Int64)] = [:]
    var epochs: [ObjKey: Int] = [:]
    var globalEpoch = 0
    var grabbed: [ObjKey: (owner: NodeID, rev: Int64)] = [:]

    var sets: [String: KDDMSetInfo] = [:]
    var hooks: [String: any KDDMSetHooks] = [:]

    public init(rpc: RPCNode, etcd: EtcdClient, membership: Membership, logger: Logger) {
        self.rpc = rpc
        self.etcd = etcd
        self.membership = membership
        self.logger = logger
        self.prefix = membership.prefix + "kddm/"
    }

    /// Registers the RPC services and the membership subscription.
    public nonisolated func start() {
        let coder = JSONDecoder()
        rpc.registerInline(KDDMService.ping) { _, p in p }
        rpc.register(KDDMService.read) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            return try Self.enc(try await ownerRead(m.key, from: from))
        }
        rpc.register(KDDMService.grab) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            return try Self.enc(try await ownerGrab(m.key, from: from))
        }
        rpc.register(KDDMService.put) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            return try Self.enc(try await ownerPut(m, from: from, delete: false))
        }
        rpc.register(KDDMService.remove) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            return try Self.enc(try await ownerPut(m, from: from, delete: true))
        }
        rpc.register(KDDMService.release) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            await ownerRelease(m.key, from: from)
            return []
        }
        rpc.register(KDDMService.invalidate) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            await invalidateLocal(m.key)
            return []
        }
        rpc.register(KDDMService.dropSet) { [self] _, p in
            await dropSetLocal(String(decoding: p, as: UTF8.self))
            return []
        }
        rpc.register(KDDMService.state) { [self] _, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            return try Self.enc(try await ownerState(m.key))
        }
        membership.subscribe { [self] events, _ in
            await viewChanged(events)
        }
    }

    static func enc<T: Encodable>(_ v: T) throws -> [UInt8] { Array(try JSONEncoder().encode(v)) }
    static func dec<T: Decodable>(_ t: T.Type, _ b: [UInt8]) throws -> T { try JSONDecoder().decode(t, from: Data(b)) }

    // MARK: sets

    public func register(hooks h: any KDDMSetHooks, for set: String) { hooks[set] = h }

    public func createSet(_ name: String, rule: OwnerRule) async throws {
        guard !name.isEmpty, !name.contains("/") else { throw ClusterError.kddm("bad set name '\(name)'") }
        let info = KDDMSetInfo(name: name, rule: rule)
        try await etcd.put(prefix + "sets/\(name)", try Self.enc(info))
        sets[name] = info
    }

    /// Deletes a set and every object in it, from etcd and from every node's memory. Refused
    /// while this node holds one of its objects grabbed. A node that holds one grabbed
    /// elsewhere cannot put it back: its put is fenced on a revision that no longer exists.
    public func deleteSet(_ name: String) async throws {
        _ = try await set(name)
        if let k = grabbed.keys.first(where: { $0.set == name }) {
            throw ClusterError.kddm("set '\(name)' cannot be deleted while this node holds \(k) grabbed: put or release it first")
        }
        // Objects first, then the set: a delete cut short leaves an empty set, and running it
        // again finishes the job.
        try await etcd.delete(prefix: prefix + "obj/\(name)/")
        try await etcd.delete(prefix + "sets/\(name)")
        dropSetLocal(name)
        let others = membership.view.values.filter { $0.state == .online && $0.id != rpc.nodeID }.map(\.id)
        for n in others {
            do { _ = try await rpc.call(n, service: KDDMService.dropSet, Array(name.utf8), timeout: .seconds(1)) } catch {
                // It is deleted in etcd; a node that did not hear of it drops its copies when
                // the online set changes, as for any failed node.
                logger.warning("kddm: node \(n) did not acknowledge the deletion of set \(name): \(error)")
            }
        }
    }

    /// Forgets a deleted set: cached copies and idle owner entries.
    func dropSetLocal(_ name: String) {
        for k in cache.keys where k.set == name { invalidateLocal(k) }
        for (k, e) in entries where k.set == name && e.writer == nil && e.writeWaiters.isEmpty && e.readWaiters.isEmpty { entries[k] = nil }
        sets[name] = nil
    }

    public func listSets() async throws -> [KDDMSetInfo] {
        let kvs = try await etcd.list(prefix: prefix + "sets/")
        for kv in kvs { if let s = try? Self.dec(KDDMSetInfo.self, kv.value) { sets[s.name] = s } }
        return sets.values.sorted { $0.name < $1.name }
    }

    func set(_ name: String) async throws -> KDDMSetInfo {
        if let s = sets[name] { return s }
        guard let kv = try await etcd.get(prefix + "sets/\(name)") else {
            throw ClusterError.kddm("no set '\(name)' (ssi kddm sets lists them; ssi kddm create-set makes one)")
        }
        let s = try Self.dec(KDDMSetInfo.self, kv.value)
        sets[name] = s
        return s
    }

    public func objectCount(_ set: String) async throws -> Int {
        try await etcd.list(prefix: prefix + "obj/\(set)/").count
    }

    func owner(_ key: ObjKey) async throws -> NodeID {
        let s = try await set(key.set)
        guard let o = s.rule.owner(of: key.id, online: membership.online) else {
            throw ClusterError.kddm("no online node to own \(key) (is this node online? ssi nodes status)")
        }
        return o
    }

    func etcdKey(_ k: ObjKey) -> String { prefix + "obj/\(k.set)/" + String(format: "%016llx", k.id) }

    // MARK: owner side

    private func load(_ key: ObjKey) async throws -> Entry {
        if let e = entries[key] { return e }
        var e: Entry
        if let kv = try await etcd.get(etcdKey(key)) {
            e = Entry(value: hooks[key.set]?.import(kv.value) ?? kv.value, rev: kv.modRevision)
        } else if let first = hooks[key.set]?.firstTouch(id: key.id) {
            e = Entry(value: first, rev: 0)
        } else {
            e = Entry(value: nil, rev: 0)
        }
        if let again = entries[key] { return again }  // loaded meanwhile (actor reentrancy)
        e.readers = []
        entries[key] = e
        return e
    }

    private func checkOwner(_ key: ObjKey) async throws {
        let o = try await owner(key)
        guard o == rpc.nodeID else { throw ClusterError.kddm("node \(rpc.nodeID) \(Self.notOwnerMarker) \(key) (node \(o) is)") }
    }

    func ownerRead(_ key: ObjKey, from: NodeID) async throws -> ObjMsg {
        try await checkOwner(key)
        _ = try await load(key)
        while let e = entries[key], e.writer != nil {
            await withCheckedContinuation { k in entries[key]?.readWaiters.append(k) }
        }
        if entries[key] == nil { _ = try await load(key) }
        entries[key]!.readers.insert(from)
        let e = entries[key]!
        return ObjMsg(key: key, value: e.value, rev: e.rev)
    }

    func ownerGrab(_ key: ObjKey, from: NodeID) async throws -> ObjMsg {
        try await checkOwner(key)
        _ = try await load(key)
        if entries[key]!.writer == nil || entries[key]!.writer == from {
            entries[key]!.writer = from
        } else {
            // Hand-off: the releaser makes us the writer before it resumes us.
            await withCheckedContinuation { k in entries[key]!.writeWaiters.append((from, k)) }
        }
        if entries[key] == nil {  // the view changed while we waited
            throw ClusterError.kddm("ownership of \(key) moved during the grab; retry")
        }
        let others = entries[key]!.readers.subtracting([from])
        entries[key]!.readers = []
        await withTaskGroup(of: Void.self) { g in
            for n in others {
                g.addTask {
                    _ = try? await self.rpc.call(n, service: KDDMService.invalidate, try Self.enc(ObjMsg(key: key)), timeout: .seconds(1))
                }
            }
        }
        let e = entries[key]!
        return ObjMsg(key: key, value: e.value, rev: e.rev)
    }

    func ownerPut(_ m: ObjMsg, from: NodeID, delete: Bool) async throws -> ObjMsg {
        try await checkOwner(m.key)
        _ = try await load(m.key)
        if let w = entries[m.key]?.writer, w != from {
            throw ClusterError.kddm("\(m.key) is grabbed by node \(w), not by node \(from)")
        }
        let key = etcdKey(m.key)
        var newRev: Int64? = nil
        do {
            if delete {
                newRev = try await etcd.compareAndDelete(key, expected: m.rev) ? 0 : nil
            } else {
                let bytes = hooks[m.key.set]?.export(m.value ?? []) ?? (m.value ?? [])
                newRev = try await etcd.compareAndPut(key, expected: m.rev, bytes)
            }
        } catch {
            ownerRelease(m.key, from: from)
            throw ClusterError.kddm("write of \(m.key) not done: \(error)")
        }
        guard let rev = newRev else {
            entries[m.key] = nil  // someone wrote under another owner: reload
            throw ClusterError.kddm("write of \(m.key) lost a race (revision \(m.rev) is stale); grab it again")
        }
        if entries[m.key] != nil {
            entries[m.key]!.value = delete ? nil : m.value
            entries[m.key]!.rev = rev
            entries[m.key]!.readers = delete ? [] : [from]
        }
        ownerRelease(m.key, from: from)
        return ObjMsg(key: m.key, value: delete ? nil : m.value, rev: rev)
    }

    func ownerRelease(_ key: ObjKey, from: NodeID) {
        guard entries[key] != nil, entries[key]!.writer == from else { return }
        if !entries[key]!.writeWaiters.isEmpty {
            let (n, k) = entries[key]!.writeWaiters.removeFirst()
            entries[key]!.writer = n
            k.resume()
        } else {
            entries[key]!.writer = nil
            let rs = entries[key]!.readWaiters
            entries[key]!.readWaiters = []
            for k in rs { k.resume() }
        }
    }

    func ownerState(_ key: ObjKey) async throws -> KDDMObjectState {
        try await checkOwner(key)
        let e = try await load(key)
        return KDDMObjectState(set: key.set, id: key.id, owner: rpc.nodeID, exists: e.value != nil, value: e.value, revision: e.rev,
                               readers: e.readers.sorted(), writer: e.writer, waiting: e.writeWaiters.count, localCopy: "")
    }

    /// The online set changed: owners may have moved. Drop owner entries (waking their waiters,
    /// whose grabs then fail and are retried) and every cached copy.
    func viewChanged(_ events: [MembershipEvent]) {
        let old = entries
        entries = [:]
        for (_, e) in old {
            for (_, k) in e.writeWaiters { k.resume() }
            for k in e.readWaiters { k.resume() }
        }
        dropCache()
        for e in events {
            if case .failed(let n) = e { rpc.peerFailed(n) }
            if case .removed(let n) = e { rpc.peerFailed(n) }
        }
    }

    func dropCache() {
        cache = [:]
        globalEpoch += 1
    }

    func invalidateLocal(_ key: ObjKey) {
        cache[key] = nil
        epochs[key, default: 0] += 1
        hooks[key.set]?.invalidated(id: key.id, on: rpc.nodeID)
    }

    // MARK: client side

    /// Runs `body` against the object's owner. Nodes read the view up to 100 ms apart, so the
    /// node we picked may not yet agree that it owns the object: read the view again and
    /// retry, for up to a second.
    func atOwner<T: Sendable>(_ key: ObjKey, _ body: (NodeID) async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            let o = try await owner(key)
            do {
                return try await body(o)
            } catch let RPCError.remote(text) where text.contains(Self.notOwnerMarker) && attempt < 20 {
                attempt += 1
                await membership.refresh()
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    static let notOwnerMarker = "is not the owner of"

    /// A node that has lost etcd may be cut off from the others: it fails at once rather than
    /// waiting for a deadline (its writes could not complete anyway: the owner writes to etcd).
    func checkReachable() throws {
        if membership.cutOff {
            dropCache()
            throw ClusterError.kddm("node \(rpc.nodeID) cannot reach the membership service; it may be cut off from the cluster, so it can neither read nor write (retry when its network is back)")
        }
    }

    /// A read copy: from the local cache when valid (no network), else from the owner.
    public func get(_ set: String, _ id: UInt64) async throws -> [UInt8]? {
        let key = ObjKey(set: set, id: id)
        try checkReachable()
        if let c = cache[key] { return c.value }
        let (e, g) = (epochs[key, default: 0], globalEpoch)
        let r = try await atOwner(key) { o in
            try Self.dec(ObjMsg.self, try await self.rpc.call(o, service: KDDMService.read, try Self.enc(ObjMsg(key: key))))
        }
        if epochs[key, default: 0] == e && globalEpoch == g && grabbed[key] == nil { cache[key] = (r.value, r.rev) }
        return r.value
    }

    /// Exclusive write access; returns the current value. Must be followed by put or release.
    public func grab(_ set: String, _ id: UInt64, timeout: Duration = .seconds(10)) async throws -> [UInt8]? {
        let key = ObjKey(set: set, id: id)
        guard grabbed[key] == nil else { throw ClusterError.kddm("\(key) is already grabbed on this node") }
        try checkReachable()
        var o = try await owner(key)
        let r: ObjMsg
        do {
            r = try await atOwner(key) { owner in
                o = owner
                return try Self.dec(ObjMsg.self, try await self.rpc.call(owner, service: KDDMService.grab, try Self.enc(ObjMsg(key: key)), timeout: timeout))
            }
        } catch RPCError.deadlineExceeded(let n, let s) {
            // The owner may grant it later: give it back so that no one waits for us forever.
            _ = try? await rpc.call(o, service: KDDMService.release, try Self.enc(ObjMsg(key: key)), timeout: .seconds(1))
            throw RPCError.deadlineExceeded(n, service: s)
        }
        cache[key] = nil
        grabbed[key] = (o, r.rev)
        return r.value
    }

    /// Writes the new value and releases the grab. Returns once the value is durable.
    public func put(_ set: String, _ id: UInt64, _ value: [UInt8]) async throws {
        let key = ObjKey(set: set, id: id)
        guard let g = grabbed.removeValue(forKey: key) else { throw ClusterError.kddm("put of \(key) without a grab") }
        try checkReachable()
        let e = epochs[key, default: 0]
        // To the owner of now: if ownership moved since the grab, the new owner accepts the
        // value only if etcd still holds the revision we grabbed.
        _ = g.owner
        let r = try await atOwner(key) { o in
            try Self.dec(ObjMsg.self, try await self.rpc.call(o, service: KDDMService.put, try Self.enc(ObjMsg(key: key, value: value, rev: g.rev))))
        }
        if epochs[key, default: 0] == e { cache[key] = (value, r.rev) }
    }

    /// Gives a grabbed object back unchanged.
    public func release(_ set: String, _ id: UInt64) async throws {
        let key = ObjKey(set: set, id: id)
        guard let g = grabbed.removeValue(forKey: key) else { return }
        _ = try await rpc.call(g.owner, service: KDDMService.release, try Self.enc(ObjMsg(key: key)))
    }

    /// Removes an object (grab, then delete at the owner).
    public func remove(_ set: String, _ id: UInt64) async throws {
        _ = try await grab(set, id)
        let key = ObjKey(set: set, id: id)
        let g = grabbed.removeValue(forKey: key)!
        _ = try await rpc.call(g.owner, service: KDDMService.remove, try Self.enc(ObjMsg(key: key, rev: g.rev)))
        cache[key] = nil
    }

    /// Drops this node's cached copies (the next gets go to the owners).
    public func flush() { dropCache() }

    /// Puts are write-through: a put returns once the owner's etcd transaction is committed,
    /// so this node never holds a written value that is not durable. What sync has left to do
    /// is give back every object this node still holds grabbed, so no write is pending here.
    public func sync() async throws {
        for (key, _) in grabbed { try await release(key.set, key.id) }
    }

    /// Grab, increment a decimal counter, put: `count` times, retrying a grab or put that lost a
    /// race with an ownership change.
    public func increment(_ set: String, _ id: UInt64, count: Int) async throws -> Int {
        var last = 0
        var done = 0
        var failures = 0
        while done < count {
            do {
                let v = try await grab(set, id)
                let n = Int(String(decoding: v ?? [], as: UTF8.self)) ?? 0
                do {
                    try await put(set, id, Array(String(n + 1).utf8))
                } catch {
                    grabbed[ObjKey(set: set, id: id)] = nil
                    throw error
                }
                last = n + 1
                done += 1
                failures = 0
            } catch {
                failures += 1
                if failures > 50 { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        return last
    }

    public func state(_ set: String, _ id: UInt64) async throws -> KDDMObjectState {
        let key = ObjKey(set: set, id: id)
        var s = try await atOwner(key) { o in
            try Self.dec(KDDMObjectState.self, try await self.rpc.call(o, service: KDDMService.state, try Self.enc(ObjMsg(key: key))))
        }
        s.localCopy = grabbed[key] != nil ? "write (grabbed)" : cache[key] != nil ? "read copy (rev \(cache[key]!.rev))" : "none"
        return s
    }
}
