import Foundation
import SSINetwork
import SSISystem
import SSITransport

/// `ssi streams` in the daemon (issue 12, docs/streams.md): this node's connections between
/// applications, published in the KDDM set `streams` (object id = node) by the network
/// loop; the table read back from every online node; the byte counts a migration carries
/// over in `stream-bases` (object id = application).
extension NetworkSubsystem {
    static let streamsSet = "streams"
    static let basesSet = "stream-bases"

    /// Publishes this node's streams when the connections changed, or every second (their
    /// byte counts). `here`: the applications whose processes are on this node; a
    /// migration's source copy (`leaving`) is left to its target.
    func publishStreams(here: [(app: Int32, root: Int32, leaving: Bool)]) async throws {
        let me = core.config.node
        let addressOf = appAddress.value
        var entries: [StreamEntry] = []
        var known: [Int32: StreamBases] = state.withLock { $0.bases }
        for (app, root, leaving) in here where !leaving {
            guard let address = await addressOf(app) else { continue }
            if known[app] == nil,
               let b = try? await core.kddm.get(Self.basesSet, UInt64(UInt32(bitPattern: app))),
               let bases = try? JSONDecoder().decode(StreamBases.self, from: Data(b)), bases.node == me {
                known[app] = bases
            }
            entries += StreamScan.of(app: app, root: root, node: me, address: address, bases: known[app])
        }
        let present = Set(here.map(\.app))
        let mine = NodeStreams(node: me, entries: entries)
        let (old, at) = state.withLock { s in
            s.bases = known.filter { present.contains($0.key) }
            return (s.streams, s.streamsAt)
        }
        let sameConnections = old.map { $0.entries.map(\.key) == entries.map(\.key) } ?? false
        guard old != mine, !sameConnections || Date().timeIntervalSince(at) >= 1 else { return }
        try await core.kddm.store(Self.streamsSet, UInt64(me), Array(try JSONEncoder().encode(mine)))
        state.withLock { $0.streams = mine; $0.streamsAt = Date() }
    }

    /// Every online node's streams, paired into rows.
    func streamTable() async throws -> [StreamRow] {
        guard apps != nil else {
            throw SSIError(.unsupported, "node \(core.config.node) has no application network (network.app-subnet is not set), so no streams between applications",
                           hint: "set network.app-subnet on every node (the local cluster sets it) and start applications with ssi run --net app")
        }
        var published: [NodeStreams] = []
        for n in core.membership.online {
            if let b = try? await core.kddm.get(Self.streamsSet, UInt64(n)), let p = try? JSONDecoder().decode(NodeStreams.self, from: Data(b)) {
                published.append(p)
            }
        }
        var placed: [Int32: NodeID] = [:]
        for r in await appPlaces.value() { placed[r.app] = r.node }
        return StreamRow.table(published, where: placed)
    }

    /// At a migration's freeze: the totals of the application's connections, for its target.
    func streamBases(app: Int32, root: Int32, address: String, to target: NodeID) -> StreamBases {
        let had = state.withLock { $0.bases[app] }
        return StreamBases(node: target, entries: StreamScan.of(app: app, root: root, node: core.config.node, address: address, bases: had))
    }

    func storeBases(_ app: Int32, _ bases: StreamBases) async {
        guard let bytes = try? JSONEncoder().encode(bases) else { return }
        do { try await core.kddm.store(Self.basesSet, UInt64(UInt32(bitPattern: app)), Array(bytes)) } catch {
            core.logger.warning("network: byte counts of application \(app)'s streams not carried to node \(bases.node): \(error)")
        }
    }
}
