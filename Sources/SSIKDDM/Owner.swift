import Logging
import SSIMembership
import SSISystem
import SSITransport

/// The owner side of KDDM: the home of the objects that the owner rules give this node in its
/// view. It serializes access, many readers or one writer: it records readers, queues writers
/// (FIFO hand-off), invalidates every read copy before it grants a grab, and commits a put to
/// the store under a compare on the object's revision, its write tag and the view before it
/// answers. It holds nothing the store does not, but reader lists and the queue, so when the
/// view changes its entries are dropped and the next owner reloads from the store.
///
/// Everything it stands on is injected (`KDDMStore`, `KDDMView`, `KDDMPeers`), so the
/// protocol can be driven without etcd or a network (KDDMOwnerTests).
public actor KDDMOwner {
    public let me: NodeID
    let view: any KDDMView
    let store: any KDDMStore
    let peers: any KDDMPeers
    let sets: SetCatalog
    let logger: Logger
    let timing: Timing

    /// The protocol's waits.
    public struct Timing: Sendable {
        /// How long an owner waits for a reader to acknowledge an invalidation before it
        /// takes the reader's lease away (`fenceOut`).
        public var invalidateTimeout: Duration = .seconds(1)
        /// How long it then waits for the reader to stop trusting its copies: one lease TTL.
        public var fenceWait: Duration = .seconds(Membership.leaseTTL)
        /// Between tries to settle a write whose outcome is unknown: 400 ms, then doubling.
        public var settleBackoff: Duration = .milliseconds(200)
        public init() {}
    }

    /// One entry per object this node owns in view `view`. An entry of an older view is never
    /// used: its readers and writer were recorded under another online set.
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
        /// The writer's put is in the store's hands: a release cannot overtake it.
        var committing = false
        /// The revision of the object's write tag (0: none yet).
        var tagRev: Int64 = 0
        var writeWaiters: [(node: NodeID, grab: UInt64, k: CheckedContinuation<Void, Never>)] = []
        var readWaiters: [CheckedContinuation<Void, Never>] = []
    }
    var entries: [ObjKey: Entry] = [:]
    /// Grabs released before they reached the object (their asker gave up): they must not
    /// take it when they do. Ids are random, so a stale one never matches; the oldest go.
    var cancelledGrabs: Set<UInt64> = []
    var cancelledOrder: [UInt64] = []

    init(me: NodeID, view: any KDDMView, store: any KDDMStore, peers: any KDDMPeers, sets: SetCatalog, logger: Logger, timing: Timing = Timing()) {
        (self.me, self.view, self.store, self.peers, self.sets, self.logger, self.timing) = (me, view, store, peers, sets, logger, timing)
    }

    /// An owner on its own, for tests of the protocol: its hooks registered as given.
    public init(me: NodeID, view: any KDDMView, store: any KDDMStore, peers: any KDDMPeers, hooks: [String: any KDDMSetHooks] = [:],
                logger: Logger, timing: Timing) {
        let sets = SetCatalog(store: store)
        for (name, h) in hooks { sets.register(h, for: name) }
        self.init(me: me, view: view, store: store, peers: peers, sets: sets, logger: logger, timing: timing)
    }

    /// This node's view, checked against the asker's: an owner acts only for askers that see
    /// the same online set (the same ViewSnapshot.viewID) and the same incarnation of the set,
    /// so that a copy is always recorded by the owner of the view it is cached under; and only
    /// while it trusts that view itself, as a reader does its cache: an owner that lost etcd
    /// must not answer from an entry that a newer view's owner may be overwriting. A lagging
    /// owner reads the view (or the set) once more.
    func currentView(_ m: ObjMsg, from: NodeID) async throws -> ViewSnapshot {
        if m.setRev != 0, try await sets.set(m.key.set).rev != m.setRev, try await sets.set(m.key.set, reload: true).rev != m.setRev {
            throw SSIError(.setChanged, "kddm: node \(from) knows another incarnation of set \(m.key.set) than node \(me)", hint: "retry")
        }
        var snap = view.snapshot
        if (m.view != 0 && m.view != snap.viewID) || ContinuousClock.now >= snap.trustedUntil {
            await view.refresh()
            snap = view.snapshot
            guard m.view == 0 || m.view == snap.viewID else {
                throw SSIError(.otherView, "kddm: node \(me) sees another membership view than node \(from) (a node joined, left or failed)", hint: "retry")
            }
            guard ContinuousClock.now < snap.trustedUntil else {
                throw SSIError(.untrustedView, "kddm: node \(me) does not trust its membership view (its lease or its last read of etcd is too old)", hint: "retry")
            }
        }
        let o = try await sets.owner(m.key, in: snap, asker: me)
        guard o == me else { throw SSIError(.notOwner, "kddm: node \(me) is not the owner of \(m.key) (node \(o) is)", hint: "retry") }
        return snap
    }

    /// The entry of `key` in `view`, loaded from the store when there is none. `view` must
    /// still be this node's: an older view's request never replaces a newer view's entry (its
    /// reader list would be lost). An entry of an older view is dropped (its waiters wake up,
    /// find it gone, and fail with a retry).
    private func entry(_ key: ObjKey, view id: UInt64) async throws -> Entry {
        func current() throws {
            guard view.snapshot.viewID == id else {
                throw SSIError(.ownerMoved, "kddm: the membership view moved while node \(me) waited to load \(key)", hint: "retry")
            }
        }
        try current()
        if let e = entries[key] {
            if e.view == id { return e }
            drop(key)
        }
        let stored = try await store.load(key)
        try current()
        if let again = entries[key], again.view == id { return again }  // loaded meanwhile (actor reentrancy)
        let hooks = sets.hooks(key.set)
        var e: Entry
        if let bytes = stored.value {
            e = Entry(view: id, value: hooks?.import(bytes) ?? bytes, rev: stored.rev)
        } else {
            e = Entry(view: id, value: hooks?.firstTouch(id: key.id), rev: 0)
        }
        e.tagRev = stored.tagRev
        drop(key)
        entries[key] = e
        return e
    }

    /// Forgets an owner entry, waking whoever waits on it.
    func drop(_ key: ObjKey) {
        guard let e = entries.removeValue(forKey: key) else { return }
        for w in e.writeWaiters { w.k.resume() }
        for k in e.readWaiters { k.resume() }
    }

    /// A read copy for `from`, recorded as a reader. Waits while a writer holds the object.
    public func read(_ m: ObjMsg, from: NodeID) async throws -> ObjMsg {
        while true {
            let snap = try await currentView(m, from: from)
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
    func holds(_ key: ObjKey, _ from: NodeID, grab: UInt64, view: UInt64) -> Bool {
        guard let e = entries[key], e.view == view, e.writer == from else { return false }
        return grab == 0 || e.writerGrab == grab
    }

    /// Was this grab released by its asker before it got the object? (Consumes the mark.)
    private func cancelled(_ grab: UInt64) -> Bool {
        grab != 0 && cancelledGrabs.remove(grab) != nil
    }

    /// Write access for `from`'s grab `m.grab`: queued behind the current writer, then every
    /// other read copy invalidated, then the value and its revision.
    public func grab(_ m: ObjMsg, from: NodeID) async throws -> ObjMsg {
        let key = m.key
        let snap = try await currentView(m, from: from)
        let view = snap.viewID
        let e = try await entry(key, view: view)
        if cancelled(m.grab) { throw SSIError(.state, "kddm: grab of \(key) given up by node \(from)") }
        if e.writer == nil || (e.writer == from && e.writerGrab == m.grab) {
            entries[key]!.writer = from
            entries[key]!.writerGrab = m.grab
        } else if e.writer == from && e.granted && !e.committing {
            // The same node grabs again: its earlier grab is dead (a node holds at most one
            // grab of an object: KDDMClient.grab) and its release was lost. This one replaces
            // it; a late put of the old one fails `holds`.
            entries[key]!.writerGrab = m.grab
            entries[key]!.granted = false
        } else {
            // Hand-off: the releaser makes us the writer before it resumes us.
            await withCheckedContinuation { k in entries[key]?.writeWaiters.append((from, m.grab, k)) ?? k.resume() }
        }
        guard holds(key, from, grab: m.grab, view: view) else { throw Self.moved(key) }
        try await invalidateReaders(key, for: from, grab: m.grab, view: view, grantsFrom: snap.grantsFrom)
        guard holds(key, from, grab: m.grab, view: view), self.view.snapshot.viewID == view, !cancelled(m.grab) else {
            releaseWriter(key, from: from, grab: m.grab)
            throw Self.moved(key)
        }
        entries[key]!.granted = true
        let cur = entries[key]!
        return ObjMsg(key: key, value: cur.value, rev: cur.rev, view: view)
    }

    static func moved(_ key: ObjKey) -> SSIError {
        SSIError(.ownerMoved, "kddm: ownership of \(key) moved while the grab waited", hint: "retry")
    }

    /// Invalidates every read copy but the writer's and waits for the acknowledgements; fences
    /// out a reader that does not answer; waits out the grace after a view change. On failure
    /// the grab is released.
    private func invalidateReaders(_ key: ObjKey, for from: NodeID, grab: UInt64, view: UInt64, grantsFrom: ContinuousClock.Instant) async throws {
        let others = entries[key]!.readers.subtracting([from])
        entries[key]!.readers = []
        let (peers, timeout) = (self.peers, timing.invalidateTimeout)
        let silent = await withTaskGroup(of: NodeID?.self) { g in
            for n in others {
                g.addTask {
                    do { try await peers.invalidate(key, on: n, timeout: timeout); return nil } catch { return n }
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
            if grantsFrom > now { try await Task.sleep(for: grantsFrom - now) }
        } catch {
            if entries[key]?.view == view { entries[key]!.readers.formUnion(silent) }
            releaseWriter(key, from: from, grab: grab)
            throw SSIError(.unreachable, "kddm: grab of \(key) not granted: node \(silent.map(String.init).joined(separator: ",")) did not acknowledge an invalidation and could not be fenced out: \(error)",
                           hint: "is etcd reachable from node \(me)? retry when it is")
        }
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
    public func fenceOut(_ n: NodeID, for what: String) async throws {
        guard let lease = try await store.revokeLease(of: n) else { return }
        logger.warning("kddm: node \(n) did not acknowledge the invalidation of \(what) within \(timing.invalidateTimeout); revoked its lease \(lease) and waiting \(timing.fenceWait) for it to stop serving its copies")
        try await Task.sleep(for: timing.fenceWait)
    }

    /// The writer is done (put, or failure on our side): the next writer in line, or the
    /// readers, go on.
    func releaseWriter(_ key: ObjKey, from: NodeID, grab: UInt64) {
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
    public func release(_ key: ObjKey, from: NodeID, grab: UInt64) {
        if let e = entries[key], e.writer == from, grab == 0 || e.writerGrab == grab {
            releaseWriter(key, from: from, grab: grab)
        } else if let i = entries[key]?.writeWaiters.firstIndex(where: { $0.node == from && $0.grab == grab }) {
            entries[key]!.writeWaiters.remove(at: i).k.resume()  // it finds it does not hold it, and fails
        } else if grab != 0 {
            cancelledGrabs.insert(grab)
            cancelledOrder.append(grab)
            if cancelledOrder.count > 4096 { cancelledGrabs.remove(cancelledOrder.removeFirst()) }
        }
    }

    /// The owner's coherence state of `key` (`ssi kddm show`).
    public func state(_ key: ObjKey) async throws -> KDDMObjectState {
        let snap = try await currentView(ObjMsg(key: key), from: me)
        let e = try await entry(key, view: snap.viewID)
        return KDDMObjectState(set: key.set, id: key.id, owner: me, exists: e.value != nil, value: e.value, revision: e.rev,
                               readers: e.readers.sorted(), writer: e.writer, waiting: e.writeWaiters.count, localCopy: "")
    }

    /// The online set changed: owners may have moved. Drop the entries of older views, waking
    /// their waiters, whose grabs then fail and are retried.
    public func viewChanged() {
        let id = view.snapshot.viewID
        for (k, e) in entries where e.view != id { drop(k) }
    }

    /// A deleted set: its entries go (their waiters fail, and a grab of the deleted set cannot
    /// be put back: the entry that granted it is gone).
    func dropSet(_ name: String) {
        for k in entries.keys where k.set == name { drop(k) }
    }
}
