import Foundation
import SSIKDDM
import SSIMembership
import SSISystem
import SSITransport

/// The cluster-wide application table and snapshot catalogue, in KDDM: every change is a
/// grab and a put of the object (so two nodes changing one record never lose each other's
/// change: the KDDM owner serialises grabs), every listing one range read of the set.
public struct ProcessTable: Sendable {
    public static let applicationsSet = "applications"
    public static let snapshotsSet = "snapshots"
    /// The counter object ids are drawn from (`counters/1`, docs/migration.md).
    static let counterSet = "counters"
    static let counterID: UInt64 = 1

    let kddm: KDDM
    let membership: Membership

    public init(kddm: KDDM, membership: Membership) {
        self.kddm = kddm
        self.membership = membership
    }

    /// A new application id, unique in the cluster: a KDDM increment is a grab and a put,
    /// so two nodes never get the same value.
    public func newID() async throws -> Int32 {
        let n = try await kddm.increment(Self.counterSet, Self.counterID, count: 1)
        guard n < Int(Int32.max) - Int(ApplicationID.base) else {
            throw SSIError(.state, "application ids are exhausted (counter \(Self.counterSet)/\(Self.counterID) = \(n))")
        }
        return ApplicationID.base + Int32(n)
    }

    public var onlineNodes: Set<NodeID> { online }
    var online: Set<NodeID> { Set(membership.view.values.filter { $0.state == .online }.map(\.id)) }

    /// Writes a new record (at launch).
    public func insert(_ r: AppRecord) async throws {
        try await kddm.store(Self.applicationsSet, UInt64(r.app), r.encoded())
    }

    /// Changes a record under a grab; returns the record written. Throws notFound when the
    /// application is unknown. A write refused because the grab was lost (the membership
    /// view changed meanwhile: a node's lease renewed late, a node joined), or a grab refused
    /// because another task of this node holds the record, is done again on
    /// the record as it is then: `change` is a function of the record, so applying it to the
    /// newer value is what the caller meant.
    @discardableResult
    public func update(_ app: Int32, _ change: @Sendable (inout AppRecord) throws -> Void) async throws -> AppRecord {
        var attempt = 0
        while true {
            do {
                return try await updateOnce(app, change)
            } catch let e as SSIError where (e.kind == .conflict || e.kind == .busy) && attempt < 5 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
    }

    private func updateOnce(_ app: Int32, _ change: @Sendable (inout AppRecord) throws -> Void) async throws -> AppRecord {
        var r = try await hold(app)
        do { try change(&r) } catch {
            await release(app)
            throw error
        }
        // Not released after a failed put: the put has given the grab back itself
        // (KDDMClient.write), and a release by key here would free another task's grab of
        // the same record on this node, taken meanwhile. A put that finds the node's grab
        // given back by another update of this node (two migrations asked at once) is a
        // conflict: `update` tries again on the other's record.
        try await put(r)
        return r
    }

    /// Takes the record's grab and returns it as written: no other node changes it until
    /// `put` or `release` (a migration's target holds it while it restores, so that its
    /// taking over and the source giving up cannot both happen).
    public func hold(_ app: Int32) async throws -> AppRecord {
        guard let bytes = try await kddm.grab(Self.applicationsSet, UInt64(app)) else {
            try? await kddm.release(Self.applicationsSet, UInt64(app))
            throw Self.unknown(app)
        }
        do { return try AppRecord.decode(bytes) } catch {
            try? await kddm.release(Self.applicationsSet, UInt64(app))
            throw error
        }
    }

    /// Writes a held record (the grab goes with the write).
    public func put(_ r: AppRecord) async throws { try await kddm.put(Self.applicationsSet, UInt64(r.app), r.encoded()) }

    /// Gives a held record back unchanged.
    public func release(_ app: Int32) async { try? await kddm.release(Self.applicationsSet, UInt64(app)) }

    /// The record as written (no `lost` marking).
    public func raw(_ app: Int32) async throws -> AppRecord {
        guard let b = try await kddm.get(Self.applicationsSet, UInt64(app)) else { throw Self.unknown(app) }
        return try AppRecord.decode(b)
    }

    /// The record as readers show it: `lost` when its node is not online.
    public func record(_ app: Int32) async throws -> AppRecord {
        try await raw(app).seen(online: online)
    }

    /// Every application of the cluster, in id order.
    public func list() async throws -> [AppRecord] {
        let on = online
        return try await kddm.list(Self.applicationsSet).compactMap { try? AppRecord.decode($0.value).seen(online: on) }
    }

    static func unknown(_ app: Int32) -> SSIError {
        SSIError(.notFound, "no application \(app) in the cluster", hint: "ssi ps lists the cluster's applications")
    }

    // MARK: snapshots

    public func catalog(_ app: Int32) async throws -> SnapshotCatalog {
        guard let b = try await kddm.get(Self.snapshotsSet, UInt64(app)) else { return SnapshotCatalog(app: app) }
        return try SnapshotCatalog.decode(b)
    }

    public func catalogs() async throws -> [SnapshotCatalog] {
        try await kddm.list(Self.snapshotsSet).compactMap { try? SnapshotCatalog.decode($0.value) }
    }

    /// Forgets version `version` of `app`; returns what remains.
    public func removeSnapshot(_ app: Int32, _ version: Int) async throws -> SnapshotCatalog {
        try await changeCatalog(app) { $0.versions.removeAll { $0.version == version } }
    }

    /// Records that `node` holds version `v` of `app`.
    public func addSnapshot(_ app: Int32, _ v: SnapshotCatalog.Version, holder node: NodeID) async throws {
        try await changeCatalog(app) { $0.add(v, holder: node) }
    }

    /// Marks version `version` of `app` as one of a group taken together.
    public func markTogether(_ app: Int32, _ version: Int, _ together: SnapshotCatalog.Together) async throws {
        try await changeCatalog(app) { c in
            if let i = c.versions.firstIndex(where: { $0.version == version }) { c.versions[i].together = together }
        }
    }

    /// A catalog change under a grab, done again on the newer catalog when the grab was lost
    /// to a membership change or is held by another task of this node (as `update`). A
    /// failed put has given the grab back itself: no release by key after it.
    @discardableResult
    private func changeCatalog(_ app: Int32, _ change: @Sendable (inout SnapshotCatalog) -> Void) async throws -> SnapshotCatalog {
        let id = UInt64(app)
        var attempt = 0
        while true {
            do {
                let old = try await kddm.grab(Self.snapshotsSet, id)
                var c = (try? old.map(SnapshotCatalog.decode)) ?? nil ?? SnapshotCatalog(app: app)
                change(&c)
                try await kddm.put(Self.snapshotsSet, id, c.encoded())
                return c
            } catch let e as SSIError where (e.kind == .conflict || e.kind == .busy) && attempt < 5 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
    }
}
