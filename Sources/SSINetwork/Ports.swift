import Foundation
import SSISystem
import SSITransport

// The cluster-wide port table (issue 13, docs/network.md): which application listens on
// which TCP or UDP port, on which node. Each node publishes the ports of its own applications
// in the KDDM set `ports` (object id = node number); every node reads them all and steers the
// cluster address's traffic from them (Steering.swift).

public enum PortProtocol: String, Codable, Sendable, Comparable, CaseIterable {
    case tcp, udp
    public static func < (a: PortProtocol, b: PortProtocol) -> Bool { a.rawValue < b.rawValue }
}

/// One listening socket of an application (a TCP socket in LISTEN, or a bound UDP socket).
public struct PortEntry: Codable, Sendable, Hashable {
    public var port: UInt16
    public var proto: PortProtocol
    public var app: Int32
    public var node: NodeID
    /// The address it is bound to, as /proc/net/{tcp,udp}{,6} says: 0.0.0.0 and :: are every
    /// address of its network namespace.
    public var address: String
    /// Reachable on the cluster address: bound to every address or to the cluster address
    /// itself (a socket bound to 127.0.0.1 or to a node's own address is listed, not exposed).
    public var exposed: Bool
    /// The application has moved on to another node (its record names another), and this
    /// copy, frozen, waits to be killed: another node's entry for it wins.
    public var leaving: Bool? = nil

    public init(port: UInt16, proto: PortProtocol, app: Int32, node: NodeID, address: String, exposed: Bool) {
        (self.port, self.proto, self.app, self.node, self.address, self.exposed) = (port, proto, app, node, address, exposed)
    }
}

/// What one node publishes: its applications' ports.
public struct NodePorts: Codable, Sendable, Equatable {
    public var node: NodeID
    public var entries: [PortEntry]

    public init(node: NodeID, entries: [PortEntry]) { (self.node, self.entries) = (node, entries) }
}

/// An application's claim of a port for itself alone (`ssi run --exclusive-port P`): no other
/// application gets the cluster address's traffic for that port, and a second claim is
/// refused. Kept in the KDDM set `port-claims`, object id = the port, taken with a grab so
/// that two nodes never both succeed.
public struct PortClaim: Codable, Sendable, Hashable {
    public var port: UInt16
    public var app: Int32
    public init(port: UInt16, app: Int32) { (self.port, self.app) = (port, app) }
}

/// The table as every node sees it: the entries of the online nodes.
public struct PortTable: Sendable, Equatable {
    public private(set) var entries: [PortEntry]
    public private(set) var claims: [PortClaim]

    public init(_ published: [NodePorts], claims: [PortClaim] = [], online: Set<NodeID>) {
        let live = published.filter { online.contains($0.node) }
        entries = live.flatMap(\.entries).sorted { ($0.port, $0.proto, $0.app, $0.address) < ($1.port, $1.proto, $1.app, $1.address) }
        // One entry per (port, proto, app): an application listening on both 0.0.0.0 and ::
        // is one server of the port.
        // During a migration both copies may publish: the one the record names wins.
        let staying = Set(entries.filter { $0.leaving != true }.map { "\($0.port)/\($0.proto)/\($0.app)" })
        entries = entries.filter { $0.leaving != true || !staying.contains("\($0.port)/\($0.proto)/\($0.app)") }
        var seen = Set<String>()
        entries = entries.filter { seen.insert("\($0.port)/\($0.proto)/\($0.app)/\($0.exposed)").inserted }
        self.claims = claims.sorted { ($0.port, $0.app) < ($1.port, $1.app) }
    }

    /// The applications that take the cluster address's new connections for a port, in a
    /// stable order (by application id) so that every node hashes a client to the same one.
    /// With an exclusive claim, only the claiming application.
    public func servers(port: UInt16, proto: PortProtocol) -> [PortEntry] {
        let all = entries.filter { $0.port == port && $0.proto == proto && $0.exposed }
        if let c = claims.first(where: { $0.port == port }) { return all.filter { $0.app == c.app } }
        return all.sorted { $0.app < $1.app }
    }

    /// Every (port, protocol) with at least one exposed server.
    public var exposedPorts: [(port: UInt16, proto: PortProtocol)] {
        var out: [(UInt16, PortProtocol)] = []
        var seen = Set<String>()
        for e in entries where e.exposed && seen.insert("\(e.port)/\(e.proto)").inserted { out.append((e.port, e.proto)) }
        return out
    }

    /// Why application `app` may not claim `port` for itself: another application claims it
    /// or listens on it. nil: it may.
    public func claimRefusal(port: UInt16, app: Int32?) -> String? {
        if let c = claims.first(where: { $0.port == port && $0.app != app }) {
            return "port \(port) is claimed exclusively by application \(c.app)"
        }
        if let e = entries.first(where: { $0.port == port && $0.app != app && $0.exposed }) {
            return "application \(e.app) on node \(e.node) already listens on \(e.proto) port \(port)"
        }
        return nil
    }
}

/// Checks an IPv4 address given as the cluster address (`--cluster-ip`, `network.cluster-ip`).
public enum ClusterAddress {
    /// The dotted quad, validated; throws naming the value.
    public static func parse(_ s: String) throws -> String {
        var a = in_addr()
        guard inet_pton(AF_INET, s, &a) == 1 else {
            throw SSIError(.invalidArgument, "the cluster address must be an IPv4 address such as 10.77.1.1, not '\(s)'")
        }
        let b = withUnsafeBytes(of: a.s_addr) { Array($0) }
        if b[0] == 0 || b[0] == 127 || b[0] >= 224 || b == [255, 255, 255, 255] {
            throw SSIError(.invalidArgument, "\(s) cannot be the cluster address (unspecified, loopback, multicast or broadcast)",
                           hint: "choose a unicast address that no node uses, such as 10.77.1.1")
        }
        return s
    }

    /// Refuses a cluster address that is one of the nodes' own addresses: traffic for it
    /// would stop at that node whatever the port table says.
    public static func check(_ ip: String, against nodes: [NodeID: String]) throws {
        if let (n, _) = nodes.first(where: { $0.value == ip }) {
            throw SSIError(.invalidArgument, "the cluster address \(ip) is node \(n)'s own address",
                           hint: "choose an address that no node uses (network.cluster-ip, or ssi cluster up --cluster-ip)")
        }
    }
}

/// What `ssi ports` shows: the cluster address, every listening port, the exclusive claims,
/// and the asked node's last steering error, if any.
public struct PortsView: Codable, Sendable, Equatable {
    public var clusterIP: String?
    public var entries: [PortEntry]
    public var claims: [PortClaim]
    public var error: String?
    public init(clusterIP: String?, entries: [PortEntry], claims: [PortClaim], error: String?) {
        (self.clusterIP, self.entries, self.claims, self.error) = (clusterIP, entries, claims, error)
    }
}
