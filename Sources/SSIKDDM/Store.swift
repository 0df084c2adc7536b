import SSIMembership
import SSITransport

// What KDDM stands on, behind small protocols so that the owner's coherence protocol can be
// driven without etcd or a network (Tests/SSIClusterTests/KDDMOwnerTests.swift): the durable
// store (`KDDMStore`, etcd in production), the membership view (`KDDMView`, `Membership`) and
// the other nodes (`KDDMPeers`, the RPC layer).

/// An object as the store holds it.
public struct StoredObject: Sendable, Equatable {
    /// Nil: no such object.
    public var value: [UInt8]?
    /// Its mod revision (0: none).
    public var rev: Int64
    /// The mod revision of its write tag (0: none yet).
    public var tagRev: Int64
    public init(value: [UInt8]?, rev: Int64, tagRev: Int64) {
        (self.value, self.rev, self.tagRev) = (value, rev, tagRev)
    }
}

/// The durable store of sets and objects. Each object has a write tag beside it: the id of
/// the grab whose write made its revision, or "void:ID" where an unknown outcome was settled
/// as not done.
public protocol KDDMStore: Sendable {
    func load(_ key: ObjKey) async throws -> StoredObject
    /// Writes `value` (nil: deletes the object) and `tag`, in one step, only if the object
    /// still has revision `expected`, its tag `tagExpected`, and `fence` (the view) holds.
    /// Returns the new revision, nil when a comparison failed; throws `unknownOutcome` when
    /// it cannot tell whether the write was done.
    func write(_ key: ObjKey, expected: Int64, _ value: [UInt8]?, tagExpected: Int64, tag: String, fence: EtcdClient.Fence) async throws -> Int64?
    /// If the tag still has revision `expected`, overwrites it with `void`: a write still
    /// pending on that revision can then never be done. Otherwise tells what the tag holds.
    func voidTag(_ key: ObjKey, expected: Int64, void: String) async throws -> (voided: Bool, revision: Int64, tag: (value: [UInt8], rev: Int64)?)
    /// Takes `node`'s lease away (the node stops trusting its copies a TTL later). Returns the
    /// lease revoked, nil when it holds none.
    func revokeLease(of node: NodeID) async throws -> Int64?

    func set(_ name: String) async throws -> (info: KDDMSetInfo, rev: Int64)?
    /// Creates the set unless it exists; returns nil when created, else what exists.
    func createSet(_ info: KDDMSetInfo) async throws -> (info: KDDMSetInfo, rev: Int64)?
    func sets() async throws -> [(info: KDDMSetInfo, rev: Int64)]
    /// Deletes the set and every object in it.
    func deleteSet(_ name: String) async throws
    func objectCount(_ set: String) async throws -> Int
    /// Every object of the set as stored (exported bytes), in id order: one range read.
    func objects(in set: String) async throws -> [(id: UInt64, value: [UInt8])]
}

/// What KDDM needs of the membership layer: the view it decides on.
public protocol KDDMView: Sendable {
    var snapshot: ViewSnapshot { get }
    /// True when this node has not heard from the membership service for over a second.
    var cutOff: Bool { get }
    /// Reads the view again.
    func refresh() async
}

extension Membership: KDDMView {}

/// What an owner asks of the other nodes.
public protocol KDDMPeers: Sendable {
    /// Drops `node`'s copy of `key`; throws when it does not acknowledge within `timeout`.
    func invalidate(_ key: ObjKey, on node: NodeID, timeout: Duration) async throws
}

/// The peers through the RPC layer.
struct RPCPeers: KDDMPeers {
    let rpc: RPCNode
    func invalidate(_ key: ObjKey, on node: NodeID, timeout: Duration) async throws {
        _ = try await rpc.call(node, service: KDDMService.invalidate, try KDDMCoding.enc(ObjMsg(key: key)), timeout: timeout)
    }
}
