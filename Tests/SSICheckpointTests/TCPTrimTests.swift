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

/// Where a restore keeps its own fd numbers (SharedDescriptions.region): above the image's
/// fds when they fit under the hard RLIMIT_NOFILE, else in the highest free run below it.
@Suite struct FDRegionTests {
    @Test func aboveTheImagesFdsWhenThereIsRoom() {
        #expect(SharedDescriptions.region(used: [0, 1, 2, 7], need: 60, limit: 1024) == 17)
        #expect(SharedDescriptions.region(used: [], need: 60, limit: 1024) == 12)
    }

    @Test func belowTheLimitWhenTheImageReachesIt() {
        // fd 19999 under a limit of 20000, a few more below: the run just under 19000.
        let used: Set<Int32> = [0, 1, 2, 5, 1000, 5000, 18990, 19999]
        let r = SharedDescriptions.region(used: used, need: 60, limit: 20000)
        #expect(r == 19999 - 60)
        #expect(!(r..<(r + 60)).contains(where: used.contains))
        // The top run too short: the next one down.
        let crowded: Set<Int32> = [0, 1, 2, 19950, 19999]
        let c = SharedDescriptions.region(used: crowded, need: 60, limit: 20000)
        #expect(c == 19950 - 60)
        // No run long enough anywhere: the usual place (the restore then names the failure).
        #expect(SharedDescriptions.region(used: Set((0..<100).map(Int32.init)), need: 60, limit: 100) == 109)
    }
}
