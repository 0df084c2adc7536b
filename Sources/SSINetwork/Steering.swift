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
//   (connections made on the node itself): each packet for C:P gets a mark naming the node
//   of the application that serves P (several: `jhash` of the client's address and port,
//   with a fixed seed, so that every node picks the same one for a client). The mark is
//   computed per packet, from the table, with no connection tracking: the entry node sees
//   only the client's half of a connection (the server answers the client directly), and
//   conntrack would take the client's ACK after an unseen SYN-ACK for an invalid packet.
//   `notrack` keeps these packets out of conntrack. When the application moves, the table
//   changes on every node and the next packet goes to its new node.
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

    public init(clusterIP: String, me: NodeID, nodes: [NodeID: String], table: PortTable) {
        (self.clusterIP, self.me, self.nodes, self.table) = (clusterIP, me, nodes, table)
    }

    public static let nftTable = "ssi-cip"
    /// A node's packet mark: 0x55 in the top byte, the node in the low byte.
    public static func mark(_ n: NodeID) -> UInt32 { 0x5500_0000 | UInt32(n) }
    public static func routeTable(_ n: NodeID) -> Int { 7100 + Int(n) }
    /// The same fixed seed on every node, so that jhash picks the same server everywhere.
    static let seed = "0x55c1a55e"

    /// The nft script: the table replaced whole in one transaction (add, delete, define: nft
    /// applies a file atomically, so no packet sees a half-written table).
    public func ruleset() -> String {
        let t = Self.nftTable
        var steer: [String] = []
        for (port, proto) in table.exposedPorts {
            let servers = table.servers(port: port, proto: proto)
            guard !servers.isEmpty else { continue }
            let match = "ip daddr \(clusterIP) \(proto.rawValue) dport \(port)"
            let marks = servers.map { $0.node == me ? UInt32(0) : Self.mark($0.node) }
            if Set(marks).count == 1 {
                steer.append("\(match) meta mark set \(hex(marks[0])) accept")
            } else {
                let choice = marks.enumerated().map { "\($0.offset) : \(hex($0.element))" }.joined(separator: ", ")
                steer.append("\(match) meta mark set jhash ip saddr . \(proto.rawValue) sport mod \(marks.count) seed \(Self.seed) map { \(choice) } accept")
            }
        }
        return """
        add table ip \(t)
        delete table ip \(t)
        table ip \(t) {
            chain steer {
        \(steer.map { "        " + $0 }.joined(separator: "\n"))
            }
            chain raw_pre { type filter hook prerouting priority raw; policy accept; ip daddr \(clusterIP) notrack; }
            chain raw_out { type filter hook output priority raw; policy accept; ip daddr \(clusterIP) notrack; ip saddr \(clusterIP) notrack; }
            chain pre { type filter hook prerouting priority mangle; policy accept; ip daddr \(clusterIP) jump steer; }
            chain out { type route hook output priority mangle; policy accept; ip daddr \(clusterIP) jump steer; }
        }

        """
    }

    private func hex(_ m: UInt32) -> String { "0x" + String(m, radix: 16) }

    /// The routes of every other online node's table: C via that node.
    public func routes() -> [(table: Int, via: String)] {
        nodes.filter { $0.key != me }.sorted { $0.key < $1.key }.map { (Self.routeTable($0.key), $0.value) }
    }
}
