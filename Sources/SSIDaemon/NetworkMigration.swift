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
    /// "Make this application's namespace and link now, for its migration here" (AppAddress).
    static let networkPrepare = ServiceBlock.network.number(2)
}

/// What a migration's source asks its target to prepare.
struct AppAddress: Codable {
    var app: Int32
    var address: String
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
    /// Applications whose own address is held on this node (a migration's source).
    private let addressLocked = Mutex<[Int32: (address: String, target: NodeID)]>([:])

    init(net: NetworkSubsystem) { self.net = net }

    static func lockTable(_ app: Int32) -> String { "ssi-mig-\(app)" }

    func sourceWillFreeze(app: Int32, root: Int32, address: String?, to target: NodeID) async throws -> MigrationPlan {
        if let address {
            guard net.apps != nil else {
                throw SSIError(.unsupported, "application \(app) has the address \(address), but node \(net.core.config.node) has no application network; nothing was changed",
                               hint: "set network.app-subnet on every node")
            }
            return try await holdAddress(app: app, root: root, address: address, to: target)
        }
        guard let ip = net.clusterIP else { return MigrationPlan() }
        let outside = Connections.toOutside(root: root)
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

    /// An application with an address of its own (AppNetwork.swift): in its namespace,
    /// every connection to a peer outside it is from its address, which goes with it; so
    /// they all follow it (the engine saves them with TCP_REPAIR), and its address's
    /// packets are dropped on this node from now on, so that the copy about to go
    /// acknowledges nothing sent after the snapshot (the peer's TCP sends it again, to the
    /// target once the routes turn).
    private func holdAddress(app: Int32, root: Int32, address: String, to target: NodeID) async throws -> MigrationPlan {
        let outside = Connections.toOutside(root: root)
        if let other = outside.first(where: { $0.local != address }) {
            throw SSIError(.unsupported, "application \(app) has a TCP connection \(other.description) that is not from its address \(address): it cannot follow the application to node \(target); nothing was changed",
                           hint: "close that connection first")
        }
        let side = net.apps
        addressLocked.withLock { $0[app] = (address, target) }
        // The target makes the namespace and link while the application still runs here.
        do {
            let req = Array(try JSONEncoder().encode(AppAddress(app: app, address: address)))
            _ = try await net.core.rpc.call(target, service: ServiceBlock.networkPrepare, req, timeout: .seconds(10))
        } catch {
            net.core.logger.warning("network: node \(target) could not prepare application \(app)'s namespace ahead (it will at the restore): \(error)")
        }
        let logger = net.core.logger, n = outside.count
        // From the freeze on (before the sockets are read), not before the memory copy: the
        // peers' traffic stops for the freeze only.
        let lock: @Sendable () throws -> Void = {
            try side?.lock(app: app, address: address)
            logger.info("network: application \(app): address \(address) held for the move to node \(target) (\(n) connection(s))")
        }
        return MigrationPlan(tcpEstablished: !outside.isEmpty, whenFrozen: [lock])
    }

    /// The source copy is stopped: every connection it has through the cluster address (one
    /// accepted between the lock and the freeze included), or from its own address, is
    /// silenced.
    func sourceWillKill(app: Int32, root: Int32) async {
        if let (address, target) = addressLocked.withLock({ $0[app] }) {
            // The target's copy runs: what was held goes there.
            if let hop = net.core.membership.view[target]?.host, let hold = net.apps?.packetHold {
                let n = hold.release(address, gateway: hop)
                net.core.logger.info("network: application \(app): \(n) packet(s) held during the move passed on to node \(target)")
            }
            // The byte counts of its connections, for the target to go on from: the same as
            // at the freeze, since nothing has come in or gone out of the locked copy since.
            let bases = net.streamBases(app: app, root: root, address: address, to: target)
            Connections.silence(Connections.toOutside(root: root))
            await net.storeBases(app, bases)
            return
        }
        guard let ip = net.clusterIP, locked.withLock({ $0[app] }) != nil else { return }
        Connections.silence(Connections.established(root: root).filter { $0.local == ip })
    }

    func sourceDidFinish(app: Int32, committed: Bool) async {
        if let (address, _) = addressLocked.withLock({ $0.removeValue(forKey: app) }) {
            if committed {
                // Every node's route turns to the target; the source copy's namespace went
                // with its processes.
                await net.refreshEverywhere()
                AppAddressLock.discard(app: app)
            } else {
                // It goes on here: its link up again (a route needs it up), its link route
                // back, and what was held is its own.
                net.apps?.unlock(app: app, address: address)
            }
            return
        }
        guard locked.withLock({ $0.removeValue(forKey: app) }) != nil else { return }
        let table = Self.lockTable(app)
        if !committed { Connections.unlock(table: table); return }
        await net.refreshEverywhere()
        Task {
            try? await Task.sleep(for: .seconds(5))
            Connections.unlock(table: table)
        }
    }

    /// Every node is asked to turn its routes and steering to this node, without waiting
    /// for the answers: the source passes on what comes to it meanwhile, and the migration's
    /// freeze ends sooner.
    func targetDidResume(app: Int32, root: Int32, from source: NodeID) async {
        let net = self.net
        Task { await net.refreshEverywhere() }
    }
}

extension NetworkSubsystem {
    func start() async throws {
        let me = self
        core.rpc.register(ServiceBlock.networkRefresh) { _, _ in
            do { try await me.refresh() } catch { me.failed(error) }
            return []
        }
        registerTCPState()
        core.rpc.register(ServiceBlock.networkPrepare) { _, payload in
            guard let apps = me.apps else {
                throw SSIError(.unsupported, "node \(me.core.config.node) has no application network (network.app-subnet is not set)", hint: "set it on every node")
            }
            let a = try JSONDecoder().decode(AppAddress.self, from: Data(payload))
            try apps.prepare(app: a.app, address: a.address)
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
