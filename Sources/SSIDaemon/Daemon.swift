import Foundation
import Logging
import NIOCore
import NIOPosix
import SSIImage
import SSIKDDM
import SSIMembership
import SSIObserve
import SSISystem
import SSITransport
import ServiceLifecycle

/// One node's daemon. It builds the core (RPC, membership, KDDM), then assembles the
/// subsystems: each registers its RPC services, declares its KDDM sets, its control
/// operations and its configuration section, and brings its long-running services. They run
/// in a `ServiceGroup` that shuts them down in reverse order on SIGTERM/SIGINT.
public final class NodeDaemon: Sendable {
    /// Every subsystem, bottom to top. A new layer (process table, migration, scheduler,
    /// streams, network) adds its type here, and nothing else in the daemon changes.
    public static let subsystems: [any Subsystem.Type] = [MembershipSubsystem.self, KDDMSubsystem.self, ProcessTableSubsystem.self, BenchSubsystem.self, SchedulerSubsystem.self, JobsSubsystem.self, NetworkSubsystem.self, ObserveSubsystem.self]

    public let core: NodeCore
    let group: MultiThreadedEventLoopGroup
    let parts: [any Subsystem]

    public init(config: DaemonConfig, logger: Logger) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let secret = try config.readSecret()
        let rpc = RPCNode(nodeID: config.node, auth: RPCAuth(secret: secret, session: config.session), group: group, logger: logger)
        let etcd = try EtcdClient(endpoints: config.etcd, group: group)
        let host = config.advertise ?? (config.listenHost == "0.0.0.0" ? "127.0.0.1" : config.listenHost)
        let membership = Membership(me: config.node, session: config.session, etcd: etcd, host: host, port: config.listenPort, logger: logger)
        let kddm = KDDM(rpc: rpc, etcd: etcd, membership: membership, logger: logger)
        let observe = Observer(node: config.node, session: config.session, rpc: rpc, membership: membership, logger: logger)
        let core = NodeCore(config: config, logger: logger, rpc: rpc, etcd: etcd, membership: membership, kddm: kddm, observe: observe)
        self.core = core
        parts = try Self.subsystems.map { try $0.init(core: core, settings: config.settings(for: $0)) }
        Self.connect(parts)
    }

    /// Runs until SIGTERM or SIGINT.
    public func run() async throws {
        let (config, logger) = (core.config, core.logger)
        let port = try await core.rpc.listen(host: config.listenHost, port: config.listenPort)
        logger.info("ssid: node \(config.node) session \(config.session) RPC on \(config.listenHost):\(port)")
        // The runtime's one-time costs of a snapshot's encoding and decoding, paid now rather
        // than inside the first migration's freeze (SnapshotWarmUp).
        DispatchQueue.global(qos: .utility).async { SnapshotWarmUp.run() }
        for p in parts { try await p.start() }
        try await join()
        for p in parts {
            for s in p.sets where (try? await core.etcd.get(core.membership.prefix + "kddm/sets/\(s.name)")) == nil {
                try? await core.kddm.createSet(s.name, rule: s.rule)
            }
        }
        await core.membership.refresh()
        let routes = Dictionary(uniqueKeysWithValues: parts.map { (type(of: $0).name, $0) })
        let control = ControlServer(path: config.control, routes: routes, logger: logger)
        let services: [any Service] = parts.flatMap(\.services) + [control]
        let sg = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                   gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await sg.run()
        await core.rpc.shutdown()
        core.etcd.shutdown()
        try await group.shutdownGracefully()
        logger.info("ssid: node \(config.node) stopped")
    }

    /// Registers the node once every subsystem serves its RPCs. etcd may start a moment after
    /// us (ssi cluster up starts both): retry for 10 s.
    private func join() async throws {
        var attempt = 0
        while true {
            do {
                return try await core.membership.register(join: core.config.join)
            } catch {
                attempt += 1
                if attempt > 50 { throw error }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}
