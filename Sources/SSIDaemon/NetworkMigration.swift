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
    /// A migration's lock of the cluster address's ports (Connections.lockRuleset) on its
    /// source, by application.
    struct ClusterLock {
        var ports: [UInt16]
        /// What comes in is held (the node has a PacketHold), not dropped.
        var holding: Bool
        /// Made (at the freeze): a migration that failed before has nothing to undo.
        var applied = false
        /// Where the application goes.
        var target: NodeID
    }
    private let locked = Mutex<[Int32: ClusterLock]>([:])
    /// Applications whose own address is held on this node (a migration's source).
    private let addressLocked = Mutex<[Int32: (address: String, target: NodeID, root: Int32)]>([:])

    init(net: NetworkSubsystem) { self.net = net }

    static func lockTable(_ app: Int32) -> String { "ssi-mig-\(app)" }
    static func holdKey(_ app: Int32) -> String { "cluster-\(app)" }

    /// The held packets of `app` given back: steered again (to the target once steering has
    /// turned; back to the source copy after a failed move).
    private func giveBack(_ app: Int32, turned: Bool) {
        guard let hold = net.apps?.packetHold else { return }
        Connections.endHold(table: Self.lockTable(app))
        let n = hold.release(key: Self.holdKey(app))
        net.core.logger.info("network: application \(app): \(n) packet(s) held during the move given back\(turned ? ", steered to its new node" : "")")
    }

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
        let hold = net.apps?.packetHold, key = Self.holdKey(app), table = Self.lockTable(app), logger = net.core.logger
        locked.withLock { $0[app] = ClusterLock(ports: ports, holding: hold != nil, target: target) }
        // From the freeze on (before the sockets are read), not during the memory's pre-copy:
        // the clients' traffic stops for the freeze only. What comes meanwhile is held and
        // given back once the target runs (sourceWillKill). Holding it before the freeze,
        // with the application's answers flowing (as for an application's own address), was
        // tried: the moves measured 205-211 ms again (a retransmission timeout, not
        // understood yet).
        let n = outside.count
        // Without a hold, everything is dropped from the freeze on.
        guard let hold else {
            let lock: @Sendable () throws -> Void = {
                try Connections.lock(table: table, clusterIP: ip, ports: ports)
                self.locked.withLock { $0[app]?.applied = true }
            }
            return MigrationPlan(tcpEstablished: true, whenFrozen: [lock])
        }
        // What it sends flows until the freeze (its answers; the ends of connections it
        // closes meanwhile, whose sockets no snapshot has once their fds are gone); then
        // nothing goes out either.
        let lock: @Sendable () throws -> Void = {
            try hold.hold(key: key, address: ip, tcpPorts: Set(ports))
            do { try Connections.lock(table: table, clusterIP: ip, ports: ports, holdMark: PacketHold.mark) } catch {
                hold.forget(key: key)
                throw error
            }
            self.locked.withLock { $0[app]?.applied = true }
            logger.info("network: application \(app): port(s) \(ports.sorted()) of \(ip) held for the move to node \(target) (\(n) connection(s))")
        }
        return MigrationPlan(tcpEstablished: true, whenFrozen: [lock])
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
        addressLocked.withLock { $0[app] = (address, target, root) }
        // The target makes the namespace and link while the application still runs here.
        do {
            let req = Array(try JSONEncoder().encode(AppAddress(app: app, address: address)))
            _ = try await net.core.rpc.call(target, service: ServiceBlock.networkPrepare, req, timeout: .seconds(10))
        } catch {
            net.core.logger.warning("network: node \(target) could not prepare application \(app)'s namespace ahead (it will at the restore): \(error)")
        }
        let logger = net.core.logger, n = outside.count
        // Just before the freeze, not during the memory's pre-copy: what comes for it is
        // held (and goes to the target), and the application, still running, reads what its
        // sockets have received and accepts what its listeners have waiting (a bulk
        // receiver's queue holds megabytes, which would otherwise be saved, sent and rebuilt
        // inside the freeze; a connection waiting to be accepted refuses the migration). What
        // it sends flows until the freeze: its answers, and the ends (FIN) of connections it
        // closes meanwhile, whose sockets no snapshot has once their fds are gone.
        let hold: @Sendable () throws -> Void = {
            var clock = PhaseClock()
            defer { clock.mark("network: incoming held, connections drained") }
            // Its listeners, found before the hold (a walk of its fds): a new one has no
            // connection to accept meanwhile, the SYNs being held.
            let listeners = Connections.listening(root: root)
            clock.mark("network: listeners found")
            let handshakes = { side?.completeHandshakes(app: app, address: address, root: root) ?? 0 }
            // With listeners, first only the new connections are held, for 15 ms, while its
            // streams flow (its peers see no stall yet): a handshake's last ACK already on its
            // way lands meanwhile and the connection is accepted. Held at once with the rest
            // (before), such an ACK could land after a quicker drain and leave a connection
            // waiting to be accepted, which refuses the dump (seen in CI once /proc/net/tcp
            // reads became fast); so every migration of a listener stalled its streams for
            // the 15 ms as well.
            var newHeld = false
            if !listeners.isEmpty {
                // Without it (nft refused), the full hold waits the 15 ms as before.
                do { newHeld = try side?.holdNewConnections(address: address) == true } catch {
                    logger.warning("network: application \(app): its new connections could not be held apart (\(error)); its streams wait with them")
                }
            }
            if newHeld {
                clock.mark("network: new connections held")
                Connections.drain([], listeners: listeners, settle: .milliseconds(15), handshakes: handshakes)
                clock.mark("network: handshakes under way accepted")
            }
            guard try side?.holdIncoming(app: app, address: address, root: root) == true else { return }
            clock.mark("network: incoming held")
            // The mark of new connections is not needed once everything is held: removed while
            // the streams drain (an nft run), and on every other path (unlock, sourceWillKill).
            if newHeld { Thread { side?.endHoldNewConnections(address: address) }.start() }
            let left = Connections.drain(outside, listeners: listeners, settle: listeners.isEmpty || newHeld ? .zero : .milliseconds(15),
                                         handshakes: handshakes)
            logger.info("network: application \(app): address \(address) held for the move to node \(target) (\(n) connection(s); \(left.unread) byte(s) left unread, \(left.waiting) connection(s) left to accept\(newHeld ? "; its new connections held first" : ""))")
        }
        // At the freeze, before the sockets are read: nothing goes out either; then what
        // was held for its connections is given to it (AppNetworkSide.deliverHeld).
        let lock: @Sendable () throws -> Void = {
            var clock = PhaseClock()
            try side?.lock(app: app, address: address, root: root)
            clock.mark("network: address locked")
            side?.deliverHeld(app: app, address: address, root: root)
            clock.mark("network: held packets given to the frozen copy")
        }
        // Connections accepted while it drains are saved too.
        var plan = MigrationPlan(tcpEstablished: true, whenFrozen: [lock], beforeFreeze: [hold])
        // What its peers acknowledged after its sockets were saved (held here meanwhile):
        // the target's restore starts each send queue there (RestartOptions.tcpPeerAcks).
        let holder = side
        plan.peerAcknowledgements = { holder?.packetHold?.latestAcks(key: address) ?? [:] }
        // With its direct link, what it sent went out through a link with no queue of its
        // own (macvlan): none of it waits on this node to be lost, and its peers may
        // acknowledge it late (a delayed acknowledgement came 42 ms after the freeze).
        plan.keepSentTCP = side?.direct != nil
        return plan
    }

    /// The source copy is stopped: every connection it has through the cluster address (one
    /// accepted between the lock and the freeze included), or from its own address, is
    /// silenced.
    func sourceWillKill(app: Int32, root: Int32) async {
        if let (address, target, _) = addressLocked.withLock({ $0[app] }) {
            // The hold of its new connections ended during the drain (the hold, above); only
            // if that nft run has not finished (or failed) is it ended here, before the
            // release: a SYN the rule still marked after it would meet no hold and be lost
            // (the client tries again a second later). Otherwise no nft run (10-30 ms) stands
            // between its peers and what was held for them.
            if net.apps?.packetHold?.newConnectionsHeld(address) == true {
                net.apps?.endHoldNewConnections(address: address)
            }
            // The target's copy runs: what was held goes there (every peer waits for it).
            if let hop = net.core.membership.view[target]?.host, let hold = net.apps?.packetHold {
                var clock = PhaseClock()
                let n = hold.release(address, gateway: hop)
                clock.profile("network: held packets passed on")
                net.core.logger.info("network: application \(app): \(n) packet(s) held during the move passed on to node \(target)")
            }
            // The byte counts of its connections, for the target to go on from: the same as
            // at the freeze, since nothing has come in or gone out of the locked copy since.
            let bases = net.streamBases(app: app, root: root, address: address, to: target)
            Connections.silence(Connections.toOutside(root: root))
            await net.storeBases(app, bases)
            return
        }
        guard let ip = net.clusterIP, let lock = locked.withLock({ $0[app] }) else { return }
        Connections.silence(Connections.established(root: root).filter { $0.local == ip })
        // The target's copy runs: this node steers the application's flows there now, and
        // what it held goes after them (early demux is off here while the lock stands, so the
        // source copy's sockets, until they go, take none of them: EarlyDemux).
        net.place(app, on: lock.target)
        if lock.holding { giveBack(app, turned: true) }
    }

    /// The target's sockets are rebuilt: flows that enter here go to them now, before the
    /// port table says so (a packet of theirs steered on to the source would be dropped:
    /// early demux gives it the rebuilt socket, and forwarding refuses a packet that has one).
    func targetRebuilt(app: Int32, from source: NodeID) {
        net.place(app, on: net.core.config.node)
    }

    func sourceDidFinish(app: Int32, committed: Bool) async {
        if let (address, _, root) = addressLocked.withLock({ $0.removeValue(forKey: app) }) {
            if committed {
                // Every node's route turns to the target; the source copy's namespace went
                // with its processes.
                await net.refreshEverywhere()
                AppAddressLock.discard(app: app)
            } else {
                // It goes on here: its link up again (a route needs it up), its link route
                // back, and what was held is its own.
                net.apps?.unlock(app: app, address: address, root: root)
            }
            return
        }
        guard let lock = locked.withLock({ $0[app] }) else { return }
        let table = Self.lockTable(app)
        if !committed {
            // It goes on here: the drops gone, what was held is steered to it again.
            let applied = locked.withLock { $0.removeValue(forKey: app)?.applied ?? false }
            Connections.unlock(table: table, held: lock.holding && applied)
            if lock.holding { giveBack(app, turned: false) }
            return
        }
        // What was held went to the target (sourceWillKill). The drops stay a few seconds,
        // while every node's steering turns, so that no late packet meets the killed copy's
        // node with no socket (a reset).
        await net.refreshEverywhere()
        Task {
            try? await Task.sleep(for: .seconds(5))
            let applied = locked.withLock { $0.removeValue(forKey: app)?.applied ?? false }
            Connections.unlock(table: table, held: lock.holding && applied)
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
