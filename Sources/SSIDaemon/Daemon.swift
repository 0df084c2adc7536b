import Foundation
import Logging
import NIOCore
import NIOPosix
import SSICluster
import ServiceLifecycle
import Synchronization

/// One node's daemon: RPC listener, membership, KDDM and the local control socket, run as
/// services of a `ServiceGroup` that shuts them down in reverse order on SIGTERM/SIGINT.
public final class NodeDaemon: Sendable {
    public let config: DaemonConfig
    public let logger: Logger
    let group: MultiThreadedEventLoopGroup
    public let rpc: RPCNode
    public let etcd: EtcdClient
    public let membership: Membership
    public let kddm: KDDM

    public init(config: DaemonConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let secret = try config.readSecret()
        rpc = RPCNode(nodeID: config.node, auth: RPCAuth(secret: secret, session: config.session), group: group, logger: logger)
        etcd = try EtcdClient(endpoints: config.etcd, group: group)
        let host = config.advertise ?? (config.listenHost == "0.0.0.0" ? "127.0.0.1" : config.listenHost)
        membership = Membership(me: config.node, session: config.session, etcd: etcd, host: host, port: config.listenPort, logger: logger)
        kddm = KDDM(rpc: rpc, etcd: etcd, membership: membership, logger: logger)
    }

    /// Runs until SIGTERM or SIGINT.
    public func run() async throws {
        let port = try await rpc.listen(host: config.listenHost, port: config.listenPort)
        logger.info("ssid: node \(config.node) session \(config.session) RPC on \(config.listenHost):\(port)")
        kddm.start()
        RawEcho.start(host: config.listenHost, port: port + RawEcho.portOffset)
        let rpc = self.rpc
        membership.subscribe { _, view in
            for n in view.values where n.port != 0 { rpc.setAddress(n.id, host: n.host, port: n.port) }
        }
        // etcd may start a moment after us (ssi cluster up starts both): retry for 10 s.
        var attempt = 0
        while true {
            do {
                try await membership.register(join: config.join)
                break
            } catch {
                attempt += 1
                if attempt > 50 { throw error }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        for s in ["counters", "processes", "applications", "ports", "streams"] {
            if (try? await etcd.get(membership.prefix + "kddm/sets/\(s)")) == nil {
                try? await kddm.createSet(s, rule: .hash)
            }
        }
        await membership.refresh()
        let control = ControlServer(path: config.control, daemon: self)
        let services: [any Service] = [MembershipService(membership: membership), control]
        let sg = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                   gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await sg.run()
        await rpc.shutdown()
        try await group.shutdownGracefully()
        logger.info("ssid: node \(config.node) stopped")
    }
}

/// Keeps the lease and the view; revokes the lease on graceful shutdown, so the others see
/// the node leave at once rather than after the lease's TTL.
struct MembershipService: Service {
    let membership: Membership
    func run() async throws {
        await cancelWhenGracefulShutdown { await membership.run() }
    }
}
