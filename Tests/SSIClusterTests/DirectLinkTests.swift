import Foundation
import SSINetwork
import Testing

/// The pieces of direct application links and of a migration's late acknowledgements that
/// need no cluster (docs/streams.md, "Direct links"): the MACs, and what the source reads of
/// the packets it held.
@Suite struct DirectLinkTests {
    @Test func macsAreLocallyAdministeredUnicastAndOnePerApplication() {
        let a = AppDirectLink.mac(10_000_001), b = AppDirectLink.mac(10_000_258)
        #expect(a == [0x02, 0x53, 0x53, 0, 0, 1])
        #expect(b == [0x02, 0x53, 0x53, 0, 1, 2])
        // IEEE 802: bit 1 of the first octet set (local), bit 0 clear (unicast).
        #expect(a[0] & 0x02 != 0 && a[0] & 0x01 == 0)
        #expect(AppDirectLink.macText(10_000_001) == "02:53:53:00:00:01")
        #expect(AppDirectLink.standIn(10_000_001) == "ssim1")
    }

    /// An IPv4/TCP packet from `source`:`sourcePort` to port `port`, acknowledging `ack`
    /// (RFC 791/793 headers, no options).
    static func packet(source: [UInt8], sourcePort: UInt16, port: UInt16, ack: UInt32, flags: UInt8 = 0x10) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0] + source + [10, 78, 0, 2]
        var tcp = [UInt8](repeating: 0, count: 20)
        (tcp[0], tcp[1], tcp[2], tcp[3]) = (UInt8(sourcePort >> 8), UInt8(sourcePort & 255), UInt8(port >> 8), UInt8(port & 255))
        (tcp[8], tcp[9], tcp[10], tcp[11]) = (UInt8(ack >> 24), UInt8(ack >> 16 & 255), UInt8(ack >> 8 & 255), UInt8(ack & 255))
        tcp[12] = 0x50
        tcp[13] = flags
        ip += tcp
        return ip
    }

    @Test func theFurthestAcknowledgementOfEachFlowIsKept() {
        let peer: [UInt8] = [10, 78, 0, 1]
        let packets = [
            Self.packet(source: peer, sourcePort: 7600, port: 40000, ack: 1000),
            Self.packet(source: peer, sourcePort: 7600, port: 40000, ack: 5000),
            // Reordered on the way: an older one after a newer one does not win.
            Self.packet(source: peer, sourcePort: 7600, port: 40000, ack: 3000),
            // Across the wrap of the sequence space, 0x10 is after 0xFFFFFFF0.
            Self.packet(source: peer, sourcePort: 7601, port: 40001, ack: 0xFFFF_FFF0),
            Self.packet(source: peer, sourcePort: 7601, port: 40001, ack: 0x10),
            // Without the ACK flag (a SYN), no acknowledgement.
            Self.packet(source: peer, sourcePort: 7602, port: 40002, ack: 77, flags: 0x02),
        ]
        let acks = PacketHold.furthestAcks(packets)
        #expect(acks == ["10.78.0.1:7600>40000": 5000, "10.78.0.1:7601>40001": 0x10])
    }
}
