import Foundation
import SSINetwork
import SSISystem
import SSITransport
import Testing

/// The nft rules a migration through the cluster address relies on (docs/network.md,
/// "Migration"): the source's lock holds what comes in rather than dropping it, and a node
/// steers a moving application's flows where it is placed before the port table says so.
/// The texts are checked by nft itself (`nft -c`, which parses and validates against the
/// kernel without changing anything) when it can run.
@Suite struct SteeringRulesTests {
    static let ip = "10.77.1.1"
    static let app: Int32 = 10_000_001

    /// Port 7400 of application 10000001, published by node 2.
    func plan(me: NodeID, placed: [Int32: NodeID] = [:]) -> SteeringPlan {
        let entry = PortEntry(port: 7400, proto: .tcp, app: Self.app, node: 2, address: "0.0.0.0", exposed: true)
        let table = PortTable([NodePorts(node: 2, entries: [entry])], online: [1, 2, 3])
        return SteeringPlan(clusterIP: Self.ip, me: me, nodes: [1: "10.77.0.1", 2: "10.77.0.2", 3: "10.77.0.3"], table: table, placed: placed)
    }

    @Test func placedApplicationsAreSteeredAheadOfThePortTable() throws {
        // The table's word: node 2 (mark 0x55000002) seen from node 1, this node (0) from 2.
        #expect(plan(me: 1).ruleset().contains("app_node { 1 : 0x55000002 }"))
        #expect(plan(me: 2).ruleset().contains("app_node { 1 : 0x0 }"))
        // A migration's source (2) once the target (3) runs, and the target itself.
        #expect(plan(me: 2, placed: [Self.app: 3]).ruleset().contains("app_node { 1 : 0x55000003 }"))
        #expect(plan(me: 3, placed: [Self.app: 3]).ruleset().contains("app_node { 1 : 0x0 }"))
        // A placement on a node that is not online, or of an application with no port, is ignored.
        #expect(plan(me: 1, placed: [Self.app: 9]).ruleset().contains("app_node { 1 : 0x55000002 }"))
        #expect(!plan(me: 1, placed: [42: 3]).ruleset().contains("0x55000003 }"))
        #expect(plan(me: 1) != plan(me: 1, placed: [Self.app: 3]), "a placement changes the plan, so that a round applies it")
        try Self.nftAccepts(plan(me: 2, placed: [Self.app: 3]).ruleset())
    }

    @Test func theSourceLockHoldsWhatComesInWhenItCan() throws {
        let held = Connections.lockRuleset(table: "ssi-mig-test", clusterIP: Self.ip, ports: [7400, 80], holdMark: PacketHold.mark)
        #expect(held.contains("chain hold { type filter hook prerouting priority mangle + 10;"))
        #expect(held.contains("iifname != \"ssihold\" ip daddr 10.77.1.1 tcp dport { 80, 7400 } counter meta mark set 0x56000000;"),
                "what comes in on the hold's own interface (given back) is not taken again")
        #expect(held.contains("ip saddr 10.77.1.1 tcp sport { 80, 7400 } counter drop;"), "what the source copy sends is still dropped")
        let dropped = Connections.lockRuleset(table: "ssi-mig-test", clusterIP: Self.ip, ports: [7400])
        #expect(!dropped.contains("chain hold"), "without a hold, packets are dropped and sent again")
        #expect(dropped.contains("ip daddr 10.77.1.1 tcp dport { 7400 } counter drop;"))
        #expect(PacketHold.mark >> 24 != SteeringPlan.mark(1) >> 24, "the hold's mark is none of the steering's")
        try Self.nftAccepts(held)
        try Self.nftAccepts(dropped)
    }

    /// `nft -c -f`: parsed and checked by the kernel, nothing applied. Skipped (printed) when
    /// nft is missing or this is not root (it needs CAP_NET_ADMIN to ask the kernel).
    static func nftAccepts(_ rules: String) throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft") else {
            print("SteeringRulesTests: nft check skipped: needs root and /usr/sbin/nft (scripts/setup.sh installs nftables)")
            return
        }
        let file = "/tmp/ssi-steering-test-\(getpid()).nft"
        try rules.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        let (code, out) = try Proc.run(["nft", "-c", "-f", file], check: false)
        #expect(code == 0, "nft refused the rules: \(out)\n\(rules)")
    }

    /// The flow of a held packet, which picks the packets of handshakes under way
    /// (AppNetworkSide.completeHandshakes): a TCP segment with IP options (IHL 6) from
    /// 10.78.0.9:40000 to port 7300; a UDP datagram and a short packet have none.
    @Test func heldPacketsAreMatchedByTheirFlow() {
        var tcp = [UInt8](repeating: 0, count: 24 + 20)
        tcp[0] = 0x46; tcp[9] = 6
        tcp[12...15] = [10, 78, 0, 9]; tcp[16...19] = [10, 78, 0, 2]
        tcp[24] = 0x9c; tcp[25] = 0x40; tcp[26] = 0x1c; tcp[27] = 0x84
        let flow = tcp.withUnsafeBytes { PacketHold.tcpFlow($0) }
        #expect(flow?.source == "10.78.0.9" && flow?.sourcePort == 40000 && flow?.destinationPort == 7300, "\(String(describing: flow))")
        var udp = tcp
        udp[9] = 17
        #expect(udp.withUnsafeBytes { PacketHold.tcpFlow($0) } == nil)
        #expect(Array(tcp.prefix(22)).withUnsafeBytes { PacketHold.tcpFlow($0) } == nil, "cut before its ports")
        // Flags at byte 13 of the TCP header (after the 24-byte IP header with options):
        // a SYN stays held for the target at a freeze, an ACK or a SYN-less data segment does not.
        var syn = tcp
        syn[24 + 13] = 0x02
        #expect(syn.withUnsafeBytes { PacketHold.isSYN($0) })
        var ack = tcp
        ack[24 + 13] = 0x10
        #expect(!ack.withUnsafeBytes { PacketHold.isSYN($0) })
        syn[9] = 17
        #expect(!syn.withUnsafeBytes { PacketHold.isSYN($0) }, "not TCP")
        #expect(!Array(tcp.prefix(30)).withUnsafeBytes { PacketHold.isSYN($0) }, "cut before its flags")
        // Data: the IP total length (bytes 2-3) less both headers (TCP's data offset, the
        // high nibble of its byte 12). Only a bare acknowledgement goes to a frozen copy.
        var bare = ack
        bare[2] = 0; bare[3] = 44; bare[24 + 12] = 0x50
        #expect(bare.withUnsafeBytes { PacketHold.tcpPayload($0) } == 0)
        #expect(bare.withUnsafeBytes { PacketHold.isBareAck($0) })
        var data = bare + [UInt8](repeating: 7, count: 100)
        data[3] = 144
        #expect(data.withUnsafeBytes { PacketHold.tcpPayload($0) } == 100)
        #expect(!data.withUnsafeBytes { PacketHold.isBareAck($0) }, "a segment with data stays held for the target")
        var withOptions = data
        withOptions[24 + 12] = 0x80  // 32-byte TCP header (timestamps): 88 bytes of data
        #expect(withOptions.withUnsafeBytes { PacketHold.tcpPayload($0) } == 88)
        for (flag, name) in [(UInt8(0x01), "FIN"), (0x02, "SYN"), (0x04, "RST")] {
            var f = bare
            f[24 + 13] = 0x10 | flag
            #expect(!f.withUnsafeBytes { PacketHold.isBareAck($0) }, "a \(name) stays held for the target")
        }
        var notTCP = bare
        notTCP[9] = 17
        #expect(notTCP.withUnsafeBytes { PacketHold.tcpPayload($0) } == nil && !notTCP.withUnsafeBytes { PacketHold.isBareAck($0) })
    }

    /// The hold of new connections (PacketHold.holdNew): only a TCP segment to the address
    /// with SYN and without ACK is marked for the hold, and not one given back by it.
    @Test func newConnectionsAreHeldApart() throws {
        let rules = PacketHold.newConnectionsRuleset("10.78.0.5")
        #expect(rules.contains("table ip ssi-holdsyn-10-78-0-5 {"))
        #expect(rules.contains("type filter hook prerouting priority mangle + 10;"))
        #expect(rules.contains("iifname != \"ssihold\" ip daddr 10.78.0.5 tcp flags & (syn | ack) == syn counter meta mark set 0x56000000;"))
        try Self.nftAccepts(rules)
    }
}
