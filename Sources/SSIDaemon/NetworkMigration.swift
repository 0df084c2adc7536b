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
    private let locked = Mutex<[Int32: [TCPConnection]]>([:])

    init(net: NetworkSubsystem) { self.net = net }

    static func lockTable(_ app: Int32) -> String { "ssi-mig-\(app)" }

    func sourceWillFreeze(app: Int32, root: Int32, to target: NodeID) async throws -> MigrationPlan {
        guard let ip = net.clusterIP else { return MigrationPlan() }
        let all = Connections.established(root: root)
        let inside = Connections.internalPairs(all)
        let outside = all.filter { !inside.contains($0.inode) }
        guard !outside.isEmpty else { return MigrationPlan() }
        if let other = outside.first(where: { $0.local != ip }) {
            throw SSIError(.unsupported, "application \(app) has a TCP connection \(other.description) to a peer outside it that did not come in through the cluster address \(ip): it cannot follow the application to node \(target); nothing was changed",
                           hint: "close that connection first; connections to the cluster address (\(ip)) follow their server")
        }
        try Connections.lock(table: Self.lockTable(app), outside)
        locked.withLock { $0[app] = outside }
        net.core.logger.info("network: application \(app): \(outside.count) connection(s) through \(ip) held for the move to node \(target)")
        return MigrationPlan(tcpEstablished: true)
    }

    func sourceWillKill(app: Int32, root: Int32) async {
        guard let conns = locked.withLock({ $0[app] }) else { return }
        Connections.silence(conns)
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
