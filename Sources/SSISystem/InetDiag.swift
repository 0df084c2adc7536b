import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// TCP sockets through sock_diag (sock_diag(7), NETLINK_SOCK_DIAG with AF_INET/AF_INET6).
public enum InetDiag {
    /// Ends the TIME_WAIT sockets whose local port is `port` (network byte order as in the
    /// sockaddr) in `family`, with SOCK_DESTROY (the request `ss -K` sends; it needs
    /// CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN). A TIME_WAIT socket belongs to no process;
    /// it is what keeps a port from a listener that did not set SO_REUSEADDR, or whose
    /// closed connections did not (tcp(7)). Returns how many were ended.
    @discardableResult
    public static func destroyTimeWait(family: Int32, localPort port: UInt16) -> Int {
        let fd = socket(16 /* AF_NETLINK */, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        // The dump: every TCP socket of the family in TIME_WAIT (1 << TCP_TIME_WAIT, 6).
        guard let found = request(fd, type: 20, flags: 0x1 | 0x300, family: family, id: [UInt8](repeating: 0, count: 48)) else { return 0 }
        var ended = 0
        // struct inet_diag_msg: family, state, timer, retrans, then struct inet_diag_sockid
        // (sport, dport in network order, src[4], dst[4], if, cookie[2]): 48 bytes at 4.
        for msg in found where msg.count >= 52 {
            let id = Array(msg[4..<52])
            let sport = UInt16(id[0]) << 8 | UInt16(id[1])
            guard sport == UInt16(bigEndian: port) else { continue }
            // SOCK_DESTROY (21) with NLM_F_REQUEST | NLM_F_ACK: the socket of that exact id.
            if let acks = request(fd, type: 21, flags: 0x1 | 0x4, family: family, id: id), acks.isEmpty { ended += 1 }
        }
        return ended
    }

    /// Sends one request (struct nlmsghdr + struct inet_diag_req_v2) and reads the answer:
    /// the payloads of the messages of a dump, or [] for a positive ack; nil on an error.
    /// The shutdown(2) state of the socket of inode `inode` (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2:
    /// the INET_DIAG_SHUTDOWN attribute, which every answer carries), for `proto` (IPPROTO_UDP
    /// 17...); nil if it is not found.
    public static func shutdown(family: Int32, protocol proto: Int32, inode: UInt32) -> UInt8? {
        guard let found = request(nil, type: 20, flags: 0x1 | 0x300, family: family, id: [UInt8](repeating: 0, count: 48),
                                  protocol: proto, states: 0xffff_ffff) else { return nil }
        // struct inet_diag_msg is 72 bytes, idiag_inode at 68; then the attributes.
        for msg in found where msg.count >= 72 {
            let ino = msg.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 68, as: UInt32.self) }
            guard ino == inode else { continue }
            // INET_DIAG_SHUTDOWN (8): one byte.
            return SockDiag.attributes(msg, from: 72).first { $0.type == 8 && !$0.value.isEmpty }?.value.first ?? 0
        }
        return nil
    }

    /// Whether the TCP socket at `local` connected to `remote` (sockaddr bytes of `family`)
    /// belongs to a process: true when it has an inode, false when it is an orphan the
    /// kernel keeps closing (its program closed it: FIN_WAIT, TIME_WAIT), nil when there is
    /// no such socket (gone) or sock_diag cannot tell.
    public static func owned(family: Int32, local: Data, remote: Data) -> Bool? {
        // struct inet_diag_sockid: sport, dport (network order), src[16], dst[16], ...
        func parts(_ a: Data) -> (port: [UInt8], addr: [UInt8])? {
            let b = [UInt8](a)
            if family == AF_INET, b.count >= 8 { return (Array(b[2..<4]), Array(b[4..<8])) }
            if family == AF_INET6, b.count >= 24 { return (Array(b[2..<4]), Array(b[8..<24])) }
            return nil
        }
        guard let l = parts(local), let r = parts(remote),
              let found = request(nil, type: 20, flags: 0x1 | 0x300, family: family, id: [UInt8](repeating: 0, count: 48), states: 0xffff_ffff) else { return nil }
        let n = l.addr.count
        for msg in found where msg.count >= 72 {
            // The id at 4: sport 4..<6, dport 6..<8, src 8..<24, dst 24..<40.
            guard Array(msg[4..<6]) == l.port, Array(msg[6..<8]) == r.port,
                  Array(msg[8..<(8 + n)]) == l.addr, Array(msg[24..<(24 + n)]) == r.addr else { continue }
            return msg.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 68, as: UInt32.self) } != 0
        }
        return nil
    }

    /// `fd` nil: a sock_diag socket of its own (SockDiag.query).
    private static func request(_ fd: Int32?, type: UInt16, flags: UInt16, family: Int32, id: [UInt8],
                                protocol proto: Int32 = Int32(IPPROTO_TCP), states: UInt32 = 1 << 6) -> [[UInt8]]? {
        var req = [UInt8](repeating: 0, count: 16 + 56)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { req.replaceSubrange(at..<(at + 4), with: $0) } }
        func put16(_ v: UInt16, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { req.replaceSubrange(at..<(at + 2), with: $0) } }
        put32(UInt32(req.count), 0); put16(type, 4); put16(flags, 6); put32(1, 8)
        req[16] = UInt8(family); req[17] = UInt8(proto)
        put32(states, 20)                    // idiag_states (TIME_WAIT: 1 << 6)
        req.replaceSubrange(24..<72, with: id)
        return try? (fd.map { SockDiag.exchange($0, req) } ?? SockDiag.query(req)).get()
    }
}
