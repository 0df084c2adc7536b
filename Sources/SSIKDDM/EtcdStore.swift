import Foundation
import SSIMembership
import SSITransport

/// KDDM's store in etcd, under `/ssi/<session>/kddm/`:
///
///     sets/<name>                 KDDMSetInfo (JSON); its mod revision is the set's incarnation
///     obj/<set>/<16 hex digits>   an object's exported bytes
///     obj/<set>/<id>/w            the object's write tag
public struct EtcdStore: KDDMStore {
    let etcd: EtcdClient
    /// The session's prefix (`Membership.prefix`): nodes' lease keys are under it.
    let session: String
    var prefix: String { session + "kddm/" }

    public init(etcd: EtcdClient, sessionPrefix: String) {
        self.etcd = etcd
        self.session = sessionPrefix
    }

    func objectKey(_ k: ObjKey) -> String { prefix + "obj/\(k.set)/" + String(format: "%016llx", k.id) }
    /// Ids have 16 hex digits, so [object, object + "0") holds exactly the object and its tag.
    func tagKey(_ k: ObjKey) -> String { objectKey(k) + "/w" }

    public func load(_ key: ObjKey) async throws -> StoredObject {
        let objKey = objectKey(key)
        let (kvs, _) = try await etcd.list(from: objKey, to: Array((objKey + "0").utf8))
        let kv = kvs.first { $0.key == objKey }
        return StoredObject(value: kv?.value, rev: kv?.modRevision ?? 0, tagRev: kvs.first { $0.key == tagKey(key) }?.modRevision ?? 0)
    }

    public func write(_ key: ObjKey, expected: Int64, _ value: [UInt8]?, tagExpected: Int64, tag: String, fence: EtcdClient.Fence) async throws -> Int64? {
        try await etcd.taggedWrite(objectKey(key), expected: expected, value, tagKey: tagKey(key), tagExpected: tagExpected, tag: tag, fence: fence)
    }

    public func voidTag(_ key: ObjKey, expected: Int64, void: String) async throws -> (voided: Bool, revision: Int64, tag: (value: [UInt8], rev: Int64)?) {
        let r = try await etcd.voidTag(tagKey(key), expected: expected, void: void)
        return (r.voided, r.revision, r.tag.map { ($0.value, $0.modRevision) })
    }

    public func revokeLease(of node: NodeID) async throws -> Int64? {
        guard let kv = try await etcd.get(session + "present/\(node)"), kv.lease != 0 else { return nil }
        try await etcd.revoke(kv.lease)
        return kv.lease
    }

    public func set(_ name: String) async throws -> (info: KDDMSetInfo, rev: Int64)? {
        guard let kv = try await etcd.get(prefix + "sets/\(name)") else { return nil }
        return (try KDDMCoding.dec(KDDMSetInfo.self, kv.value), kv.modRevision)
    }

    public func createSet(_ info: KDDMSetInfo) async throws -> (info: KDDMSetInfo, rev: Int64)? {
        guard let kv = try await etcd.createIfAbsent(prefix + "sets/\(info.name)", try KDDMCoding.enc(info)) else { return nil }
        return (try KDDMCoding.dec(KDDMSetInfo.self, kv.value), kv.modRevision)
    }

    public func sets() async throws -> [(info: KDDMSetInfo, rev: Int64)] {
        try await etcd.list(prefix: prefix + "sets/").compactMap { kv in
            (try? KDDMCoding.dec(KDDMSetInfo.self, kv.value)).map { ($0, kv.modRevision) }
        }
    }

    /// Objects first, then the set: a delete cut short leaves an empty set, and running it
    /// again finishes the job.
    public func deleteSet(_ name: String) async throws {
        try await etcd.delete(prefix: prefix + "obj/\(name)/")
        try await etcd.delete(prefix + "sets/\(name)")
    }

    public func objectCount(_ set: String) async throws -> Int {
        try await etcd.list(prefix: prefix + "obj/\(set)/").filter { !$0.key.hasSuffix("/w") }.count
    }

    /// One range read over `obj/<set>/`: etcd answers it from a single revision (the range
    /// API reads at one revision), so the listing is a consistent cut of the set. Tags
    /// (`.../w`) are skipped; ids are the 16 hex digits of the key.
    public func objects(in set: String) async throws -> [(id: UInt64, value: [UInt8])] {
        let base = prefix + "obj/\(set)/"
        return try await etcd.list(prefix: base).compactMap { kv in
            let rest = kv.key.dropFirst(base.count)
            guard rest.count == 16, let id = UInt64(rest, radix: 16) else { return nil }
            return (id, kv.value)
        }.sorted { $0.id < $1.id }
    }
}
