import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Socket options beyond the few int ones of keptSocketOptions: every option a server or a
// client commonly sets (socket(7), tcp(7), ip(7), ipv6(7)), kept as the bytes getsockopt(2)
// gives, and only where they differ from a fresh socket's, so that a restart does not pin
// values the kernel would otherwise choose (buffer autotuning, the congestion control default).

/// One option: its snapshot name, level and number, the families it applies to (AF_UNIX 1,
/// AF_INET 2, AF_INET6 10, AF_NETLINK 16, AF_PACKET 17) and whether it is TCP only.
struct RawSocketOption {
    let name: String
    let level: Int32
    let option: Int32
    let families: Set<Int32>
    var tcpOnly = false
    /// Refused on stream sockets (the multicast options: EINVAL on TCP, ip(7)), whose
    /// values can still differ from a fresh socket's (an accepted connection's multicast TTL
    /// is its SYN's TTL).
    var datagramOnly = false
}

/// In the order they are set back: IP_TOS before SO_PRIORITY (setting IP_TOS sets the
/// priority too, ip(7)); the buffer sizes through their FORCE forms (they need root, and
/// ignore net.core.rmem_max, so the size comes back whatever the limit).
let rawSocketOptions: [RawSocketOption] = [
    RawSocketOption(name: "IP_TOS", level: Int32(IPPROTO_IP), option: 1, families: [2]),
    RawSocketOption(name: "IP_TTL", level: Int32(IPPROTO_IP), option: 2, families: [2]),
    RawSocketOption(name: "IPV6_TCLASS", level: Int32(IPPROTO_IPV6), option: 67, families: [10]),
    RawSocketOption(name: "SO_PRIORITY", level: SOL_SOCKET, option: 12, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_RCVLOWAT", level: SOL_SOCKET, option: 18, families: [1, 2, 10]),
    RawSocketOption(name: "SO_LINGER", level: SOL_SOCKET, option: 13, families: [1, 2, 10]),
    RawSocketOption(name: "SO_OOBINLINE", level: SOL_SOCKET, option: 10, families: [1, 2, 10]),   // unix streams have MSG_OOB since Linux 5.15
    RawSocketOption(name: "SO_MARK", level: SOL_SOCKET, option: 36, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_RCVTIMEO", level: SOL_SOCKET, option: 20, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_SNDTIMEO", level: SOL_SOCKET, option: 21, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_BROADCAST", level: SOL_SOCKET, option: 6, families: [2, 10]),
    RawSocketOption(name: "SO_TIMESTAMP", level: SOL_SOCKET, option: 29, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "IP_PKTINFO", level: Int32(IPPROTO_IP), option: 8, families: [2]),
    // Multicast senders and receivers (ip(7), ipv6(7)): the interface, hops and loopback of
    // what they send, and whether they take every group's datagrams. A membership
    // (IP_ADD_MEMBERSHIP) has no getsockopt to read it back and is not kept.
    RawSocketOption(name: "IP_MULTICAST_IF", level: Int32(IPPROTO_IP), option: 32, families: [2], datagramOnly: true),
    RawSocketOption(name: "IP_MULTICAST_TTL", level: Int32(IPPROTO_IP), option: 33, families: [2], datagramOnly: true),
    RawSocketOption(name: "IP_MULTICAST_LOOP", level: Int32(IPPROTO_IP), option: 34, families: [2], datagramOnly: true),
    RawSocketOption(name: "IP_MULTICAST_ALL", level: Int32(IPPROTO_IP), option: 49, families: [2], datagramOnly: true),
    RawSocketOption(name: "IPV6_UNICAST_HOPS", level: Int32(IPPROTO_IPV6), option: 16, families: [10]),
    RawSocketOption(name: "IPV6_MULTICAST_IF", level: Int32(IPPROTO_IPV6), option: 17, families: [10], datagramOnly: true),
    RawSocketOption(name: "IPV6_MULTICAST_HOPS", level: Int32(IPPROTO_IPV6), option: 18, families: [10], datagramOnly: true),
    RawSocketOption(name: "IPV6_MULTICAST_LOOP", level: Int32(IPPROTO_IPV6), option: 19, families: [10], datagramOnly: true),
    RawSocketOption(name: "IPV6_MULTICAST_ALL", level: Int32(IPPROTO_IPV6), option: 29, families: [10], datagramOnly: true),
    // What a program asks to be told with each datagram, or on its error queue (traceroute,
    // DNS and NTP servers, QUIC stacks): extended errors, TTL/hop limit, TOS/traffic class,
    // the original destination (transparent proxies), path MTU discovery, a minimum TTL
    // (BGP's GTSM).
    RawSocketOption(name: "IP_MTU_DISCOVER", level: Int32(IPPROTO_IP), option: 10, families: [2]),
    RawSocketOption(name: "IP_RECVERR", level: Int32(IPPROTO_IP), option: 11, families: [2]),
    RawSocketOption(name: "IP_RECVTTL", level: Int32(IPPROTO_IP), option: 12, families: [2]),
    RawSocketOption(name: "IP_RECVTOS", level: Int32(IPPROTO_IP), option: 13, families: [2]),
    RawSocketOption(name: "IP_RECVORIGDSTADDR", level: Int32(IPPROTO_IP), option: 20, families: [2]),
    RawSocketOption(name: "IP_MINTTL", level: Int32(IPPROTO_IP), option: 21, families: [2]),
    RawSocketOption(name: "IP_BIND_ADDRESS_NO_PORT", level: Int32(IPPROTO_IP), option: 24, families: [2]),
    RawSocketOption(name: "IPV6_MTU_DISCOVER", level: Int32(IPPROTO_IPV6), option: 23, families: [10]),
    RawSocketOption(name: "IPV6_RECVERR", level: Int32(IPPROTO_IPV6), option: 25, families: [10]),
    RawSocketOption(name: "IPV6_RECVHOPLIMIT", level: Int32(IPPROTO_IPV6), option: 51, families: [10]),
    RawSocketOption(name: "IPV6_RECVTCLASS", level: Int32(IPPROTO_IPV6), option: 66, families: [10]),
    RawSocketOption(name: "IPV6_RECVORIGDSTADDR", level: Int32(IPPROTO_IPV6), option: 74, families: [10]),
    // Also set before the bind (RawSocketOptions.beforeBind): they decide what it may take.
    RawSocketOption(name: "SO_BINDTODEVICE", level: SOL_SOCKET, option: 25, families: [2, 10]),
    RawSocketOption(name: "IP_FREEBIND", level: Int32(IPPROTO_IP), option: 15, families: [2]),
    RawSocketOption(name: "IP_TRANSPARENT", level: Int32(IPPROTO_IP), option: 19, families: [2]),
    RawSocketOption(name: "IPV6_TRANSPARENT", level: Int32(IPPROTO_IPV6), option: 75, families: [10]),
    RawSocketOption(name: "IPV6_FREEBIND", level: Int32(IPPROTO_IPV6), option: 78, families: [10]),
    RawSocketOption(name: "SO_DONTROUTE", level: SOL_SOCKET, option: 5, families: [2, 10]),
    RawSocketOption(name: "SO_TIMESTAMPNS", level: SOL_SOCKET, option: 35, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_TIMESTAMPING", level: SOL_SOCKET, option: 37, families: [2, 10, 17]),
    RawSocketOption(name: "SO_RXQ_OVFL", level: SOL_SOCKET, option: 40, families: [2, 10, 16, 17]),
    RawSocketOption(name: "SO_BUSY_POLL", level: SOL_SOCKET, option: 46, families: [2, 10]),
    RawSocketOption(name: "SO_PASSSEC", level: SOL_SOCKET, option: 34, families: [1, 16]),
    RawSocketOption(name: "SO_PASSPIDFD", level: SOL_SOCKET, option: 76, families: [1]),
    // Where the next MSG_PEEK starts (socket(7)); -1, off, on a fresh socket. The queues are
    // read with it off and given back their bytes before the options are set.
    RawSocketOption(name: "SO_PEEK_OFF", level: SOL_SOCKET, option: 42, families: [1, 2, 10]),
    RawSocketOption(name: "IPV6_RECVPKTINFO", level: Int32(IPPROTO_IPV6), option: 49, families: [10]),
    RawSocketOption(name: "SO_RCVBUF", level: SOL_SOCKET, option: 8, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_SNDBUF", level: SOL_SOCKET, option: 7, families: [1, 2, 10, 16, 17]),
    // Which of the two sizes the program fixed (SOCK_SNDBUF_LOCK 1, SOCK_RCVBUF_LOCK 2; Linux
    // 5.14, socket(7) SO_BUF_LOCK): after the sizes, whose FORCE forms lock both.
    RawSocketOption(name: "SO_BUF_LOCK", level: SOL_SOCKET, option: 72, families: [1, 2, 10, 16, 17]),
    // netlink(7) options (SOL_NETLINK 270), which a netlink client sets once after socket(2).
    RawSocketOption(name: "NETLINK_PKTINFO", level: 270, option: 3, families: [16]),
    RawSocketOption(name: "NETLINK_BROADCAST_ERROR", level: 270, option: 4, families: [16]),
    RawSocketOption(name: "NETLINK_NO_ENOBUFS", level: 270, option: 5, families: [16]),
    RawSocketOption(name: "NETLINK_LISTEN_ALL_NSID", level: 270, option: 8, families: [16]),
    RawSocketOption(name: "NETLINK_CAP_ACK", level: 270, option: 10, families: [16]),
    RawSocketOption(name: "NETLINK_EXT_ACK", level: 270, option: 11, families: [16]),
    RawSocketOption(name: "NETLINK_GET_STRICT_CHK", level: 270, option: 12, families: [16]),
    // packet(7) options (SOL_PACKET 263), ints; PACKET_VERSION before the others.
    RawSocketOption(name: "PACKET_VERSION", level: 263, option: 10, families: [17]),
    RawSocketOption(name: "PACKET_RESERVE", level: 263, option: 12, families: [17]),
    RawSocketOption(name: "PACKET_AUXDATA", level: 263, option: 8, families: [17]),
    RawSocketOption(name: "PACKET_ORIGDEV", level: 263, option: 9, families: [17]),
    RawSocketOption(name: "PACKET_LOSS", level: 263, option: 14, families: [17]),
    RawSocketOption(name: "PACKET_VNET_HDR", level: 263, option: 15, families: [17]),
    RawSocketOption(name: "PACKET_TIMESTAMP", level: 263, option: 17, families: [17]),
    RawSocketOption(name: "PACKET_QDISC_BYPASS", level: 263, option: 20, families: [17]),
    RawSocketOption(name: "PACKET_IGNORE_OUTGOING", level: 263, option: 23, families: [17]),
    RawSocketOption(name: "TCP_KEEPIDLE", level: Int32(IPPROTO_TCP), option: 4, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_KEEPINTVL", level: Int32(IPPROTO_TCP), option: 5, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_KEEPCNT", level: Int32(IPPROTO_TCP), option: 6, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_USER_TIMEOUT", level: Int32(IPPROTO_TCP), option: 18, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_CONGESTION", level: Int32(IPPROTO_TCP), option: 13, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_NOTSENT_LOWAT", level: Int32(IPPROTO_TCP), option: 25, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_CORK", level: Int32(IPPROTO_TCP), option: 3, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_WINDOW_CLAMP", level: Int32(IPPROTO_TCP), option: 10, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_DEFER_ACCEPT", level: Int32(IPPROTO_TCP), option: 9, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_FASTOPEN", level: Int32(IPPROTO_TCP), option: 23, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_SYNCNT", level: Int32(IPPROTO_TCP), option: 7, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_LINGER2", level: Int32(IPPROTO_TCP), option: 8, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_THIN_LINEAR_TIMEOUTS", level: Int32(IPPROTO_TCP), option: 16, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "TCP_INQ", level: Int32(IPPROTO_TCP), option: 36, families: [2, 10], tcpOnly: true),
    // Found by probing (an option sweep, December 2026). TCP_SAVE_SYN: a listener keeps each
    // SYN for TCP_SAVED_SYN. UDP (SOL_UDP 17): GSO segment size and GRO, which QUIC servers
    // set; the IPv6 checksum ones (udp(7)). A TCP socket refuses SOL_UDP, and a UDP one
    // SOL_TCP: such an option is never read, so never set.
    RawSocketOption(name: "TCP_SAVE_SYN", level: Int32(IPPROTO_TCP), option: 27, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "UDP_CORK", level: 17, option: 1, families: [2, 10], datagramOnly: true),
    RawSocketOption(name: "UDP_SEGMENT", level: 17, option: 103, families: [2, 10], datagramOnly: true),
    RawSocketOption(name: "UDP_GRO", level: 17, option: 104, families: [2, 10], datagramOnly: true),
    RawSocketOption(name: "UDP_NO_CHECK6_TX", level: 17, option: 101, families: [10], datagramOnly: true),
    RawSocketOption(name: "UDP_NO_CHECK6_RX", level: 17, option: 102, families: [10], datagramOnly: true),
    RawSocketOption(name: "SO_MAX_PACING_RATE", level: SOL_SOCKET, option: 47, families: [2, 10]),
    RawSocketOption(name: "SO_ZEROCOPY", level: SOL_SOCKET, option: 60, families: [2, 10, 17]),
    RawSocketOption(name: "SO_TXREHASH", level: SOL_SOCKET, option: 74, families: [2, 10]),
    RawSocketOption(name: "SO_SELECT_ERR_QUEUE", level: SOL_SOCKET, option: 45, families: [1, 2, 10, 16, 17]),
    RawSocketOption(name: "SO_PREFER_BUSY_POLL", level: SOL_SOCKET, option: 69, families: [2, 10]),
    RawSocketOption(name: "SO_RCVMARK", level: SOL_SOCKET, option: 75, families: [2, 10, 17]),
    RawSocketOption(name: "SO_WIFI_STATUS", level: SOL_SOCKET, option: 41, families: [2, 10, 17]),
    RawSocketOption(name: "SO_NOFCS", level: SOL_SOCKET, option: 43, families: [2, 10, 17]),
    RawSocketOption(name: "SO_INCOMING_CPU", level: SOL_SOCKET, option: 49, families: [2, 10]),
    RawSocketOption(name: "TCP_FASTOPEN_NO_COOKIE", level: Int32(IPPROTO_TCP), option: 34, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "IP_CHECKSUM", level: Int32(IPPROTO_IP), option: 23, families: [2], datagramOnly: true),
    RawSocketOption(name: "IP_OPTIONS", level: Int32(IPPROTO_IP), option: 4, families: [2]),
    RawSocketOption(name: "IP_RECVOPTS", level: Int32(IPPROTO_IP), option: 6, families: [2]),
    RawSocketOption(name: "IP_RETOPTS", level: Int32(IPPROTO_IP), option: 7, families: [2]),
    RawSocketOption(name: "IP_PASSSEC", level: Int32(IPPROTO_IP), option: 18, families: [2]),
    RawSocketOption(name: "IP_RECVERR_RFC4884", level: Int32(IPPROTO_IP), option: 26, families: [2]),
    RawSocketOption(name: "IP_LOCAL_PORT_RANGE", level: Int32(IPPROTO_IP), option: 51, families: [2, 10]),
    RawSocketOption(name: "IPV6_FLOWINFO", level: Int32(IPPROTO_IPV6), option: 11, families: [10]),
    RawSocketOption(name: "IPV6_RECVERR_RFC4884", level: Int32(IPPROTO_IPV6), option: 31, families: [10]),
    RawSocketOption(name: "IPV6_RECVHOPOPTS", level: Int32(IPPROTO_IPV6), option: 53, families: [10]),
    RawSocketOption(name: "IPV6_RECVRTHDR", level: Int32(IPPROTO_IPV6), option: 56, families: [10]),
    RawSocketOption(name: "IPV6_RECVDSTOPTS", level: Int32(IPPROTO_IPV6), option: 58, families: [10]),
    RawSocketOption(name: "IPV6_RECVPATHMTU", level: Int32(IPPROTO_IPV6), option: 60, families: [10]),
    RawSocketOption(name: "IPV6_DONTFRAG", level: Int32(IPPROTO_IPV6), option: 62, families: [10]),
    RawSocketOption(name: "IPV6_AUTOFLOWLABEL", level: Int32(IPPROTO_IPV6), option: 70, families: [10]),
    RawSocketOption(name: "IPV6_ADDR_PREFERENCES", level: Int32(IPPROTO_IPV6), option: 72, families: [10]),
    RawSocketOption(name: "IPV6_MINHOPCOUNT", level: Int32(IPPROTO_IPV6), option: 73, families: [10]),
    RawSocketOption(name: "IPV6_RECVFRAGSIZE", level: Int32(IPPROTO_IPV6), option: 77, families: [10]),
    // Found by the third probing round (December 7 2026): the outgoing interface by index
    // without a bind to it (IP_UNICAST_IF, IPV6_UNICAST_IF: DNS resolvers, ip(7)), the
    // fragment size told with each datagram, the flow label sent with IPV6_FLOWINFO, a
    // delay added to every TCP segment (TCP_TX_DELAY, testing), and SO_TXTIME's clock and
    // flags (struct sock_txtime, 8 bytes; socket(7)), which time-sensitive senders set once.
    RawSocketOption(name: "IP_UNICAST_IF", level: Int32(IPPROTO_IP), option: 50, families: [2]),
    RawSocketOption(name: "IP_RECVFRAGSIZE", level: Int32(IPPROTO_IP), option: 25, families: [2]),
    RawSocketOption(name: "IPV6_UNICAST_IF", level: Int32(IPPROTO_IPV6), option: 76, families: [10]),
    RawSocketOption(name: "IPV6_FLOWINFO_SEND", level: Int32(IPPROTO_IPV6), option: 33, families: [10]),
    RawSocketOption(name: "TCP_TX_DELAY", level: Int32(IPPROTO_TCP), option: 37, families: [2, 10], tcpOnly: true),
    RawSocketOption(name: "SO_TXTIME", level: SOL_SOCKET, option: 61, families: [2, 10, 17]),
]

/// Set on a new socket before its bind as well: the device it is bound to, and binding an
/// address the node does not have (IP_FREEBIND, IP_TRANSPARENT; ip(7)).
let beforeBindSocketOptions: Set<String> = ["SO_BINDTODEVICE", "IP_FREEBIND", "IP_TRANSPARENT", "IPV6_TRANSPARENT", "IPV6_FREEBIND"]

enum RawSocketOptions {
    static func get(_ fd: Int32, _ o: RawSocketOption) -> Data? {
        var buf = [UInt8](repeating: 0, count: 64)
        var len = socklen_t(buf.count)
        guard getsockopt(fd, o.level, o.option, &buf, &len) == 0 else { return nil }
        return Data(buf.prefix(Int(len)))
    }

    /// The options of `sock` that differ from those of a fresh socket of its family and type.
    static func dump(_ sock: Int32, family: Int32, type: Int32, tcp: Bool) -> [String: Data]? {
        let fresh = socket(family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fresh >= 0 else { return nil }
        defer { close(fresh) }
        var out = [String: Data]()
        for o in rawSocketOptions where o.families.contains(family) && (tcp || !o.tcpOnly) && !(o.datagramOnly && type == Int32(SOCK_STREAM.rawValue)) {
            guard let v = get(sock, o), let d = get(fresh, o), v != d else { continue }
            out[o.name] = v
        }
        return out.isEmpty ? nil : out
    }

    /// Sets the saved options on `fd`; one that the kernel refuses now is said on stderr.
    /// `only`: just these (beforeBindSocketOptions).
    static func restore(_ fd: Int32, _ saved: [String: Data]?, who: String, only: Set<String>? = nil) {
        guard let saved else { return }
        var sizesSet = false
        for o in rawSocketOptions where only?.contains(o.name) ?? true {
            guard var v = saved[o.name] else { continue }
            var option = o.option
            if o.level == SOL_SOCKET && (o.option == 7 || o.option == 8) && v.count == 4 {
                // getsockopt gives twice what was asked (socket(7), SO_RCVBUF); the FORCE forms
                // (SO_SNDBUFFORCE 32, SO_RCVBUFFORCE 33) double it again.
                option = o.option == 7 ? 32 : 33
                let n = v.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) } / 2
                v = withUnsafeBytes(of: n) { Data($0) }
                sizesSet = true
            }
            let r = v.withUnsafeBytes { setsockopt(fd, o.level, option, $0.baseAddress, socklen_t($0.count)) }
            if r != 0 { warn("\(who): \(o.name) could not be set again: \(String(cString: strerror(errno)))") }
        }
        if sizesSet && saved["SO_BUF_LOCK"] == nil {
            // Sizes the kernel had grown (TCP's buffer autotuning, tcp(7) tcp_rmem/tcp_wmem)
            // differ from a fresh socket's and come back too, but setting a size locks it
            // (sk_userlocks), which would end autotuning on the restored connection: a bulk
            // stream moved by a migration ran at 0.8 of its speed. Unlock them; a snapshot
            // from before SO_BUF_LOCK was saved counts as unlocked too.
            var zero: Int32 = 0
            if setsockopt(fd, SOL_SOCKET, 72, &zero, 4) != 0 { warn("\(who): SO_BUF_LOCK could not be cleared: \(String(cString: strerror(errno)))") }
        }
    }
}

/// A classic BPF socket filter (socket(7) SO_ATTACH_FILTER; DHCP clients, udev, systemd
/// and tcpdump-like programs attach one to take only the packets they want). The kernel
/// keeps the program as it was given, and SO_GET_FILTER (26, the same number as
/// SO_ATTACH_FILTER) gives it back: first its length in instructions (a zero-length call),
/// then the instructions. An eBPF program attached with SO_ATTACH_BPF has no such copy and
/// reads as no filter.
enum SocketFilter {
    static func dump(_ sock: Int32) -> (Data?, Bool?) {
        var len = socklen_t(0)
        guard getsockopt(sock, SOL_SOCKET, 26, nil, &len) == 0, len > 0 else { return (nil, nil) }
        var program = [UInt8](repeating: 0, count: Int(len) * 8)
        var count = len
        guard getsockopt(sock, SOL_SOCKET, 26, &program, &count) == 0, count == len else { return (nil, nil) }
        var locked: Int32 = 0
        var n = socklen_t(4)
        _ = getsockopt(sock, SOL_SOCKET, 44 /* SO_LOCK_FILTER */, &locked, &n)
        return (Data(program), locked != 0 ? true : nil)
    }

    /// Attaches the saved program again (struct sock_fprog { unsigned short len; struct
    /// sock_filter *filter; }), then locks it if it was.
    static func restore(_ fd: Int32, _ program: Data?, locked: Bool, who: String) throws {
        guard let program, !program.isEmpty else { return }
        guard program.count % 8 == 0, program.count / 8 <= 4096 else {
            throw SSIError(.corrupt, "\(who): its socket filter is \(program.count) bytes, not 1 to 4096 instructions")
        }
        var bytes = [UInt8](program)
        let r: Int32 = bytes.withUnsafeMutableBytes { p in
            // 16 bytes on a 64-bit ABI: the length, padding, then the pointer.
            var prog: [UInt64] = [UInt64(program.count / 8), UInt64(UInt(bitPattern: p.baseAddress!))]
            return setsockopt(fd, SOL_SOCKET, 26, &prog, 16)
        }
        if r != 0 { throw SSIError.sys("\(who): attach its socket filter again", errno: errno) }
        if locked {
            var one: Int32 = 1
            if setsockopt(fd, SOL_SOCKET, 44, &one, 4) != 0 { warn("\(who): SO_LOCK_FILTER not set again: \(String(cString: strerror(errno)))") }
        }
    }
}
