import Logging
import SSIControl
import SSIKDDM
import SSIMembership
import SSIObserve
import SSISystem
import SSITransport
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// What every subsystem stands on: the node's transport, its membership and KDDM, made by the
/// daemon before any subsystem.
public struct NodeCore: Sendable {
    public let config: DaemonConfig
    public let logger: Logger
    public let rpc: RPCNode
    public let etcd: EtcdClient
    public let membership: Membership
    public let kddm: KDDM
    /// The operators' view: `observe.record(event)` adds to the event history and metrics.
    public let observe: Observer
}

/// One configuration key of a subsystem's section: `SECTION.KEY = VALUE` in ssid's file, or
/// `--SECTION.KEY VALUE`.
public struct ConfigKey: Sendable {
    public var name: String
    public var defaultValue: String
    public var help: String
    public init(_ name: String, default defaultValue: String, help: String) {
        self.name = name
        self.defaultValue = defaultValue
        self.help = help
    }
}

/// A part of the daemon: membership and KDDM today; the process table, migration, the
/// scheduler, streams and the cluster network next. Each declares what it brings, and
/// `NodeDaemon` assembles them: it registers nothing and routes nothing by itself.
public protocol Subsystem: Sendable {
    /// Names its control requests' route (`ControlRequest.subsystem`) and its configuration
    /// section.
    static var name: String { get }
    /// Its configuration section's keys.
    static var configuration: [ConfigKey] { get }
    /// Made once the core is up; `settings` holds its section, defaults filled in.
    init(core: NodeCore, settings: [String: String]) throws
    /// The block its RPC service numbers come from, if it serves any.
    var serviceBlock: ServiceBlock? { get }
    /// The KDDM sets it keeps its tables in; the daemon makes those that are missing.
    var sets: [KDDMSetInfo] { get }
    /// Registers its RPC services and KDDM hooks. Runs before the node joins.
    func start() async throws
    /// Its long-running services, run (and stopped, in reverse order) by the daemon's
    /// ServiceGroup.
    var services: [any Service] { get }
    /// Answers one of its control requests.
    func handle(_ request: ControlRequest) async throws -> ControlReply
    /// Answers a request that came with the caller's fds (SCM_RIGHTS), which it then owns.
    /// By default the fds are closed and the request answered as any other.
    func handle(_ request: ControlRequest, fds: [Int32]) async throws -> ControlReply
}

extension Subsystem {
    public static var configuration: [ConfigKey] { [] }
    public var serviceBlock: ServiceBlock? { nil }
    public var sets: [KDDMSetInfo] { [] }
    public func start() async throws {}
    public var services: [any Service] { [] }

    public func handle(_ request: ControlRequest, fds: [Int32]) async throws -> ControlReply {
        for fd in fds { close(fd) }
        return try await handle(request)
    }

    /// A request routed here that is not ours: a routing bug in the daemon.
    func misrouted(_ request: ControlRequest) -> SSIError {
        SSIError(.unsupported, "control: \(Self.name) got a request of \(request.subsystem)")
    }
}
