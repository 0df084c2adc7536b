import Foundation
import Logging
import SSIControl
import SSIKDDM
import SSINetwork
import SSISystem
import SSITransport
import ServiceLifecycle
import Synchronization

/// The cluster address and the port table in the daemon (issue 13, docs/network.md): every
/// 300 ms, the listening ports of this node's applications are published in the KDDM set
/// `ports` (object id = node), every online node's are read back, and, when a cluster
/// address is configured, this node's steering (SSINetwork/Steering.swift) is brought up to
/// date. `ssi ports` and `ssi run --exclusive-port` come here.
final class NetworkSubsystem: Subsystem, @unchecked Sendable {
    static let name = "network"
    static let configuration: [ConfigKey] = [
        ConfigKey("cluster-ip", default: "", help: "the cluster's one address for the outside world (IPv4, on no node); empty: none"),
        ConfigKey("app-links", default: "routed", help: "how applications with addresses reach each other: routed (through their nodes) or direct (each also has a link of its own on the node's LAN, a macvlan with its own MAC, so two applications talk node to node with no forwarding; the nodes must share that LAN; experimental: a migration's stall is longer, docs/streams.md)"),
        ConfigKey("app-subnet", default: "", help: "the application network (IPv4 subnet, e.g. 10.78.0.0/16, the same on every node): `ssi run --net app` gives an application an address of its own there; empty: none"),
    ]
    static let portsSet = "ports"
    static let claimsSet = "port-claims"

    let core: NodeCore
    let clusterIP: String?
    let state = Mutex(NetworkState())
    /// The applications whose processes are on this node, their roots, and whether their
    /// record names another node (a migration's source copy) (Wiring.swift).
    let localApps = ClosureCell<@Sendable () async -> [(app: Int32, root: Int32, leaving: Bool)]>({ [] })
    /// Whether an application exists and has not stopped (Wiring.swift).
    let appAlive = ClosureCell<@Sendable (Int32) async -> Bool>({ _ in true })
    /// Application addresses (AppNetworkSide.swift), when network.app-subnet is set.
    let apps: AppNetworkSide?
    /// (address, node) of every application with an address that has not stopped (Wiring.swift).
    let appAddresses = ClosureCell<@Sendable () async -> [(address: String, node: NodeID)]>({ [] })
    /// The address of one application, nil when it has none (Wiring.swift).
    let appAddress = ClosureCell<@Sendable (Int32) async -> String?>({ _ in nil })
    /// Where every application is (Wiring.swift).
    let appPlaces = ClosureCell<@Sendable () async -> [(app: Int32, node: NodeID)]>({ [] })

    struct NetworkState {
        var published: NodePorts?
        var table = PortTable([], online: [])
        var applied: SteeringPlan?
        var lastError: String?
        /// This node's streams as last published, and when.
        var streams: NodeStreams?
        var streamsAt = Date.distantPast
        /// Byte counts carried over by a migration, per application here (StreamBases).
        var bases: [Int32: StreamBases] = [:]
        /// Applications placed ahead of the port table (SteeringPlan.placed), until the table
        /// agrees or the deadline passes.
        var placed: [Int32: (node: NodeID, until: ContinuousClock.Instant)] = [:]
    }
    /// One steering change at a time: a round's and a migration's (place) each build their
    /// plan from the state of the moment and apply it.
    private let applying = Mutex(())

    init(core: NodeCore, settings: [String: String]) throws {
        self.core = core
        let ip = settings["cluster-ip"] ?? ""
        clusterIP = ip.isEmpty ? nil : try ClusterAddress.parse(ip)
        let subnet = settings["app-subnet"] ?? ""
        let links = settings["app-links"] ?? "routed"
        guard links == "direct" || links == "routed" else {
            throw SSIError(.invalidArgument, "network.app-links = \(links) in node \(core.config.node)'s configuration: expected routed or direct",
                           hint: "set network.app-links = routed (the default) or direct, the same on every node")
        }
        apps = subnet.isEmpty ? nil : AppNetworkSide(subnet: try AppSubnet(parsing: subnet), core: core, directLinks: links == "direct")
        if clusterIP != nil || apps != nil { try NodeNetwork.requireNft(node: core.config.node) }
        apps?.refreshAll.set { [unowned self] in await self.refreshEverywhere() }
        apps?.peerStates.set { [unowned self] local, localPort, remote, remotePort in
            await self.peerState(local: local, localPort: localPort, remote: remote, remotePort: remotePort)
        }
    }

    var serviceBlock: ServiceBlock? { .network }
    var sets: [KDDMSetInfo] {
        [KDDMSetInfo(name: Self.portsSet, rule: .hash), KDDMSetInfo(name: Self.claimsSet, rule: .hash),
         KDDMSetInfo(name: Self.streamsSet, rule: .hash), KDDMSetInfo(name: Self.basesSet, rule: .hash)]
    }
    var services: [any Service] { [NetworkLoop(net: self)] }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .network(let r) = request else { throw misrouted(request) }
        switch r {
        case .ports:
            let t = state.withLock { $0.table }
            return .ports(PortsView(clusterIP: clusterIP, entries: t.entries, claims: t.claims,
                                    error: state.withLock { $0.lastError }))
        case .claim(let port, let app):
            try await claim(port: port, app: app)
            return .done
        case .streams:
            return .streams(try await streamTable())
        }
    }

    /// Claims `port` for `app` alone (nil: only checks that it could be claimed). The claim
    /// object is grabbed, so two nodes claiming at once are served one after the other.
    func claim(port: UInt16, app: Int32?) async throws {
        guard port > 0 else { throw SSIError(.invalidArgument, "--exclusive-port must be a port between 1 and 65535") }
        try await refresh()
        let table = state.withLock { $0.table }
        let id = UInt64(port)
        let held = try await core.kddm.grab(Self.claimsSet, id)
        var refusal: String? = nil
        if let held, let c = try? JSONDecoder().decode(PortClaim.self, from: Data(held)), c.app != app, await appAlive.value(c.app) {
            refusal = "port \(port) is claimed exclusively by application \(c.app)"
        } else if let r = table.claimRefusal(port: port, app: app) {
            refusal = r
        }
        if let refusal {
            try? await core.kddm.release(Self.claimsSet, id)
            throw SSIError(.busy, "cannot claim port \(port) exclusively: \(refusal)",
                           hint: "stop that application, or run this one on another port (or without --exclusive-port to share the port)")
        }
        guard let app else { try await core.kddm.release(Self.claimsSet, id); return }
        try await core.kddm.put(Self.claimsSet, id, Array(try JSONEncoder().encode(PortClaim(port: port, app: app))))
    }

    /// One round at a time: the loop's and those other nodes ask for (RPC 601) would
    /// otherwise overlap, and a round that read the application table before a change could
    /// apply its routes after a round that saw it, taking a new route away again.
    let rounds = RoundGate()

    func refresh() async throws {
        await rounds.enter()
        do {
            try await refreshOnce()
            await rounds.leave()
        } catch {
            await rounds.leave()
            throw error
        }
    }

    /// One round: publish this node's ports, read everyone's, steer.
    private func refreshOnce() async throws {
        let me = core.config.node
        var entries: [PortEntry] = []
        for (app, root, leaving) in await localApps.value() {
            entries += ListeningSockets.of(app: app, root: root, node: me, clusterIP: clusterIP).map { e in
                var e = e
                if leaving { e.leaving = true }
                return e
            }
        }
        let mine = NodePorts(node: me, entries: entries.sorted { ($0.port, $0.app) < ($1.port, $1.app) })
        if state.withLock({ $0.published }) != mine {
            try await core.kddm.store(Self.portsSet, UInt64(me), Array(try JSONEncoder().encode(mine)))
            state.withLock { $0.published = mine }
        }
        let online = core.membership.online
        var published: [NodePorts] = [mine]
        for n in online where n != me {
            if let b = try? await core.kddm.get(Self.portsSet, UInt64(n)), let p = try? JSONDecoder().decode(NodePorts.self, from: Data(b)) {
                published.append(p)
            }
        }
        if let apps {
            let addresses = await appAddresses.value()
            try apps.route(addresses)
            try await publishStreams(here: await localApps.value())
        }
        let claims = try await liveClaims()
        let table = PortTable(published, claims: claims, online: Set(online))
        state.withLock { $0.table = table }
        try steer(table, online: online)
    }

    /// The claims of applications that still exist; the lowest online node removes the others.
    private func liveClaims() async throws -> [PortClaim] {
        let alive = appAlive.value
        var out: [PortClaim] = []
        let sweeper = core.membership.online.min() == core.config.node
        for (id, bytes) in (try? await core.kddm.list(Self.claimsSet)) ?? [] {
            guard let c = try? JSONDecoder().decode(PortClaim.self, from: Data(bytes)) else { continue }
            if await alive(c.app) { out.append(c) } else if sweeper { try? await core.kddm.remove(Self.claimsSet, id) }
        }
        return out
    }

    private func steer(_ table: PortTable, online: [NodeID]) throws {
        guard let clusterIP else { return }
        let view = core.membership.view
        var nodes: [NodeID: String] = [:]
        for n in online { if let h = view[n]?.host { nodes[n] = h } }
        try ClusterAddress.check(clusterIP, against: nodes)
        let changed = try applying.withLock { _ -> Bool in
            let now = ContinuousClock.now
            let placed = state.withLock { s -> [Int32: NodeID] in
                // A placement ends once the table has the application where it was placed
                // (its new node published its ports) and nowhere else, or after its deadline.
                s.placed = s.placed.filter { app, p in
                    let nodes = Set(table.entries.filter { $0.app == app }.map(\.node))
                    return now < p.until && nodes != [p.node]
                }
                return s.placed.mapValues(\.node)
            }
            let plan = SteeringPlan(clusterIP: clusterIP, me: core.config.node, nodes: nodes, table: table, placed: placed)
            guard state.withLock({ $0.applied }) != plan else { return false }
            let net = NodeNetwork(clusterIP: clusterIP, me: core.config.node)
            if state.withLock({ $0.applied }) == nil { try net.prepareKernel() }
            try net.apply(plan)
            state.withLock { $0.applied = plan; $0.lastError = nil }
            return true
        }
        if changed { core.logger.info("network: cluster address \(clusterIP): \(table.exposedPorts.count) ports steered over \(nodes.count) nodes") }
    }

    /// Steers application `app`'s flows to `node` now, ahead of the port table (a
    /// migration: its target once its sockets are rebuilt, its source once the target's
    /// copy runs), for at most ten seconds or until the table agrees. Only this node's nft
    /// rules change (one transaction, a few milliseconds); nothing when steering has not
    /// been set up yet.
    func place(_ app: Int32, on node: NodeID) {
        guard let clusterIP else { return }
        applying.withLock { _ in
            let plan = state.withLock { s -> SteeringPlan? in
                s.placed[app] = (node, ContinuousClock.now + .seconds(10))
                // Steering not set up, or no port of the application in it: nothing to change.
                guard var p = s.applied, p.table.entries.contains(where: { $0.app == app && $0.exposed }) else { return nil }
                p.placed = s.placed.mapValues(\.node)
                return p
            }
            guard let plan else { return }
            do {
                try NodeNetwork(clusterIP: clusterIP, me: core.config.node).applyRules(plan)
                state.withLock { $0.applied = plan }
            } catch { failed(error) }
        }
    }

    func failed(_ error: any Error) {
        let text = "\(error)"
        let changed = state.withLock { s in
            defer { s.lastError = text }
            return s.lastError != text
        }
        if changed { core.logger.warning("network: \(text)") }
    }

    func stop() {
        guard let clusterIP else { return }
        NodeNetwork(clusterIP: clusterIP, me: core.config.node).teardown()
    }
}

struct NetworkLoop: Service {
    let net: NetworkSubsystem
    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await net.refresh() } catch { net.failed(error) }
                // A server that starts listening is reachable on the cluster address within
                // two rounds (its node publishes it, the others read it).
                try? await Task.sleep(for: .milliseconds(300))
            }
        }
        net.stop()
    }
}

/// Lets one task in at a time, the others waiting in order.
actor RoundGate {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func enter() async {
        if !busy { busy = true; return }
        await withCheckedContinuation { waiting.append($0) }
    }

    func leave() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }
}
