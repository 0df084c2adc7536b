import Logging
import SSIMembership
import SSISystem
import SSITransport

/// The client side of KDDM: this node's cached copies and grabs. A get is served from the
/// cache with no network traffic while the copy is valid; otherwise, and for grabs and puts,
/// the request goes to the object's owner in this node's view (an RPC; a self-call when this
/// node is the owner).
public actor KDDMClient {
    let rpc: RPCNode
    let view: any KDDMView
    let sets: SetCatalog
    let logger: Logger

    /// A cached copy is served only while the view and the lease it was read under are still
    /// this node's and this node still trusts them (ViewSnapshot.trustedUntil).
    struct Copy {
        var value: [UInt8]?
        var rev: Int64
        var view: UInt64
        var lease: Int64
    }
    var cache: [ObjKey: Copy] = [:]
    /// Bumped by each invalidation (per object) and view change (global): a read reply that an
    /// invalidation overtook is not cached.
    var epochs: [ObjKey: Int] = [:]
    var globalEpoch = 0
    var grabbed: [ObjKey: (owner: NodeID, rev: Int64, view: UInt64, grab: UInt64)] = [:]

    init(rpc: RPCNode, view: any KDDMView, sets: SetCatalog, logger: Logger) {
        self.rpc = rpc
        self.view = view
        self.sets = sets
        self.logger = logger
    }

    /// The view changed: every cached copy goes.
    func dropCache() {
        cache = [:]
        globalEpoch += 1
    }

    /// The owner invalidated our copy (or the set is gone).
    func invalidateLocal(_ key: ObjKey) {
        cache[key] = nil
        epochs[key, default: 0] += 1
        sets.hooks(key.set)?.invalidated(id: key.id, on: rpc.nodeID)
    }

    /// A deleted set: its cached copies go.
    func dropSet(_ name: String) {
        for k in cache.keys where k.set == name { invalidateLocal(k) }
    }

    /// An object of `set` this node holds grabbed, if any.
    func grabbedKey(in set: String) -> ObjKey? { grabbed.keys.first { $0.set == set } }


    /// Runs `body` against the object's owner in this node's view. Nodes read the view up to
    /// 100 ms apart, so the node we picked may not yet agree that it owns the object, or see
    /// another view: read the view (and the set) again and retry, for up to a second.
    func atOwner<T: Sendable>(_ key: ObjKey, _ body: (NodeID, ViewSnapshot, Int64) async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            let snap = view.snapshot
            let o = try await sets.owner(key, in: snap, asker: rpc.nodeID)
            do {
                return try await body(o, snap, try await sets.set(key.set).rev)
            } catch where Self.retryable(error) && attempt < 20 {
                attempt += 1
                sets.forget(key.set)
                await view.refresh()
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
        if view.cutOff {
            dropCache()
            throw SSIError(.unreachable, "kddm: node \(rpc.nodeID) cannot reach the membership service; it may be cut off from the cluster, so it can neither read nor write",
                           hint: "retry when its network is back")
        }
    }

    /// A read copy: from the local cache when valid (no network), else from the owner.
    public func get(_ set: String, _ id: UInt64) async throws -> [UInt8]? {
        let key = ObjKey(set: set, id: id)
        try checkReachable()
        let snap = view.snapshot
        if let c = cache[key] {
            if c.view == snap.viewID && c.lease == snap.lease && ContinuousClock.now < snap.trustedUntil { return c.value }
            cache[key] = nil
        }
        let (e, g) = (epochs[key, default: 0], globalEpoch)
        var asked = snap
        let r = try await atOwner(key) { o, view, setRev in
            asked = view
            return try KDDMCoding.dec(ObjMsg.self, try await self.rpc.call(o, service: KDDMService.read, try KDDMCoding.enc(ObjMsg(key: key, view: view.viewID, setRev: setRev))))
        }
        // Not cached when an invalidation or a view change overtook the reply.
        let now = view.snapshot
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
                return try KDDMCoding.dec(ObjMsg.self, try await self.rpc.call(owner, service: KDDMService.grab,
                                                                         try KDDMCoding.enc(ObjMsg(key: key, view: snap.viewID, setRev: setRev, grab: gid)), timeout: timeout))
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
        // A grab is this node's, not a task's: two tasks of this node that grab and put the
        // same object can interleave grab, grab, put, put, and the second put finds none. A
        // conflict (nothing was written), which the callers' retry loops (ProcessTable.update,
        // changeCatalog) answer by grabbing again and applying their change to the newer value.
        guard let g = grabbed.removeValue(forKey: key) else {
            throw SSIError(.conflict, "kddm: put of \(key) without a grab held by this node (another task of this node put it meanwhile, or it was never grabbed); nothing was written",
                           hint: "grab it again, then put")
        }
        let e = epochs[key, default: 0]
        let lease = view.snapshot.lease
        do {
            try checkReachable()
            var clock = PhaseClock()
            defer { clock.profile("kddm: write at node \(g.owner)") }
            let r = try KDDMCoding.dec(ObjMsg.self, try await rpc.call(g.owner, service: service,
                                                                 try KDDMCoding.enc(ObjMsg(key: key, value: value, rev: g.rev, view: g.view, grab: g.grab))))
            cache[key] = nil
            // The owner recorded us as a reader of what we wrote.
            let now = view.snapshot
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
            guard let msg = try? KDDMCoding.enc(ObjMsg(key: key, grab: grab)) else { return }
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
        _ = try await rpc.call(g.owner, service: KDDMService.release, try KDDMCoding.enc(ObjMsg(key: key, grab: g.grab)))
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
                if failures > 50 || view.cutOff || (!evenUnknown && (error as? SSIError)?.kind == .unknownOutcome) { throw error }
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
            try KDDMCoding.dec(KDDMObjectState.self, try await self.rpc.call(o, service: KDDMService.state, try KDDMCoding.enc(ObjMsg(key: key))))
        }
        s.localCopy = grabbed[key] != nil ? "write (grabbed)" : cache[key] != nil ? "read copy (rev \(cache[key]!.rev))" : "none"
        return s
    }
}
