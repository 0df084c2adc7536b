import Foundation
import SSISystem
import SSITransport

// How one node steers the cluster address's traffic (docs/network.md). Nothing is stateful
// across nodes: every node holds the same port table, so whichever node a client's packet
// enters by, it goes to the same server, and an entry node that fails loses nothing but the
// packets in flight (the client's TCP retransmits through another).
//
// - The cluster address C is a local address of every node (on `lo`): a packet for C that is
//   steered nowhere is delivered locally, to a server of this node.
// - nftables (nft(8)), table `ip ssi-cip`, hooks prerouting (packets entering) and output
//   (connections made on the node itself): each flow to C:P is pinned to one of P's
//   applications, and each of its packets gets the mark of that application's node
//   (`ruleset`). No connection tracking: the entry node sees only the client's half of a
//   connection (the server answers the client directly), and conntrack would take the
//   client's ACK after an unseen SYN-ACK for an invalid packet; `notrack` keeps these
//   packets out of it.
// - ip-rule(8): a packet marked for node N is routed by table 7100+N, whose one route sends C
//   to N's address. Linux looks up the `local` table first (rule 0), where C is local, so
//   ours must come before it: the local rule is moved to preference 100 and ours sit at 50.
// - Node N receives a packet for C, which is local there, and its server answers from C
//   straight to the client: the reply does not pass through the entry node.

public struct SteeringPlan: Sendable, Equatable {
    public var clusterIP: String
    public var me: NodeID
    /// Every online node's address on the cluster network.
    public var nodes: [NodeID: String]
    public var table: PortTable
    /// Where applications are known to be before the port table says so (a migration's
    /// target once its sockets are rebuilt, its source once the target's copy runs), by
    /// application: their flows are steered there.
    public var placed: [Int32: NodeID]

    public init(clusterIP: String, me: NodeID, nodes: [NodeID: String], table: PortTable, placed: [Int32: NodeID] = [:]) {
        (self.clusterIP, self.me, self.nodes, self.table, self.placed) = (clusterIP, me, nodes, table, placed)
    }

    public static let nftTable = "ssi-cip"
    /// A node's packet mark: 0x55 in the top byte, the node in the low byte.
    public static func mark(_ n: NodeID) -> UInt32 { 0x5500_0000 | UInt32(n) }
    public static func routeTable(_ n: NodeID) -> Int { 7100 + Int(n) }
    /// The same fixed seed on every node, so that jhash picks the same server everywhere.
    static let seed = "0x55c1a55e"

    /// The nft script, applied in one transaction (nft applies a file atomically, so no
    /// packet sees a half-written table): the table and its chains declared (kept if they
    /// exist), their rules and the application map written again; the map of pinned flows
    /// (`flows`) is kept, so that a connection stays with its server whatever the table becomes.
    ///
    /// Each new flow to C:P is given one of P's applications (`jhash` of the client's address
    /// and port over P's servers, a fixed seed: every node picks the same) and pinned to it
    /// (map `flows`, client address . protocol . client port . P -> application tag, 30
    /// minutes after its last packet). The key holds P and the protocol because a client
    /// reuses its ephemeral ports across destinations (ip(7) ip_local_port_range is one range
    /// for all of them): keyed by the client's address and port alone, a connection to 9000
    /// from a port that earlier reached 8000 took the 8000 server's pin and was sent to a node
    /// with no server on 9000 (reset). Every packet of the flow then gets the mark of that application's node, from
    /// the map `app_node`, rewritten when an application moves: an established connection
    /// follows its server, and keeps it when other servers of its port come or go. Pins are
    /// per entry node (a router sends one flow through one node while the nodes stay the
    /// same); a flow whose pin names an application that is gone is given one again.
    public func ruleset() -> String {
        let t = Self.nftTable
        var apps: [Int32: NodeID] = [:]
        for e in table.entries where e.exposed { apps[e.app] = e.node }
        for (app, node) in placed where apps[app] != nil && (node == me || nodes[node] != nil) { apps[app] = node }
        let elements = apps.sorted { $0.key < $1.key }.map { "\(Self.tag($0.key)) : \(hex($0.value == me ? 0 : Self.mark($0.value)))" }
        var rules: [String] = [
            "add rule ip \(t) raw_pre ip daddr \(clusterIP) notrack",
            "add rule ip \(t) raw_out ip daddr \(clusterIP) notrack",
            "add rule ip \(t) raw_out ip saddr \(clusterIP) notrack",
            "add rule ip \(t) pre ip daddr \(clusterIP) jump steer",
            "add rule ip \(t) out ip daddr \(clusterIP) jump steer",
        ]
        let node = "meta mark set meta mark map @app_node accept"
        for (port, proto) in table.exposedPorts {
            let servers = table.servers(port: port, proto: proto)
            guard !servers.isEmpty else { continue }
            let flow = "ip saddr . meta l4proto . \(proto.rawValue) sport . \(proto.rawValue) dport"
            let match = "ip daddr \(clusterIP) \(proto.rawValue) dport \(port)"
            rules.append("add rule ip \(t) steer \(match) meta mark set \(flow) map @flows update @flows { \(flow) : meta mark } \(node)")
            let choice = servers.count == 1 ? "\(Self.tag(servers[0].app))"
                : "jhash \(flow) mod \(servers.count) seed \(Self.seed) map { " + servers.enumerated().map { "\($0.offset) : \(Self.tag($0.element.app))" }.joined(separator: ", ") + " }"
            rules.append("add rule ip \(t) steer \(match) meta mark set \(choice) update @flows { \(flow) : meta mark } \(node)")
        }
        return """
        table ip \(t) {
            map flows { type ipv4_addr . inet_proto . inet_service . inet_service : mark; flags dynamic,timeout; timeout 30m; }
            map app_node { type mark : mark; }
            chain steer { }
            chain raw_pre { type filter hook prerouting priority raw; policy accept; }
            chain raw_out { type filter hook output priority raw; policy accept; }
            chain pre { type filter hook prerouting priority mangle; policy accept; }
            chain out { type route hook output priority mangle; policy accept; }
        }
        flush chain ip \(t) steer
        flush chain ip \(t) raw_pre
        flush chain ip \(t) raw_out
        flush chain ip \(t) pre
        flush chain ip \(t) out
        flush map ip \(t) app_node
        \(elements.isEmpty ? "" : "add element ip \(t) app_node { \(elements.joined(separator: ", ")) }")
        \(rules.joined(separator: "\n"))

        """
    }

    /// The conntrack-free tag of an application in the maps: its id less the 10,000,000
    /// offset of cluster application ids (never zero: a map value of zero is "this node").
    public static func tag(_ app: Int32) -> UInt32 { UInt32(max(1, Int(app) - 10_000_000)) }

    private func hex(_ m: UInt32) -> String { "0x" + String(m, radix: 16) }

    /// The routes of every other online node's table: C via that node.
    public func routes() -> [(table: Int, via: String)] {
        nodes.filter { $0.key != me }.sorted { $0.key < $1.key }.map { (Self.routeTable($0.key), $0.value) }
    }
}
