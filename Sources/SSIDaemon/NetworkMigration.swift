import Foundation
import SSINetwork
import SSIProcessTable
import SSISystem
import SSITransport
import Synchronization

extension ServiceBlock {
    /// "Read the port table again now": sent to every node when an application with ports
    /// has moved, so that steering follows it at once rather than at the next round.
    static let networkRefresh = ServiceBlock.network.number(1)
}

/// The cluster address's side of a migration (docs/network.md, "Migration"): TCP connections
/// that came in through the cluster address follow their server. On the source: refused
/// before anything stops if another outside connection cannot follow; their packets held
/// back (Connections.lock) from before the freeze; the source copy's sockets silenced
/// (repair mode) before it is killed; the lock kept a few seconds after, while every node's
/// steering turns to the target, so that no packet meets a node with no socket (which
/// would answer with a reset). On the target: every node is asked to read the port table
/// again at once.
final class NetworkMigrationHooks: MigrationHooks {
    let net: NetworkSubsystem
    private let locked = Mutex<[Int32: [UInt16]]>([:])

    init(net: NetworkSubsystem) { self.net = net }

    static func lockTable(_ app: Int32) -> String { "ssi-mig-\(app)" }

    func sourceWillFreeze(app: Int32, root: Int32, to target: NodeID) async throws -> MigrationPlan {
        guard let ip = net.clusterIP else { return MigrationPlan() }
        let all = Connections.established(root: root)
        let inside = Connections.internalPairs(all)
        let outside = all.filter { !inside.contains($0.inode) }
        if let other = outside.first(where: { $0.local != ip }) {
            throw SSIError(.unsupported, "application \(app) has a TCP connection \(other.description) to a peer outside it that did not come in through the cluster address \(ip): it cannot follow the application to node \(target); nothing was changed",
                           hint: "close that connection first; connections to the cluster address (\(ip)) follow their server")
        }
        let listening = ListeningSockets.of(app: app, root: root, node: net.core.config.node, clusterIP: ip).filter { $0.proto == .tcp && $0.exposed }.map(\.port)
        let ports = Array(Set(listening + outside.map(\.localPort)))
        guard !ports.isEmpty else { return MigrationPlan() }
        try Connections.lock(table: Self.lockTable(app), clusterIP: ip, ports: ports)
        locked.withLock { $0[app] = ports }
        net.core.logger.info("network: application \(app): port(s) \(ports.sorted()) of \(ip) held for the move to node \(target) (\(outside.count) connection(s))")
        return MigrationPlan(tcpEstablished: !outside.isEmpty)
    }

    /// The source copy is stopped: every connection it has through the cluster address (one
    /// accepted between the lock and the freeze included) is silenced.
    func sourceWillKill(app: Int32, root: Int32) async {
        guard let ip = net.clusterIP, locked.withLock({ $0[app] }) != nil else { return }
        Connections.silence(Connections.established(root: root).filter { $0.local == ip })
    }

    func sourceDidFinish(app: Int32, committed: Bool) async {
        guard locked.withLock({ $0.removeValue(forKey: app) }) != nil else { return }
        let table = Self.lockTable(app)
        if !committed { Connections.unlock(table: table); return }
        await net.refreshEverywhere()
        Task {
            try? await Task.sleep(for: .seconds(5))
            Connections.unlock(table: table)
        }
    }

    func targetDidResume(app: Int32, root: Int32, from source: NodeID) async {
        await net.refreshEverywhere()
    }
}

extension NetworkSubsystem {
    func start() async throws {
        let me = self
        core.rpc.register(ServiceBlock.networkRefresh) { _, _ in
            do { try await me.refresh() } catch { me.failed(error) }
            return []
        }
    }

    /// This node's table now, then every other online node's.
    func refreshEverywhere() async {
        do { try await refresh() } catch { failed(error) }
        await withTaskGroup(of: Void.self) { g in
            for n in core.membership.online where n != core.config.node {
                g.addTask { _ = try? await self.core.rpc.call(n, service: ServiceBlock.networkRefresh, [], timeout: .seconds(2)) }
            }
        }
    }
}
