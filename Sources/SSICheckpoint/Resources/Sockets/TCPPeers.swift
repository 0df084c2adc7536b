import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// A restart from a snapshot whose TCP connections the peer has since moved past (issue 12,
// docs/streams.md, "Checkpoint and restart"): the peer has acknowledged bytes the snapshot
// never sent, or sent bytes the snapshot never received. Rebuilt as saved, such a connection
// would hang: each side would take the other's segments for old or unsent data and answer
// with acknowledgements forever. The caller (the daemon, which can ask the peer's node) says
// where the peer stands; a connection that no longer fits is reset instead: rebuilt at the
// peer's own sequence numbers and disconnected (connect(2) with AF_UNSPEC, tcp_disconnect),
// which sends a reset the peer accepts (its sequence number is the one the peer expects,
// RFC 5961) and leaves the application's socket with ECONNRESET pending.

/// Where the other end of a connection stands now, as its own kernel says (tcp(7):
/// TCP_QUEUE_SEQ in repair mode, SIOCOUTQ).
public struct TCPPeerState: Codable, Sendable, Equatable {
    /// First byte it has sent and not had acknowledged, and the next it will send.
    public var sendUnacked: UInt32
    public var sendNext: UInt32
    /// The next byte it expects.
    public var receiveNext: UInt32
    public init(sendUnacked: UInt32, sendNext: UInt32, receiveNext: UInt32) {
        (self.sendUnacked, self.sendNext, self.receiveNext) = (sendUnacked, sendNext, receiveNext)
    }
}

public enum TCPPeerCheckResult: Sendable, Equatable {
    /// The peer cannot be asked (not an application of the cluster, its node unreachable):
    /// the connection is rebuilt as saved.
    case unknown
    /// The peer has no such connection any more.
    case gone
    case state(TCPPeerState)
}

/// (local address, local port, peer address, peer port) -> where the peer stands.
public typealias TCPPeerCheck = @Sendable (String, UInt16, String, UInt16) -> TCPPeerCheckResult

extension TCPRepairState {
    /// Whether the saved connection still fits the peer's: the peer expects a byte this side
    /// had queued (acknowledged up to its first unacknowledged byte, at most all it wrote),
    /// and this side expects a byte the peer still holds (sequence arithmetic modulo 2^32).
    func fits(_ p: TCPPeerState) -> Bool {
        func within(_ x: UInt32, _ lo: UInt32, _ hi: UInt32) -> Bool { x &- lo <= hi &- lo }
        let unacked = sendSeq &- UInt32(sendQueue.count)
        return within(p.receiveNext, unacked, sendSeq) && within(recvSeq, p.sendUnacked, p.sendNext)
    }
}

extension SocketRebuilder {
    /// The peer's verdict on a saved connection: nil to rebuild it as saved, else the
    /// sequence numbers to reset it at (nil inside: the peer has none).
    func staleConnection(_ f: FileDescriptorImage, _ s: SocketImage, _ r: TCPRepairState) -> (send: UInt32, receive: UInt32)?? {
        guard f.external == true, s.family == AF_INET, let check = tcpPeerCheck,
              let (la, lp) = Self.hostPort(s.address, s.family), let (ra, rp) = Self.hostPort(s.peerAddress, s.family) else { return nil }
        switch check(la, lp, ra, rp) {
        case .unknown: return nil
        case .gone: return .some(nil)
        case .state(let p): return r.fits(p) ? nil : .some((p.receiveNext, p.sendNext))
        }
    }

    static func hostPort(_ d: Data?, _ family: Int32) -> (String, UInt16)? {
        let text = SockAddr.describe(d, family: family)
        guard let i = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: i)...]) else { return nil }
        return (String(text[..<i]), port)
    }

    /// A connection the peer has moved past: made in repair mode at the peer's sequence
    /// numbers (when it still has the connection), to be disconnected once out of repair
    /// mode (buildTCP), which resets it on both sides.
    func resetTCP(_ f: FileDescriptorImage, _ s: SocketImage, fd: Int32, at seqs: (send: UInt32, receive: UInt32)?) throws {
        guard let r = s.tcp, let local = s.address, let peer = s.peerAddress else { return }
        let what = "TCP connection \(SockAddr.describe(local, family: s.family)) -> \(SockAddr.describe(peer, family: s.family))"
        guard SocketOption.tcpRepair.set(fd, 1) else { throw SSIError.sys("TCP_REPAIR", errno: errno) }
        repairing.append((fd, s.options?["SO_REUSEADDR"] ?? 0))
        if SockAddr.bind(fd, local) != 0 { throw SSIError.sys("bind \(what)", errno: errno) }
        let (send, receive) = seqs ?? (r.sendSeq, r.recvSeq)
        for (q, seq) in [(SocketOption.tcpSendQueue, send), (SocketOption.tcpReceiveQueue, receive)] {
            guard SocketOption.tcpRepairQueue.set(fd, q), SocketOption.tcpQueueSequence.set(fd, Int32(bitPattern: seq)) else {
                throw SSIError.sys("set the sequence numbers of \(what)", errno: errno)
            }
        }
        SocketOption.tcpRepairQueue.set(fd, SocketOption.tcpNoQueue)
        if SockAddr.connect(fd, peer) != 0 { throw SSIError.sys("connect (repair) \(what)", errno: errno) }
        resetting.append(fd)
        warn("\(what): the peer has moved past the snapshot (\(seqs == nil ? "it has no such connection any more" : "its sequence numbers differ")); the connection is reset on both sides")
    }

    /// Out of repair mode: each stale connection disconnected (tcp_disconnect sends the
    /// reset and sets ECONNRESET on the socket, which the application then reads).
    func disconnectStale() {
        for fd in resetting {
            var unspec = sockaddr()
            unspec.sa_family = sa_family_t(AF_UNSPEC)
            _ = Glibc.connect(fd, &unspec, socklen_t(MemoryLayout<sockaddr>.size))
        }
        resetting = []
    }
}
