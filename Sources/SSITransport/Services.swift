/// The registry of RPC service numbers: a block of 100 per subsystem, so that a subsystem
/// numbers its own services without reading anyone else's, and a number in a log names its
/// owner. A subsystem declares its services as `ServiceBlock.kddm.number(1)` and so on.
public struct ServiceBlock: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public let base: UInt16

    /// The service `n` (0..<100) of this block.
    public func number(_ n: UInt16) -> UInt16 {
        precondition(n < 100, "service \(n) is outside the \(name) block")
        return base + n
    }

    public func contains(_ service: UInt16) -> Bool { (base..<base + 100).contains(service) }
    public var description: String { name }

    /// The transport's own (ping).
    public static let transport = ServiceBlock(name: "transport", base: 0)
    /// Distributed objects: reads, grabs, puts, invalidations (SSIKDDM).
    public static let kddm = ServiceBlock(name: "kddm", base: 100)
    /// The layers that come next, each with its block reserved here so that the numbers in
    /// docs/cluster.md stay stable: the cluster process table, migration (image transfer),
    /// the scheduler (probe values, decisions), streams, the cluster network (ports).
    public static let processTable = ServiceBlock(name: "process table", base: 200)
    public static let migration = ServiceBlock(name: "migration", base: 300)
    public static let scheduler = ServiceBlock(name: "scheduler", base: 400)
    public static let streams = ServiceBlock(name: "streams", base: 500)
    public static let network = ServiceBlock(name: "network", base: 600)
    /// The operators' view: node summaries, events and applications for the dashboard and
    /// `ssi events` (SSIObserve).
    public static let observe = ServiceBlock(name: "observe", base: 700)

    public static let all: [ServiceBlock] = [.transport, .kddm, .processTable, .migration, .scheduler, .streams, .network, .observe]

    /// The block a service number belongs to (for logs and errors).
    public static func owner(of service: UInt16) -> ServiceBlock? { all.first { $0.contains(service) } }
}

/// The transport's services.
public enum TransportService {
    /// Echoes its payload, on the event loop itself: the round trip the benchmark measures.
    public static let ping = ServiceBlock.transport.number(1)
}
