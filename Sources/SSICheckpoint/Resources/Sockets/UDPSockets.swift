import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// UDP sockets (udp(7)): their name, their peer if connected, shutdown(2) state, options and
// the datagrams waiting to be read, with each one's source. Restart binds and connects them
// again in ssi, and sends each queued datagram again from its source: the application's own
// socket of that address when there is one (it has been bound again), else a stand-in bound
// to that address if it is free, else an unbound socket (the source then differs; said).

extension ProcessDumper {
    func dumpUDP(_ sock: Int32, family: Int32, inode: UInt32) throws -> SocketImage {
        var s = SocketImage(family: family, type: 2, state: .unconnected)
        // UDP_CORK, and a send with MSG_MORE without the cork, hold what was written until
        // the datagram is complete (udp(7)): nothing reads such a pending datagram back, and
        // SIOCOUTQ counts it. A datagram just sent counts too until loopback has delivered
        // it: asked again for a few ms before refusing.
        var corked: Int32 = 0, len = socklen_t(4), outq: Int32 = 0
        for attempt in 0..<10 {
            guard ioctl(sock, SocketIoctl.outputQueue, &outq) == 0, outq > 0 else { break }
            if attempt == 9 {
                let how = getsockopt(sock, 17, 1 /* UDP_CORK */, &corked, &len) == 0 && corked != 0 ? "corked (UDP_CORK)" : "held by a send with MSG_MORE"
                throw UnsupportedSocket(kind: "UDP socket with a datagram written and \(how), not sent yet (a pending datagram cannot be read back; once the program completes it, a checkpoint succeeds)")
            }
            usleep(1_000)
        }
        if let name = SockAddr.name(sock, peer: false), SockAddr.port(name) != 0 { s.address = name }
        if let peer = SockAddr.name(sock, peer: true) { s.peerAddress = peer; s.state = .connected }
        if let sh = InetDiag.shutdown(family: family, protocol: Int32(IPPROTO_UDP), inode: inode), sh != 0 { s.shutdown = Int32(sh) }
        s.datagrams = try peekUDP(sock)
        s.multicast = Multicast.dump(sock, family: family, pid: pid)
        return s
    }

    /// Every queued datagram with its source, read with MSG_PEEK from SO_PEEK_OFF 0 (UDP has
    /// it since Linux 6.9): each peek moves the offset past one datagram; an empty datagram
    /// is passed over by the next peek once it has been peeked (its skb is marked peeked).
    private func peekUDP(_ sock: Int32) throws -> [QueuedDatagram]? {
        guard (SocketIoctl.queuedBytes(sock) ?? 0) > 0 || hasEmptyDatagram(sock) else { return nil }
        let appPeekOffset = SocketOption.peekOffset.get(sock) ?? -1
        guard SocketOption.peekOffset.set(sock, 0) else {
            throw UnsupportedSocket(kind: "UDP socket with queued datagrams (reading them without taking them needs SO_PEEK_OFF, Linux 6.9)")
        }
        defer { SocketOption.peekOffset.set(sock, appPeekOffset) }
        // Each datagram's destination, TTL and TOS come with it as ancillary data when the
        // socket asks for them: asked for while the queue is read (ip(7): a datagram's are
        // taken from its packet when it is read, not when it arrived), the program's own
        // settings put back after. An IPv6 socket's IPv4 datagrams are told in the IPv6 forms.
        let v6 = (SocketOption.domain.get(sock) ?? AF_INET) == AF_INET6
        // IPV6_RECVPKTINFO 49, IPV6_RECVHOPLIMIT 51, IPV6_RECVTCLASS 66; IP_PKTINFO 8,
        // IP_RECVTTL 12, IP_RECVTOS 13.
        let level: Int32 = v6 ? Int32(IPPROTO_IPV6) : Int32(IPPROTO_IP)
        let options: [Int32] = v6 ? [49, 51, 66] : [8, 12, 13]
        let asks: [(Int32, Int32)] = options.map { (level, $0) }
        var before: [Int32] = []
        for (level, option) in asks {
            var v: Int32 = 0, l = socklen_t(4), one: Int32 = 1
            _ = getsockopt(sock, level, option, &v, &l)
            before.append(v)
            if v == 0 { _ = setsockopt(sock, level, option, &one, 4) }
        }
        defer {
            for ((level, option), v) in zip(asks, before) where v == 0 { var zero: Int32 = 0; _ = setsockopt(sock, level, option, &zero, 4) }
        }
        var out = [QueuedDatagram]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < 1 << 20, let m = try Socket.peekDatagram(sock, buffer: &buf, what: "peek a UDP socket of PID \(pid)") {
            var d = QueuedDatagram(data: Data(m.bytes), sender: Data(m.name))
            (d.destination, d.ttl, d.tos) = (m.destination.map { Data($0) }, m.ttl, m.tos)
            out.append(d)
        }
        return out.isEmpty ? nil : out
    }

    /// FIONREAD gives the size of the first datagram only, 0 for an empty one: a
    /// non-blocking peek tells whether one is there.
    private func hasEmptyDatagram(_ sock: Int32) -> Bool {
        // poll(2) first: a recv on a socket with nothing queued returns its pending error
        // (a connected socket's ECONNREFUSED after an ICMP port unreachable) and clears it,
        // which the application would then never see.
        var p = pollfd(fd: sock, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 0) == 1, p.revents & Int16(POLLIN) != 0 else { return false }
        var b: UInt8 = 0
        return recv(sock, &b, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) >= 0
    }
}

extension SockAddr {
    static func port(_ a: Data) -> UInt16 {
        a.count >= 4 ? UInt16(bigEndian: a.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) }) : 0
    }

    /// A v4-mapped IPv6 address (::ffff:a.b.c.d, as an IPv6 socket sees an IPv4 source) as
    /// the IPv4 one; others as they are.
    static func unmapped(_ a: Data) -> Data {
        guard a.count >= 24, a.withUnsafeBytes({ $0.loadUnaligned(as: UInt16.self) }) == UInt16(AF_INET6),
              a[a.startIndex + 8..<a.startIndex + 18].allSatisfy({ $0 == 0 }), a[a.startIndex + 18] == 0xff, a[a.startIndex + 19] == 0xff else { return a }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        a.withUnsafeBytes { raw in
            sin.sin_port = raw.loadUnaligned(fromByteOffset: 2, as: in_port_t.self)
            sin.sin_addr.s_addr = raw.loadUnaligned(fromByteOffset: 20, as: UInt32.self)
        }
        return withUnsafeBytes(of: sin) { Data($0) }
    }

    /// Where to send to reach a socket bound to `a` from a socket of `family`: a wildcard
    /// address becomes the loopback one; an IPv6 socket open to IPv4 is reached by IPv4.
    static func reach(_ a: Data, from family: Int32) -> Data {
        let port = in_port_t(bigEndian: SockAddr.port(a))
        let isV6 = a.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } == UInt16(AF_INET6)
        if family == AF_INET {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port
            if !isV6, a.count >= 8 { sin.sin_addr.s_addr = a.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) } }
            if sin.sin_addr.s_addr == 0 { sin.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian }
            return withUnsafeBytes(of: sin) { Data($0) }
        }
        guard isV6, a.count >= 24 else { return a }
        var out = a
        if a[a.startIndex + 8..<a.startIndex + 24].allSatisfy({ $0 == 0 }) { out[out.startIndex + 23] = 1 }   // :: -> ::1
        return out
    }
}

extension SocketRebuilder {
    func buildUDP(_ socks: [FileDescriptorImage]) throws {
        for (f, s, fd) in try newInetSockets(socks, type: 2, "UDP") {
            guard let addr = s.address else { continue }
            // SO_REUSEADDR for the bind only (the kill may leave nothing, but another
            // socket of the application may share the port with it set).
            SocketOption.reuseAddress.set(fd, 1)
            if SockAddr.bind(fd, addr) != 0 {
                throw SSIError.sys("bind UDP socket fd \(f.fd) to \(SockAddr.describe(addr, family: s.family))", errno: errno,
                                   hint: "another program uses that port now: stop it, then restart again")
            }
            SocketOption.reuseAddress.set(fd, s.options?["SO_REUSEADDR"] ?? 0)
        }
        for f in socks {
            guard let id = f.socketID, let fd = made[id], let s = f.socket, s.multicast != nil else { continue }
            Multicast.restore(fd, family: s.family, s.multicast, who: "UDP socket of fd \(f.fd)")
        }
        for f in socks { try requeueUDP(f, socks) }
        for f in socks {
            guard let id = f.socketID, let fd = made[id], let s = f.socket else { continue }
            if let peer = s.peerAddress, SockAddr.connect(fd, peer) != 0 {
                throw SSIError.sys("connect UDP socket fd \(f.fd) to \(SockAddr.describe(peer, family: s.family))", errno: errno)
            }
            if let sh = s.shutdown { _ = Glibc.shutdown(fd, sh == 3 ? Int32(SHUT_RDWR) : (sh == 1 ? Int32(SHUT_RD) : Int32(SHUT_WR))) }
        }
    }

    /// The datagrams queued on `f`, sent again before any socket connects (a connected
    /// socket takes datagrams from its peer only).
    private func requeueUDP(_ f: FileDescriptorImage, _ socks: [FileDescriptorImage]) throws {
        guard let id = f.socketID, made[id] != nil, let s = f.socket, let to = s.address else { return }
        for d in s.datagrams ?? [] {
            let source = d.sender.map(SockAddr.unmapped)
            let family = source.map { $0.withUnsafeBytes { Int32($0.loadUnaligned(as: UInt16.self)) } } ?? s.family
            var from = -1 as Int32, temporary = false
            if let source, let mine = socks.first(where: { g in
                guard let a = g.socket?.address, g.socket?.family == family else { return false }
                return SockAddr.port(a) == SockAddr.port(source) && (SockAddr.reach(a, from: family) == SockAddr.reach(source, from: family) || SockAddr.isWildcard(a))
            }), let sid = mine.socketID, let fd = made[sid] {
                from = fd
            } else {
                from = try newSocket(family, 2, "requeue a UDP datagram")
                temporary = true
                if let source { SocketOption.reuseAddress.set(from, 1); _ = SockAddr.bind(from, source) }
            }
            defer { if temporary { close(from) } }
            // To the address its packet was sent to (a wildcard socket receives for every
            // local address), with its TTL and TOS, so that IP_PKTINFO, IP_RECVTTL and
            // IP_RECVTOS say the same again.
            let dest = d.destination.flatMap { SockAddr.with(address: $0, port: SockAddr.port(to), family: family) } ?? SockAddr.reach(to, from: family)
            let n = Socket.sendDatagram(from, d.data, to: dest, ipv6: family == AF_INET6, ttl: d.ttl, tos: d.tos)
            if n != d.data.count { throw SSIError.sys("requeue a \(d.data.count)-byte datagram on UDP socket fd \(f.fd)", errno: n < 0 ? Int32(-n) : EMSGSIZE) }
        }
    }
}

extension SockAddr {
    /// A sockaddr of `family` for `address` (4 bytes, or 16; a v4-mapped one for an IPv6
    /// socket) and `port`; nil when they do not fit together.
    static func with(address given: Data, port: UInt16, family: Int32) -> Data? {
        var a = given
        // An IPv4 packet to an IPv6 socket is told with a v4-mapped address (::ffff:a.b.c.d).
        if family == AF_INET, a.count == 16, a.prefix(10).allSatisfy({ $0 == 0 }), a[a.startIndex + 10] == 0xff, a[a.startIndex + 11] == 0xff { a = a.suffix(4) }
        if family == AF_INET, a.count == 4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = in_port_t(port).bigEndian
            sin.sin_addr.s_addr = a.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            return withUnsafeBytes(of: sin) { Data($0) }
        }
        guard family == AF_INET6, a.count == 4 || a.count == 16 else { return nil }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = in_port_t(port).bigEndian
        let bytes = a.count == 16 ? [UInt8](a) : [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + [UInt8](a)
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
        return withUnsafeBytes(of: sin6) { Data($0) }
    }

    static func isWildcard(_ a: Data) -> Bool {
        let isV6 = a.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } == UInt16(AF_INET6)
        return isV6 ? (a.count >= 24 && a[a.startIndex + 8..<a.startIndex + 24].allSatisfy { $0 == 0 })
                    : (a.count >= 8 && a[a.startIndex + 4..<a.startIndex + 8].allSatisfy { $0 == 0 })
    }
}
