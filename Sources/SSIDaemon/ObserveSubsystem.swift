import Logging
import NIOPosix
import SSIControl
import SSIObserve
import SSISystem
import SSITransport
import ServiceLifecycle

/// The operators' view in the daemon (SSIObserve does the work): the block-700 RPC services,
/// membership changes as events, RPC and KDDM counts into the metrics, the dashboard's HTTP
/// server, and `ssi events` / the CLI's reports over the control socket.
struct ObserveSubsystem: Subsystem {
    static let name = "observe"
    let core: NodeCore

    init(core: NodeCore, settings: [String: String]) {
        self.core = core
    }

    var serviceBlock: ServiceBlock? { .observe }

    func start() async throws {
        let o = core.observe
        o.registerServices()
        o.watchMembership()
        core.rpc.observeCalls { service, d, ok in
            o.metrics.rpcCall(service: service, seconds: Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18, ok: ok)
        }
        core.kddm.observeOperations { o.metrics.kddmOperation($0) }
    }

    var services: [any Service] {
        guard let d = core.config.dashboard else { return [] }
        return [DashboardService(core: core, host: d.host, port: d.port)]
    }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .observe(let r) = request else { throw misrouted(request) }
        switch r {
        case .record(let e):
            core.observe.record(e)
            return .done
        case .events(let limit):
            return .events(await core.observe.clusterEvents(limit: max(1, min(limit, 1000))))
        case .cluster:
            return .cluster(await core.observe.cluster())
        }
    }
}

/// Serves the dashboard until shutdown. A port already taken does not stop the node: the
/// dashboard is an operator's convenience, not part of the cluster, so the failure is logged
/// and kept as an event (which `ssi events` shows) and the node goes on without it.
struct DashboardService: Service {
    let core: NodeCore
    let host: String
    let port: Int

    func run() async throws {
        let o = core.observe
        let secret = (try? core.config.readSecret()) ?? []
        let server = HTTPServer(group: MultiThreadedEventLoopGroup.singleton, logger: core.logger) { ask in
            await o.respond(ask, secret: secret)
        }
        do {
            let bound = try await server.start(host: host, port: port)
            o.setDashboard(bound)
            core.logger.info("ssid: node \(core.config.node) dashboard on http://\(bound)/")
        } catch {
            o.record(ObserveEvent(kind: .error, message: "node \(core.config.node): the dashboard cannot listen on \(host):\(port): \(error); set dashboard = HOST:PORT in the node's configuration"))
            return
        }
        try? await gracefulShutdown()
        await server.stop()
    }
}
