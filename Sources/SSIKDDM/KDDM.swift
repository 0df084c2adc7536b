import Foundation
import Logging
import SSIMembership
import SSISystem
import SSITransport
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
        throw SSIError(.invalidArgument, "kddm: bad owner rule '\(s)'", hint: "use hash or fixed:NODE")
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
    public init(name: String, rule: OwnerRule) {
        self.name = name
        self.rule = rule
    }
}

/// The RPC services of KDDM.
public enum KDDMService {
    public static let read = ServiceBlock.kddm.number(1)
    public static let grab = ServiceBlock.kddm.number(2)
    public static let put = ServiceBlock.kddm.number(3)
    public static let release = ServiceBlock.kddm.number(4)
    public static let invalidate = ServiceBlock.kddm.number(5)
    public static let remove = ServiceBlock.kddm.number(6)
    public static let state = ServiceBlock.kddm.number(7)
    public static let dropSet = ServiceBlock.kddm.number(8)
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
    /// The asker's view (ViewSnapshot.viewID); 0: any (inspection).
    var view: UInt64 = 0
    /// The incarnation of the set the asker knows (the mod revision of its etcd key); 0: any.
    var setRev: Int64 = 0
    /// Names one grab, so that a release meant for it never frees another (0: none).
    var grab: UInt64 = 0
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

    /// How long an owner waits for a reader to acknowledge an invalidation before it takes the
    /// reader's lease away (`fenceOut`).
    static let invalidateTimeout: Duration = .seconds(1)

    // Owner side: one entry per object this node owns in view `view`. An entry of an older
    // view is never used: its readers and writer were recorded under another online set.
    struct Entry {
        var view: UInt64
        var value: [UInt8]?
        var rev: Int64
        var readers: Set<NodeID> = []
        var writer: NodeID?
        /// The grab that made `writer` the writer.
        var writerGrab: UInt64 = 0
        /// The writer's grab was granted (its invalidations and fences are done).
        var granted = false
        /// The writer's put is in etcd's hands: a release cannot overtake it.
        var committing = false
        /// The mod revision of the object's write tag (`tagKey`; 0: none yet).
        var tagRev: Int64 = 0
        var writeWaiters: [(node: NodeID, grab: UInt64, k: CheckedContinuation<Void, Never>)] = []
        var readWaiters: [CheckedContinuation<Void, Never>] = []
    }
    var entries: [ObjKey: Entry] = [:]
    /// Grabs released before they reached the object (their asker gave up): they must not
    /// take it when they do. Ids are random, so a stale one never matches; the oldest go.
    var cancelledGrabs: Set<UInt64> = []
    var cancelledOrder: [UInt64] = []

    // Client side. A cached copy is served only while the view and the lease it was read
    // under are still this node's and this node still trusts them (ViewSnapshot.trustedUntil).
    struct Copy {
        var value: [UInt8]?
        var rev: Int64
        var view: UInt64
        var lease: Int64
    }
    var cache: [ObjKey: Copy] = [:]
    var epochs: [ObjKey: Int] = [:]
    var globalEpoch = 0
    var grabbed: [ObjKey: (owner: NodeID, rev: Int64, view: UInt64, grab: UInt64)] = [:]

    /// Known sets, with the mod revision of their etcd key (the set's incarnation).
    var sets: [String: (info: KDDMSetInfo, rev: Int64)] = [:]
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
                rpc.register(KDDMService.read) { [self] from, p in
            try Self.enc(try await ownerRead(try coder.decode(ObjMsg.self, from: Data(p)), from: from))
        }
        rpc.register(KDDMService.grab) { [self] from, p in
            try Self.enc(try await ownerGrab(try coder.decode(ObjMsg.self, from: Data(p)), from: from))
        }
        rpc.register(KDDMService.put) { [self] from, p in
            try Self.enc(try await ownerPut(try coder.decode(ObjMsg.self, from: Data(p)), from: from, delete: false))
        }
        rpc.register(KDDMService.remove) { [self] from, p in
            try Self.enc(try await ownerPut(try coder.decode(ObjMsg.self, from: Data(p)), from: from, delete: true))
        }
        rpc.register(KDDMService.release) { [self] from, p in
            let m = try coder.decode(ObjMsg.self, from: Data(p))
            await askerReleased(m.key, from: from, grab: m.grab)
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

    /// Makes a set, unless it exists: a set's rule never changes under the nodes that use it
    /// (two rules would mean two owners). Creating it again with the same rule is a no-op.
    public func createSet(_ name: String, rule: OwnerRule) async throws {
        guard !name.isEmpty, !name.contains("/") else { throw SSIError(.invalidArgument, "kddm: bad set name '\(name)'", hint: "a set's name is not empty and has no '/'") }
        let info = KDDMSetInfo(name: name, rule: rule)
        if let kv = try await etcd.createIfAbsent(prefix + "sets/\(name)", try Self.enc(info)) {
            let old = try Self.dec(KDDMSetInfo.self, kv.value)
            sets[name] = (old, kv.modRevision)
            guard old.rule == rule else {
                throw SSIError(.busy, "kddm: set '\(name)' exists with rule \(old.rule)", hint: "ssi kddm delete-set \(name) first to change it")
            }
            return
        }
        _ = try await set(name, reload: true)
    }

    /// Deletes a set and every object in it, from etcd and from every node's memory. Refused
    /// while this node holds one of its objects grabbed. A node that holds one grabbed
    /// elsewhere cannot put it back: its put is fenced on a revision that no longer exists.
    public func deleteSet(_ name: String) async throws {
        _ = try await set(name)
        if let k = grabbed.keys.first(where: { $0.set == name }) {
            throw SSIError(.busy, "kddm: set '\(name)' cannot be deleted while node \(rpc.nodeID) holds \(k) grabbed", hint: "put or release it first")
        }
        // Objects first, then the set: a delete cut short leaves an empty set, and running it
        // again finishes the job.
        try await etcd.delete(prefix: prefix + "obj/\(name)/")
        try await etcd.delete(prefix + "sets/\(name)")
        dropSetLocal(name)
        let others = membership.view.values.filter { $0.state == .online && $0.id != rpc.nodeID }.map(\.id)
        for n in others {
            do { _ = try await rpc.call(n, service: KDDMService.dropSet, Array(name.utf8), timeout: Self.invalidateTimeout) } catch {
                // It may still serve copies of the deleted objects: as for a reader that does
                // not acknowledge an invalidation, take its lease away.
                logger.warning("kddm: node \(n) did not acknowledge the deletion of set \(name): \(error)")
                try await fenceOut(n, for: "set \(name)")
            }
        }
    }

    /// Forgets a deleted set: cached copies and owner entries (their waiters fail, and a
    /// grab of the deleted set cannot be put back: the entry that granted it is gone).
    func dropSetLocal(_ name: String) {
        for k in cache.keys where k.set == name { invalidateLocal(k) }
        for k in entries.keys where k.set == name { drop(k) }
        sets[name] = nil
    }

    public func listSets() async throws -> [KDDMSetInfo] {
        let kvs = try await etcd.list(prefix: prefix + "sets/")
        var now: [String: (info: KDDMSetInfo, rev: Int64)] = [:]
        for kv in kvs { if let s = try? Self.dec(KDDMSetInfo.self, kv.value) { now[s.name] = (s, kv.modRevision) } }
        sets = now
        return now.values.map(\.info).sorted { $0.name < $1.name }
    }

    func set(_ name: String, reload: Bool = false) async throws -> (info: KDDMSetInfo, rev: Int64) {
        if !reload, let s = sets[name] { return s }
        guard let kv = try await etcd.get(prefix + "sets/\(name)") else {
            sets[name] = nil
            throw SSIError(.notFound, "kddm: no set '\(name)'", hint: "ssi kddm sets lists them; ssi kddm create-set makes one")
        }
        let s = (info: try Self.dec(KDDMSetInfo.self, kv.value), rev: kv.modRevision)
        sets[name] = s
        return s
    }

    public func objectCount(_ set: String) async throws -> Int {
        try await etcd.list(prefix: prefix + "obj/\(set)/").filter { !$0.key.hasSuffix("/w") }.count
    }

    func owner(_ key: ObjKey, in view: ViewSnapshot) async throws -> NodeID {
        let s = try await set(key.set)
        guard let o = s.info.rule.owner(of: key.id, online: view.online) else {
            throw SSIError(.state, "kddm: no online node to own \(key)", hint: "is node \(rpc.nodeID) online? ssi nodes status")
        }
        return o
    }

    func etcdKey(_ k: ObjKey) -> String { prefix + "obj/\(k.set)/" + String(format: "%016llx", k.id) }
    /// Beside each object, the tag of the write that made its revision: the grab's id, or
    /// "void:ID" where an unknown outcome was settled as not done (`settle`). Ids have 16 hex
    /// digits, so [object, object + "0") holds exactly the object and its tag.
    func tagKey(_ k: ObjKey) -> String { etcdKey(k) + "/w" }

    // MARK: owner side


    /// This node's view, checked against the asker's: an owner acts only for askers that see
    /// the same online set (the same ViewSnapshot.viewID) and the same incarnation of the set,
    /// so that a copy is always recorded by the owner of the view it is cached under; and only
    /// while it trusts that view itself, as a reader does its cache: an owner that lost etcd
    /// must not answer from an entry that a newer view's owner may be overwriting. A lagging
    /// owner reads the view (or the set) once more.
    private func ownerView(_ m: ObjMsg, from: NodeID) async throws -> ViewSnapshot {
        if m.setRev != 0, try await set(m.key.set).rev != m.setRev, try await set(m.key.set, reload: true).rev != m.setRev {
            throw SSIError(.setChanged, "kddm: node \(from) knows another incarnation of set \(m.key.set) than node \(rpc.nodeID)", hint: "retry")
        }
        var snap = membership.snapshot
        if (m.view != 0 && m.view != snap.viewID) || ContinuousClock.now >= snap.trustedUntil {
            await membership.refresh()
            snap = membership.snapshot
            guard m.view == 0 || m.view == snap.viewID else {
                throw SSIError(.otherView, "kddm: node \(rpc.nodeID) sees another membership view than node \(from) (a node joined, left or failed)", hint: "retry")
            }
            guard ContinuousClock.now < snap.trustedUntil else {
                throw SSIError(.untrustedView, "kddm: node \(rpc.nodeID) does not trust its membership view (its lease or its last read of etcd is too old)", hint: "retry")
            }
        }
        let o = try await owner(m.key, in: snap)
        guard o == rpc.nodeID else { throw SSIError(.notOwner, "kddm: node \(rpc.nodeID) is not the owner of \(m.key) (node \(o) is)", hint: "retry") }
        return snap
    }

    /// The entry of `key` in `view`, loaded from etcd when there is none. `view` must still be
    /// this node's: an older view's request never replaces a newer view's entry (its reader
    /// list would be lost). An entry of an older view is dropped (its waiters wake up, find it
    /// gone, and fail with a retry).
    private func entry(_ key: ObjKey, view: UInt64) async throws -> Entry {
        func current() throws {
            guard membership.snapshot.viewID == view else {
                throw SSIError(.ownerMoved, "kddm: the membership view moved while node \(rpc.nodeID) waited to load \(key)", hint: "retry")
            }
        }
        try current()
        if let e = entries[key] {
            if e.view == view { return e }
            drop(key)
        }
        let objKey = etcdKey(key)
        let (kvs, _) = try await etcd.list(from: objKey, to: Array((objKey + "0").utf8))
        let kv = kvs.first { $0.key == objKey }
        let tagRev = kvs.first { $0.key == tagKey(key) }?.modRevision ?? 0
        try current()
        if let again = entries[key], again.view == view { return again }  // loaded meanwhile (actor reentrancy)
        var e: Entry
        if let kv {
            e = Entry(view: view, value: hooks[key.set]?.import(kv.value) ?? kv.value, rev: kv.modRevision)
        } else {
            e = Entry(view: view, value: hooks[key.set]?.firstTouch(id: key.id), rev: 0)
        }
        e.tagRev = tagRev
        drop(key)
        entries[key] = e
        return e
    }

    /// Forgets an owner entry, waking whoever waits on it.
    private func drop(_ key: ObjKey) {
        guard let e = entries.removeValue(forKey: key) else { return }
        for w in e.writeWaiters { w.k.resume() }
        for k in e.readWaiters { k.resume() }
    }

    func ownerRead(_ m: ObjMsg, from: NodeID) async throws -> ObjMsg {
        while true {
            let snap = try await ownerView(m, from: from)
            let e = try await entry(m.key, view: snap.viewID)
            if e.writer != nil {
                // Many readers or one writer: wait until the writer is done.
                await withCheckedContinuation { k in entries[m.key]?.readWaiters.append(k) ?? k.resume() }
                continue
            }
            entries[m.key]!.readers.insert(from)
            return ObjMsg(key: m.key, value: e.value, rev: e.rev, view: snap.viewID)
        }
    }

    /// Does the entry of `key` in `view` still name this grab as its writer?
    private func holds(_ key: ObjKey, _ from: NodeID, grab: UInt64, view: UInt64) -> Bool {
        guard let e = entries[key], e.view == view, e.writer == from else { return false }
        return grab == 0 || e.writerGrab == grab
    }

    /// Was this grab released by its asker before it got the object? (Consumes the mark.)
    private func cancelled(_ grab: UInt64) -> Bool {
        grab != 0 && cancelledGrabs.remove(grab) != nil
    }

    func ownerGrab(_ m: ObjMsg, from: NodeID) async throws -> ObjMsg {
        let key = m.key
        let snap = try await ownerView(m, from: from)
        let view = snap.viewID
        let e = try await entry(key, view: view)
        if cancelled(m.grab) { throw SSIError(.state, "kddm: grab of \(key) given up by node \(from)") }
        if e.writer == nil || (e.writer == from && e.writerGrab == m.grab) {
            entries[key]!.writer = from
            entries[key]!.writerGrab = m.grab
        } else if e.writer == from && e.granted && !e.committing {
            // The same node grabs again: its earlier grab is dead (a node holds at most one
            // grab of an object: KDDM.grab) and its release was lost. This one replaces it;
            // a late put of the old one fails `holds`.
            entries[key]!.writerGrab = m.grab
            entries[key]!.granted = false
        } else {
            // Hand-off: the releaser makes us the writer before it resumes us.
            await withCheckedContinuation { k in entries[key]?.writeWaiters.append((from, m.grab, k)) ?? k.resume() }
        }
        guard holds(key, from, grab: m.grab, view: view) else {
            throw SSIError(.ownerMoved, "kddm: ownership of \(key) moved while the grab waited", hint: "retry")
        }
        // Invalidate every read copy; wait for the acknowledgements.
        let others = entries[key]!.readers.subtracting([from])
        entries[key]!.readers = []
        let silent = await withTaskGroup(of: NodeID?.self) { g in
            for n in others {
                g.addTask {
                    do {
                        _ = try await self.rpc.call(n, service: KDDMService.invalidate, try Self.enc(ObjMsg(key: key)), timeout: Self.invalidateTimeout)
                        return nil
                    } catch {
                        return n
                    }
                }
            }
            var out: [NodeID] = []
            for await n in g { if let n { out.append(n) } }
            return out
        }
        do {
            // A reader that did not answer may still serve its copy: fence it out.
            for n in silent { try await fenceOut(n, for: "\(key)") }
            // Nodes that read under the previous view may trust their copies a little longer.
            let now = ContinuousClock.now
            if snap.grantsFrom > now { try await Task.sleep(for: snap.grantsFrom - now) }
        } catch {
            if entries[key]?.view == view { entries[key]!.readers.formUnion(silent) }
            ownerRelease(key, from: from, grab: m.grab)
            throw SSIError(.unreachable, "kddm: grab of \(key) not granted: node \(silent.map(String.init).joined(separator: ",")) did not acknowledge an invalidation and could not be fenced out: \(error)",
                           hint: "is etcd reachable from node \(rpc.nodeID)? retry when it is")
        }
        guard holds(key, from, grab: m.grab, view: view), membership.snapshot.viewID == view, !cancelled(m.grab) else {
            ownerRelease(key, from: from, grab: m.grab)
            throw SSIError(.ownerMoved, "kddm: ownership of \(key) moved while the grab waited", hint: "retry")
        }
        entries[key]!.granted = true
        let cur = entries[key]!
        return ObjMsg(key: key, value: cur.value, rev: cur.rev, view: view)
    }

    /// A node that did not acknowledge an invalidation (cut off, or its RPC link is) may
    /// still serve its copy. Its lease is revoked in etcd; it trusts its copies only while it
    /// is sure its lease is alive (Membership.snapshot), and the last keep-alive that etcd
    /// took from it was sent before our revoke, so one TTL after the revoke it has stopped.
    /// Its copies under older leases are void already, and a lease it takes later can only
    /// cover reads made after we became the writer, which wait for us. A node with no lease
    /// in etcd trusts nothing. We wait the TTL even when etcd says the lease is gone: the
    /// answer may be to a resend of a revoke that did happen (EtcdClient.post). The node
    /// takes a new lease and rejoins by itself (Membership.keepAliveLoop).
    func fenceOut(_ n: NodeID, for what: String) async throws {
        guard let kv = try await etcd.get(membership.prefix + "present/\(n)"), kv.lease != 0 else { return }
        try await etcd.revoke(kv.lease)
        logger.warning("kddm: node \(n) did not acknowledge the invalidation of \(what) within \(Self.invalidateTimeout); revoked its lease \(kv.lease) and waiting \(Membership.leaseTTL) s for it to stop serving its copies")
        try await Task.sleep(for: .seconds(Membership.leaseTTL))
    }

    func ownerPut(_ m: ObjMsg, from: NodeID, delete: Bool) async throws -> ObjMsg {
        let snap = try await ownerView(m, from: from)
        guard holds(m.key, from, grab: m.grab, view: snap.viewID) else {
            throw SSIError(.conflict, "kddm: write of \(m.key) refused: node \(from) does not hold its grab at node \(rpc.nodeID) (the membership view changed since the grab)", hint: "grab it again")
        }
        let bytes: [UInt8]? = delete ? nil : (hooks[m.key.set]?.export(m.value ?? []) ?? (m.value ?? []))
        let tagRev = entries[m.key]!.tagRev
        entries[m.key]!.committing = true
        defer {
            if holds(m.key, from, grab: m.grab, view: snap.viewID) {
                entries[m.key]!.committing = false
                ownerRelease(m.key, from: from, grab: m.grab)
            }
        }
        var newRev: Int64? = nil
        do {
            // Compare-on-revision against another writer, and the view fence: the write
            // commits only if etcd's online set is still the one this grab was granted in.
            newRev = try await etcd.taggedWrite(etcdKey(m.key), expected: m.rev, bytes, tagKey: tagKey(m.key), tagExpected: tagRev,
                                                tag: String(m.grab), fence: snap.fence)
        } catch let e as SSIError where e.kind == .unknownOutcome {
            newRev = try await settle(m, from: from, tagRev: tagRev, view: snap.viewID, why: e.message)
        } catch {
            let e = SSIError.wrapping(error)
            throw SSIError(e.kind, "kddm: write of \(m.key) not done: \(e.message)", hint: e.hint)
        }
        guard let rev = newRev else {
            drop(m.key)  // someone wrote under another owner, or the view moved on: reload
            Task { await membership.refresh() }
            throw SSIError(.conflict, "kddm: write of \(m.key) lost a race (revision \(m.rev) is stale, or the membership view changed)", hint: "grab it again")
        }
        if holds(m.key, from, grab: m.grab, view: snap.viewID) {
            entries[m.key]!.value = delete ? nil : m.value
            entries[m.key]!.rev = rev
            entries[m.key]!.tagRev = rev
            entries[m.key]!.readers = delete ? [] : [from]
        }
        return ObjMsg(key: m.key, value: delete ? nil : m.value, rev: rev, view: snap.viewID)
    }

    /// etcd did not say whether our tagged write was done. We keep the object (readers and
    /// writers wait) and find out: voiding the tag makes a write still pending in etcd fail
    /// its comparison, so "voided" means not done, for good; a tag that is ours means done.
    /// Returns the write's revision, nil when another write came first (a lost race), or
    /// throws "not done"; when etcd stays silent, the entry is dropped (the next request
    /// reloads from etcd) and the outcome stays unknown.
    private func settle(_ m: ObjMsg, from: NodeID, tagRev: Int64, view: UInt64, why: String) async throws -> Int64? {
        for attempt in 0..<5 {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(200 << attempt)) }
            let r: (voided: Bool, revision: Int64, tag: EtcdClient.KeyValue?)
            do { r = try await etcd.voidTag(tagKey(m.key), expected: tagRev, void: "void:\(m.grab)") } catch { continue }
            if r.voided {
                if holds(m.key, from, grab: m.grab, view: view) { entries[m.key]!.tagRev = r.revision }
                throw SSIError(.conflict, "kddm: write of \(m.key) not done (\(why))", hint: "grab it again")
            }
            if let t = r.tag, String(decoding: t.value, as: UTF8.self) == String(m.grab) { return t.modRevision }
            return nil
        }
        drop(m.key)
        throw SSIError(.unknownOutcome, "kddm: write of \(m.key) may or may not have been done: etcd does not answer (\(why))", hint: "read it to know")
    }

    /// The writer is done (put, or failure on our side): the next writer in line, or the
    /// readers, go on.
    func ownerRelease(_ key: ObjKey, from: NodeID, grab: UInt64) {
        guard entries[key] != nil, entries[key]!.writer == from, grab == 0 || entries[key]!.writerGrab == grab,
              !entries[key]!.committing else { return }
        if !entries[key]!.writeWaiters.isEmpty {
            let w = entries[key]!.writeWaiters.removeFirst()
            entries[key]!.writer = w.node
            entries[key]!.writerGrab = w.grab
            entries[key]!.granted = false
            w.k.resume()
        } else {
            entries[key]!.writer = nil
            entries[key]!.writerGrab = 0
            entries[key]!.granted = false
            let rs = entries[key]!.readWaiters
            entries[key]!.readWaiters = []
            for k in rs { k.resume() }
        }
    }

    /// The asker gives a grab back: released if it holds the object (not while its put is
    /// being committed: the put releases it), taken out of the queue if it waits, else marked
    /// so that it does not take the object when it reaches it.
    func askerReleased(_ key: ObjKey, from: NodeID, grab: UInt64) {
        if let e = entries[key], e.writer == from, grab == 0 || e.writerGrab == grab {
            ownerRelease(key, from: from, grab: grab)
        } else if let i = entries[key]?.writeWaiters.firstIndex(where: { $0.node == from && $0.grab == grab }) {
            entries[key]!.writeWaiters.remove(at: i).k.resume()  // it finds it does not hold it, and fails
        } else if grab != 0 {
            cancelledGrabs.insert(grab)
            cancelledOrder.append(grab)
            if cancelledOrder.count > 4096 { cancelledGrabs.remove(cancelledOrder.removeFirst()) }
        }
    }

    func ownerState(_ key: ObjKey) async throws -> KDDMObjectState {
        let snap = try await ownerView(ObjMsg(key: key), from: rpc.nodeID)
        let e = try await entry(key, view: snap.viewID)
        return KDDMObjectState(set: key.set, id: key.id, owner: rpc.nodeID, exists: e.value != nil, value: e.value, revision: e.rev,
                               readers: e.readers.sorted(), writer: e.writer, waiting: e.writeWaiters.count, localCopy: "")
    }

    /// The online set changed: owners may have moved. Drop the owner entries of older views
    /// (waking their waiters, whose grabs then fail and are retried) and every cached copy.
    func viewChanged(_ events: [MembershipEvent]) {
        let view = membership.snapshot.viewID
        for (k, e) in entries where e.view != view { drop(k) }
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

    /// Runs `body` against the object's owner in this node's view. Nodes read the view up to
    /// 100 ms apart, so the node we picked may not yet agree that it owns the object, or see
    /// another view: read the view (and the set) again and retry, for up to a second.
    func atOwner<T: Sendable>(_ key: ObjKey, _ body: (NodeID, ViewSnapshot, Int64) async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            let snap = membership.snapshot
            let o = try await owner(key, in: snap)
            do {
                return try await body(o, snap, try await set(key.set).rev)
            } catch where Self.retryable(error) && attempt < 20 {
                attempt += 1
                sets[key.set] = nil
                await membership.refresh()
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Errors after which asking again, once the view is read again, may succeed. An owner's
    /// answer crosses the RPC with its kind.
    static func retryable(_ error: any Error) -> Bool {
        switch (error as? SSIError)?.kind {
        case .notOwner?, .otherView?, .untrustedView?, .ownerMoved?, .setChanged?: return true
        default: return false
        }
    }

    /// A node that has lost etcd may be cut off from the others: it fails at once rather than
    /// waiting for a deadline (its writes could not complete anyway: the owner writes to etcd).
    func checkReachable() throws {
        if membership.cutOff {
            dropCache()
            throw SSIError(.unreachable, "kddm: node \(rpc.nodeID) cannot reach the membership service; it may be cut off from the cluster, so it can neither read nor write",
                           hint: "retry when its network is back")
        }
    }

    /// A read copy: from the local cache when valid (no network), else from the owner.
    public func get(_ set: String, _ id: UInt64) async throws -> [UInt8]? {
        let key = ObjKey(set: set, id: id)
        try checkReachable()
        let snap = membership.snapshot
        if let c = cache[key] {
            if c.view == snap.viewID && c.lease == snap.lease && ContinuousClock.now < snap.trustedUntil { return c.value }
            cache[key] = nil
        }
        let (e, g) = (epochs[key, default: 0], globalEpoch)
        var asked = snap
        let r = try await atOwner(key) { o, view, setRev in
            asked = view
            return try Self.dec(ObjMsg.self, try await self.rpc.call(o, service: KDDMService.read, try Self.enc(ObjMsg(key: key, view: view.viewID, setRev: setRev))))
        }
        // Not cached when an invalidation or a view change overtook the reply.
        let now = membership.snapshot
        if epochs[key, default: 0] == e && globalEpoch == g && grabbed[key] == nil && now.viewID == asked.viewID && now.lease == asked.lease {
            cache[key] = Copy(value: r.value, rev: r.rev, view: asked.viewID, lease: asked.lease)
        }
        return r.value
    }

    /// Exclusive write access; returns the current value. Must be followed by put or release.
    public func grab(_ set: String, _ id: UInt64, timeout: Duration = .seconds(10)) async throws -> [UInt8]? {
        let key = ObjKey(set: set, id: id)
        guard grabbed[key] == nil else { throw SSIError(.busy, "kddm: \(key) is already grabbed on node \(rpc.nodeID)", hint: "put or release it first") }
        try checkReachable()
        let gid = UInt64.random(in: 1...UInt64.max)
        var o: NodeID? = nil
        var view: UInt64 = 0
        let r: ObjMsg
        do {
            r = try await atOwner(key) { owner, snap, setRev in
                o = owner
                view = snap.viewID
                return try Self.dec(ObjMsg.self, try await self.rpc.call(owner, service: KDDMService.grab,
                                                                         try Self.enc(ObjMsg(key: key, view: snap.viewID, setRev: setRev, grab: gid)), timeout: timeout))
            }
        } catch {
            // The owner may still grant it (our deadline passed) or be about to: give it back,
            // so that no one waits for us forever.
            if let o { giveBack(o, key, grab: gid) }
            throw error
        }
        cache[key] = nil
        grabbed[key] = (o!, r.rev, view, gid)
        return r.value
    }

    /// Writes the new value and releases the grab. Returns once the value is durable. The
    /// value goes to the owner that granted the grab, which accepts it only in the view it
    /// granted it in: after a view change, grab again.
    public func put(_ set: String, _ id: UInt64, _ value: [UInt8]) async throws {
        try await write(ObjKey(set: set, id: id), value, service: KDDMService.put)
    }

    /// Removes an object (grab, then delete at the owner).
    public func remove(_ set: String, _ id: UInt64) async throws {
        _ = try await grab(set, id)
        try await write(ObjKey(set: set, id: id), nil, service: KDDMService.remove)
    }

    private func write(_ key: ObjKey, _ value: [UInt8]?, service: UInt16) async throws {
        guard let g = grabbed.removeValue(forKey: key) else { throw SSIError(.state, "kddm: put of \(key) without a grab", hint: "grab it first") }
        let e = epochs[key, default: 0]
        let lease = membership.snapshot.lease
        do {
            try checkReachable()
            let r = try Self.dec(ObjMsg.self, try await rpc.call(g.owner, service: service,
                                                                 try Self.enc(ObjMsg(key: key, value: value, rev: g.rev, view: g.view, grab: g.grab))))
            cache[key] = nil
            // The owner recorded us as a reader of what we wrote.
            let now = membership.snapshot
            if service == KDDMService.put && epochs[key, default: 0] == e && now.viewID == g.view && now.lease == lease {
                cache[key] = Copy(value: value, rev: r.rev, view: g.view, lease: lease)
            }
        } catch {
            // Whatever happened, the owner must not keep waiting for us.
            giveBack(g.owner, key, grab: g.grab)
            switch (error as? SSIError)?.kind {
            case .timeout?, .disconnected?:
                // The request left; the owner may have written it before we stopped waiting.
                throw SSIError(.unknownOutcome, "kddm: write of \(key) may or may not have been done: node \(g.owner) did not answer (\(error))",
                               hint: "read it to know")
            default:
                throw error
            }
        }
    }

    /// Releases a grab that failed on our side, again in the background for a few seconds
    /// while it goes unanswered: a release lost on a bad link would leave the object locked
    /// until the view changes or this node grabs it again. It names its grab, so arriving
    /// late it frees nothing else (askerReleased).
    private nonisolated func giveBack(_ owner: NodeID, _ key: ObjKey, grab: UInt64) {
        let rpc = self.rpc
        Task {
            guard let msg = try? Self.enc(ObjMsg(key: key, grab: grab)) else { return }
            for attempt in 0..<5 {
                if (try? await rpc.call(owner, service: KDDMService.release, msg, timeout: .seconds(1))) != nil { return }
                try? await Task.sleep(for: .milliseconds(250 << attempt))
            }
        }
    }

    /// Gives a grabbed object back unchanged.
    public func release(_ set: String, _ id: UInt64) async throws {
        let key = ObjKey(set: set, id: id)
        guard let g = grabbed.removeValue(forKey: key) else { return }
        _ = try await rpc.call(g.owner, service: KDDMService.release, try Self.enc(ObjMsg(key: key, grab: g.grab)))
    }

    /// Grab and put, again while the grab or the put loses a race with a view change (for up
    /// to about 5 s): what `ssi kddm put` does. Storing a value twice is harmless, so a write
    /// whose outcome is unknown is tried again too.
    public func store(_ set: String, _ id: UInt64, _ value: [UInt8]) async throws {
        try await retrying(evenUnknown: true) { _ = try await grab(set, id); try await put(set, id, value) }
    }

    private func retrying(evenUnknown: Bool, _ body: () async throws -> Void) async throws {
        var failures = 0
        while true {
            do {
                return try await body()
            } catch {
                failures += 1
                if failures > 50 || membership.cutOff || (!evenUnknown && (error as? SSIError)?.kind == .unknownOutcome) { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
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
    /// race with an ownership change. A put whose outcome is unknown stops it with an error:
    /// doing it again could count one increment twice.
    public func increment(_ set: String, _ id: UInt64, count: Int) async throws -> Int {
        var last = 0
        for _ in 0..<count {
            try await retrying(evenUnknown: false) {
                let v = try await grab(set, id)
                let n = Int(String(decoding: v ?? [], as: UTF8.self)) ?? 0
                try await put(set, id, Array(String(n + 1).utf8))
                last = n + 1
            }
        }
        return last
    }

    public func state(_ set: String, _ id: UInt64) async throws -> KDDMObjectState {
        let key = ObjKey(set: set, id: id)
        var s = try await atOwner(key) { o, _, _ in
            try Self.dec(KDDMObjectState.self, try await self.rpc.call(o, service: KDDMService.state, try Self.enc(ObjMsg(key: key))))
        }
        s.localCopy = grabbed[key] != nil ? "write (grabbed)" : cache[key] != nil ? "read copy (rev \(cache[key]!.rev))" : "none"
        return s
    }
}
