import Foundation
import SSICheckpoint
import SSINetwork
import SSIProcessTable
import SSISystem
import SSITransport
import Synchronization

/// Application addresses in the daemon (issue 12, docs/streams.md): `network.app-subnet`
/// turns them on. Launch, restart and a migration's target make an application's namespace
/// through `attach` (the process table's ApplicationNetwork); every round of the network
/// loop (NetworkSubsystem.refresh) brings this node's routes to the other nodes'
/// applications up to date from the application table; a migration's source holds the
/// address's packets back while the application is copied (NetworkMigrationHooks).
final class AppNetworkSide: ApplicationNetwork, @unchecked Sendable {
    let subnet: AppSubnet
    let core: NodeCore
    /// The routes this node has installed (nil until the first round, which reads them).
    private let applied = Mutex<AppRoutes?>(nil)
    private let kernelReady = Mutex(false)
    /// Packets to applications leaving this node, held during their move (made on first use;
    /// nil inside when it could not be: they are dropped instead).
    private let holdState = Mutex<(tried: Bool, hold: PacketHold?)>((false, nil))

    var packetHold: PacketHold? {
        holdState.withLock { s in
            if !s.tried {
                s.tried = true
                do { s.hold = try PacketHold() } catch {
                    core.logger.warning("network: packets of moving applications will be dropped, not held (their peers send them again): \(error)")
                }
            }
            return s.hold
        }
    }

    /// Every node's routes brought up to date now (NetworkSubsystem.refreshEverywhere).
    let refreshAll = ClosureCell<@Sendable () async -> Void>({})
    /// Where a connection's peer stands (NetworkSubsystem.peerState, TCPPeersPart.swift).
    let peerStates = ClosureCell<(@Sendable (String, UInt16, String, UInt16) async -> TCPPeerCheckResult)?>(nil)

    /// Per held address of an application with listeners: its connections (established or
    /// closing) at the drain's last look (completeHandshakes); `deliverHeld` gives the frozen
    /// copy the held packets of those only.
    private let drainedConnections = Mutex<[String: Set<String>]>([:])

    /// `network.app-links`: direct (each application also has a link of its own on the
    /// node's LAN, AppDirectLink) or routed (through its node only).
    let directLinks: Bool

    init(subnet: AppSubnet, core: NodeCore, directLinks: Bool = false) { (self.subnet, self.core, self.directLinks) = (subnet, core, directLinks) }

    /// The node's LAN interface for direct links (the one carrying its address), found once;
    /// nil when direct links are off or it cannot be found (then the routed path alone).
    private let uplinkState = Mutex<(tried: Bool, name: String?)>((false, nil))
    var direct: (uplink: String, subnet: AppSubnet)? {
        guard directLinks, let me = myAddress else { return nil }
        let name = uplinkState.withLock { s -> String? in
            // Looked for again while not found (the address may come later), said once.
            if s.name == nil {
                s.name = AppDirectLink.interface(carrying: me)
                if s.name == nil && !s.tried { core.logger.warning("network: no interface of node \(core.config.node) carries its address \(me): applications get no direct link (network.app-links), their traffic goes through the node") }
                s.tried = true
            }
            return s.name
        }
        return name.map { ($0, subnet) }
    }

    func placed(app: Int32) async { await refreshAll.value() }

    func address(for app: Int32) throws -> String { try subnet.address(of: app) }

    func attach(app: Int32, address: String, routed: Bool) throws -> Int32 {
        guard subnet.contains(address) else {
            throw SSIError(.invalidArgument, "application \(app)'s address \(address) is not in node \(core.config.node)'s application subnet \(subnet)",
                           hint: "every node must have the same network.app-subnet")
        }
        try prepareKernel()
        // Made ahead by the migration (prepare): only the route is left to do.
        if let ready = prepared.withLock({ $0.removeValue(forKey: app) }) {
            if ready.address == address && AppLink.interfaceExists(AppSubnet.hostInterface(app)) {
                do {
                    if routed { try route(app: app, address: address, namespace: ready.fd) }
                    return ready.fd
                } catch { close(ready.fd); throw error }
            }
            close(ready.fd)
        }
        return try AppLink.make(app: app, address: address, nodeAddress: myAddress, route: routed, direct: direct)
    }

    func lock(app: Int32, address: String, root: Int32) throws {
        // What its peers send straight to its MAC enters the node from now on, to be held
        // or dropped there like the rest.
        if let d = direct {
            try AppDirectLink.divert(app: app, root: root, uplink: d.uplink)
            try AppDirectLink.silence(app: app, root: root)
        }
        let hold = packetHold
        try AppAddressLock.lock(app: app, address: address, holding: hold != nil)
        do { try hold?.hold(address) } catch {
            AppAddressLock.unlock(app: app)
            throw error
        }
    }

    /// Holds what comes for `address` from now on (PacketHold), the application's own
    /// traffic still flowing: a migration's first step, before the freeze (`lock` follows at
    /// the freeze). False when this node cannot hold (nothing was changed).
    func holdIncoming(app: Int32, address: String, root: Int32) throws -> Bool {
        guard let hold = packetHold else { return false }
        // Its peers' packets to its MAC come to the node, and so to the hold (its own
        // traffic to them goes through the node meanwhile, by its default route).
        if let d = direct { try AppDirectLink.divert(app: app, root: root, uplink: d.uplink) }
        try hold.hold(address)
        return true
    }

    /// Holds the new connections to `address` from now on (PacketHold.holdNew), its
    /// streams still flowing: the first step of a migration of an application with
    /// listeners. False when this node cannot (no hold, or a direct link, whose peers'
    /// frames reach the application without the node's routing): nothing was changed.
    func holdNewConnections(address: String) throws -> Bool {
        guard let hold = packetHold, direct == nil else { return false }
        try hold.holdNew(address)
        return true
    }

    /// The hold of new connections to `address` ends (what it held stays held).
    func endHoldNewConnections(address: String) { packetHold?.endHoldNew(address) }

    /// The handshakes under way to the application's listeners while its address is held
    /// (before its freeze): the source answered a client's SYN just before the hold, and
    /// the client's last ACK (and what it sent next) is in the hold. Given to the target, it
    /// would reach a listener that never saw the SYN, which resets the connection. So the
    /// held packets of those handshakes are given to the application here, straight into
    /// its namespace (a raw socket there: a packet to a local address is delivered to it,
    /// raw(7) IP_HDRINCL keeps the client's source address), the handshakes complete, and
    /// the drain accepts the connections, which the snapshot then has. Returns how many
    /// handshakes are still waiting for their ACK.
    func completeHandshakes(app: Int32, address: String, root: Int32) -> Int {
        // One read of /proc/PID/net/tcp for both: the handshakes, and the connections.
        let all = Connections.flows(root: root, states: Self.connected.union(["03"]))
        let pending = all.filter { $0.state == "03" }
        drainedConnections.withLock { $0[address] = Set(all.filter { $0.state != "03" }.map(\.key)) }
        let flows = Set(pending.map(\.key))
        guard !pending.isEmpty, let hold = packetHold else { return pending.count }
        let packets = hold.take(key: address) { p in PacketHold.flowKey(p).map(flows.contains) ?? false }
        guard !packets.isEmpty else { return pending.count }
        let sent = Self.inject(packets, into: root, to: address)
        core.logger.info("network: application \(app): \(sent) of \(packets.count) held packet(s) of \(pending.count) handshake(s) under way given to it before its move")
        // Those whose ACK has not come yet are still waiting (the others are connections to
        // accept now, which the drain counts).
        let served = Set(packets.compactMap { p in p.withUnsafeBytes { PacketHold.flowKey($0) } })
        return flows.subtracting(served).count
    }

    /// At the freeze, once nothing goes out of the application any more (`lock`), and
    /// before its sockets are read: the held bare acknowledgements of its established
    /// connections are given to it (the frozen copy's kernel takes them): the peers'
    /// acknowledgements of what it sent while only its incoming traffic was held; read
    /// without them, a connection would be saved with data the peer already has as not yet
    /// acknowledged, and the copy rebuilt from it would take the peer's acknowledgement
    /// (beyond anything it has sent itself) for one of data never sent, and drop it (tcp_ack,
    /// "ACK of unsent data"): a bulk sender then stalls for good (seen: a sender moving with
    /// 2 MB in flight retransmitting for minutes). Segments with data (and FIN, RST) stay
    /// held and go to the target's copy once it runs, in order after what its snapshot
    /// received. What comes after this is held for the target as before.
    func deliverHeld(app: Int32, address: String, root: Int32) {
        // Which packets, chosen without reading /proc/PID/net/tcp here (it walks the host's
        // whole TCP hash table: 3.4 ms of the freeze on this machine): with listeners, those
        // of the connections the drain saw last (a handshake completed here would leave a
        // connection to accept, which refuses the dump; none starts after, SYNs being held);
        // without, every TCP segment but a SYN (a new connection, for the target), since
        // all the others are of its connections (a segment of none is answered with a reset,
        // which the lock drops).
        guard let hold = packetHold else { return }
        // The acknowledgements of what it sent last, still on their way, first: one taken
        // after its sockets are saved would acknowledge, to the restored copy, data that
        // copy counts as not yet sent (it sends its queue again), which it drops, and a
        // bulk sender whose peer is that far ahead stalls (seen with direct links).
        if direct != nil { hold.settle(key: address) }
        let known = drainedConnections.withLock { $0.removeValue(forKey: address) }
        // Bare acknowledgements only (window updates included): the data a bulk receiver's
        // peer sends while the drain runs (megabytes) would otherwise be saved with the
        // frozen copy and rebuilt on the target inside the freeze (27 ms for one core file
        // here, under the stream's load). Held, it reaches the target's copy once it runs, in
        // order after what its snapshot received, and its acknowledgement fields still count
        // (MigrateIn.peerAcks: PacketHold.latestAcks reads the hold). A FIN or RST goes there
        // too, after the data before it (given here alone, a FIN past held data would wait
        // out of order in a queue no snapshot keeps).
        let packets = hold.take(key: address) { p in
            guard let key = PacketHold.flowKey(p), PacketHold.isBareAck(p) else { return false }
            return known?.contains(key) ?? true
        }
        guard !packets.isEmpty else { return }
        let sent = Self.inject(packets, into: root, to: address)
        core.logger.info("network: application \(app): \(sent) of \(packets.count) held packet(s) of its connections given to it at the freeze, before they are saved")
    }

    /// /proc/net/tcp states of a connection with segments still to exchange: established,
    /// FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING.
    static let connected: Set<Substring> = ["01", "04", "05", "08", "09", "0B"]

    /// Sends IP packets (their headers as they came) to `destination` from inside the
    /// network namespace of process `root`, through a raw socket there: a packet to a local
    /// address is delivered locally (raw(7), IPPROTO_RAW implies IP_HDRINCL, so the peer's
    /// source address stays), which works with the application's link down. Returns how
    /// many went.
    static func inject(_ packets: [[UInt8]], into root: Int32, to destination: String) -> Int {
        let ns = open("/proc/\(root)/ns/net", O_RDONLY | O_CLOEXEC)
        guard ns >= 0 else { return 0 }
        defer { close(ns) }
        return (try? Spawn.inNetwork(ns) { () -> Int in
            let s = socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW))
            guard s >= 0 else { return 0 }
            defer { close(s) }
            var to = sockaddr_in()
            to.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, destination, &to.sin_addr)
            var n = 0
            for p in packets {
                let r = p.withUnsafeBytes { b in
                    withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(s, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                }
                if r == p.count { n += 1 }
            }
            return n
        }) ?? 0
    }

    func unlock(app: Int32, address: String, root: Int32?) {
        packetHold?.endHoldNew(address)
        AppAddressLock.unlock(app: app)
        // Killed meanwhile (checkpoint --kill): its link went with it.
        guard AppLink.interfaceExists(AppSubnet.hostInterface(app)) else {
            AppDirectLink.removeStandIn(app: app)
            packetHold?.discard(address)
            return
        }
        packetHold?.release(address, interface: AppSubnet.hostInterface(app), source: myAddress)
        // Its MAC back to it.
        if let root {
            do { try AppDirectLink.restore(app: app, root: root, address: address, subnet: subnet) } catch {
                core.logger.warning("network: application \(app)'s direct link could not be brought back (its traffic goes through the node): \(error)")
                AppDirectLink.removeStandIn(app: app)
            }
        } else {
            AppDirectLink.removeStandIn(app: app)
        }
    }

    func discardLock(app: Int32, address: String) {
        AppAddressLock.discard(app: app)
        packetHold?.discard(address)
    }

    func link(of app: Int32) -> UInt32? {
        let index = if_nametoindex(AppSubnet.hostInterface(app))
        return index == 0 ? nil : index
    }

    func ended(app: Int32, link: UInt32) {
        guard if_nametoindex(AppSubnet.hostInterface(app)) == link else { return }
        let e = ThreadFS.deleteInterface(index: link)
        if e != 0 && e != ENODEV { core.logger.warning("network: the link of ended application \(app) (\(AppSubnet.hostInterface(app))) could not be deleted: \(String(cString: strerror(e)))") }
    }

    func route(app: Int32, address: String, namespace: Int32?) throws {
        try AppLink.routeHere(app: app, address: address, nodeAddress: myAddress)
        if let namespace { try AppDirectLink.bringUp(namespace: namespace, app: app, address: address, subnet: subnet) }
    }

    /// Namespaces made ahead of migrations coming here (prepare), by application.
    private let prepared = Mutex<[Int32: (fd: Int32, address: String, made: Date)]>([:])

    /// Makes application `app`'s namespace and link here while it still runs on the source
    /// (a migration's first step), without its route: the restore then finds them ready,
    /// and the freeze is shorter by the time they take. One not used within two minutes (a
    /// migration that failed) goes.
    func prepare(app: Int32, address: String) throws {
        guard subnet.contains(address) else { throw SSIError(.invalidArgument, "\(address) is not in the application subnet \(subnet)") }
        try prepareKernel()
        if let old = prepared.withLock({ $0.removeValue(forKey: app) }) { close(old.fd) }
        let fd = try AppLink.make(app: app, address: address, nodeAddress: myAddress, route: false, direct: direct)
        prepared.withLock { $0[app] = (fd, address, Date()) }
    }

    /// Closes what was prepared and never used (called every network round).
    func expirePrepared() {
        let old = prepared.withLock { p -> [Int32] in
            let stale = p.filter { Date().timeIntervalSince($0.value.made) > 120 }
            for (app, _) in stale { p.removeValue(forKey: app) }
            return stale.map(\.value.fd)
        }
        for fd in old { close(fd) }
    }

    var myAddress: String? { core.membership.view[core.config.node]?.host }

    /// A node passes packets between its applications' links and the other nodes
    /// (ip_forward, ip-sysctl.txt: per network namespace).
    func prepareKernel() throws {
        guard !kernelReady.withLock({ $0 }) else { return }
        do { try ProcFS.write("/proc/sys/net/ipv4/ip_forward", "1") } catch {
            throw SSIError(.permission, "node \(core.config.node): cannot turn on net.ipv4.ip_forward for application addresses: \(error)",
                           hint: "application addresses need root; or leave network.app-subnet empty")
        }
        kernelReady.withLock { $0 = true }
    }

    /// One round: `apps` are (address, node) of every application that has an address and
    /// has not stopped.
    func route(_ apps: [(address: String, node: NodeID)]) throws {
        let me = core.config.node
        let view = core.membership.view
        var nodes: [NodeID: String] = [:]
        for n in core.membership.online { if let h = view[n]?.host { nodes[n] = h } }
        expirePrepared()
        // Addresses whose application has its link here (running, being restored, or the
        // source copy of a move): their routes are not the round's (AppRoutes.changes).
        // A link made ahead of a migration that has not come yet is not one: until then
        // the address is where the table says.
        let ahead = Set(prepared.withLock { $0.values.map(\.address) })
        let linked = Set(apps.map(\.address).filter { a in
            !ahead.contains(a) && (subnet.app(of: a).map { AppLink.interfaceExists(AppSubnet.hostInterface($0)) } ?? false)
        })
        let local = linked.union(apps.filter { $0.node == me }.map(\.address))
        var want = AppRoutes(me: me, apps: apps, nodes: nodes)
        want.via = want.via.filter { !local.contains($0.key) }
        let old = applied.withLock { $0 } ?? AppRoutes.installed()
        guard want != old else { applied.withLock { $0 = want }; return }
        try prepareKernel()
        try AppRoutes.apply(want.changes(from: old, local: local))
        applied.withLock { $0 = want }
    }
}
