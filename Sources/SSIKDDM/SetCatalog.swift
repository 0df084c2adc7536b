import SSIMembership
import SSISystem
import SSITransport
import Synchronization

/// The sets this node knows, with their incarnation (the mod revision of their key), and the
/// hooks subsystems registered for them: shared by the owner and the client side.
final class SetCatalog: Sendable {
    let store: any KDDMStore
    private let known = Mutex<[String: (info: KDDMSetInfo, rev: Int64)]>([:])
    private let hookTable = Mutex<[String: any KDDMSetHooks]>([:])

    init(store: any KDDMStore) { self.store = store }

    /// The set, from memory unless `reload` (or unknown).
    func set(_ name: String, reload: Bool = false) async throws -> (info: KDDMSetInfo, rev: Int64) {
        if !reload, let s = known.withLock({ $0[name] }) { return s }
        guard let s = try await store.set(name) else {
            forget(name)
            throw SSIError(.notFound, "kddm: no set '\(name)'", hint: "ssi kddm sets lists them; ssi kddm create-set makes one")
        }
        known.withLock { $0[name] = s }
        return s
    }

    func remember(_ s: (info: KDDMSetInfo, rev: Int64)) { known.withLock { $0[s.info.name] = s } }
    func forget(_ name: String) { known.withLock { $0[name] = nil } }

    /// Replaces what is known by a full listing.
    func replaceAll(_ sets: [(info: KDDMSetInfo, rev: Int64)]) {
        known.withLock { k in k = Dictionary(sets.map { ($0.info.name, $0) }, uniquingKeysWith: { a, _ in a }) }
    }

    func register(_ h: any KDDMSetHooks, for set: String) { hookTable.withLock { $0[set] = h } }
    func hooks(_ set: String) -> (any KDDMSetHooks)? { hookTable.withLock { $0[set] } }

    /// The owner of `key` under the online set of `view`.
    func owner(_ key: ObjKey, in view: ViewSnapshot, asker: NodeID) async throws -> NodeID {
        let s = try await set(key.set)
        guard let o = s.info.rule.owner(of: key.id, online: view.online) else {
            throw SSIError(.state, "kddm: no online node to own \(key)", hint: "is node \(asker) online? ssi nodes status")
        }
        return o
    }
}
