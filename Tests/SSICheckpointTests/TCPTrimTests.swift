import Foundation
@testable import SSICheckpoint
import SSIImage
import Testing

/// A migration's target starts a restored send queue at the last acknowledgement its peer
/// sent after the snapshot (RestartOptions.tcpPeerAcks): only within the part that had been
/// sent, in sequence-space arithmetic.
@Suite struct TCPTrimTests {
    /// 1,000 bytes queued, the last 300 unsent, the queue ending at `end`.
    static func state(end: UInt32) -> TCPRepairState {
        var r = TCPRepairState(sendSeq: end, recvSeq: 1, sendQueue: Data((0..<1000).map { UInt8(truncatingIfNeeded: $0) }), recvQueue: Data(),
                               mss: 1448, sendWindowScale: 7, recvWindowScale: 7, sack: true, timestamps: true, timestamp: 1, window: [])
        r.unsent = 300
        return r
    }

    @Test func anAcknowledgedPrefixOfTheSentPartGoes() {
        let r = Self.state(end: 101_000)   // first unacknowledged byte: 100,000
        let t = SocketRebuilder.trimmed(r, peerAck: 100_400)
        #expect(t.sendQueue.count == 600)
        #expect(t.sendQueue.first == 144)   // byte 400 of the queue (400 mod 256)
        #expect(t.sendSeq == r.sendSeq && t.unsent == 300)
        // All of the sent part acknowledged: the unsent part is left.
        #expect(SocketRebuilder.trimmed(r, peerAck: 100_700).sendQueue.count == 300)
    }

    @Test func otherAcknowledgementsChangeNothing() {
        let r = Self.state(end: 101_000)
        #expect(SocketRebuilder.trimmed(r, peerAck: nil) == r)
        #expect(SocketRebuilder.trimmed(r, peerAck: 100_000) == r)   // nothing new
        #expect(SocketRebuilder.trimmed(r, peerAck: 99_000) == r)    // behind the queue
        #expect(SocketRebuilder.trimmed(r, peerAck: 100_701) == r)   // into the unsent part: not this connection's
    }

    @Test func theSequenceSpaceWraps() {
        let r = Self.state(end: 500)   // first unacknowledged byte: 2^32 - 500
        #expect(SocketRebuilder.trimmed(r, peerAck: 100).sendQueue.count == 400)
    }
}
