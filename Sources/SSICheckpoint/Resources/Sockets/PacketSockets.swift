import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Packet sockets (packet(7), AF_PACKET): what DHCP clients, arping, LLDP and other link-layer
// programs keep open. Such a socket is its type (SOCK_RAW or SOCK_DGRAM), its protocol, the
// interface it is bound to, its options (PACKET_* and its BPF filter, kept with the other
// options) and its memberships (PACKET_ADD_MEMBERSHIP: promiscuous, all-multicast, a
// multicast address). The interface is kept by name: its index differs on another node.
// Frames queued and not yet read are link-layer traffic, which the network repeats anyway
// (ARP, DHCP retransmit): they are not kept. A socket with a ring mapped into the process
// (PACKET_RX_RING/TX_RING, tcpdump's TPACKET_V3) is refused: the ring's frames and its
// position cannot be rebuilt.

private let solPacket: Int32 = 263            // SOL_PACKET
private let packetAddMembership: Int32 = 1    // PACKET_ADD_MEMBERSHIP

extension ProcessDumper {
    func dumpPacket(_ sock: Int32, type: Int32, protocol proto: Int32, inode: UInt32) throws -> SocketImage {
        guard type == 3 || type == 2 else {   // SOCK_RAW, SOCK_DGRAM
            throw UnsupportedSocket(kind: "packet socket of type \(type) (SOCK_PACKET is obsolete)")
        }
        var fanout: UInt32 = 0
        var flen = socklen_t(4)
        if getsockopt(sock, solPacket, 18 /* PACKET_FANOUT */, &fanout, &flen) == 0, fanout != 0 {
            throw UnsupportedSocket(kind: "packet socket in a fanout group (PACKET_FANOUT \(fanout & 0xffff)), which is not saved yet")
        }
        if let maps = try? ProcFS.read("/proc/\(pid)/maps"), maps.contains("socket:[\(inode)]") {
            throw UnsupportedSocket(kind: "packet socket with a ring mapped in memory (PACKET_RX_RING/PACKET_TX_RING, as tcpdump uses), whose frames cannot be rebuilt")
        }
        var s = SocketImage(family: AF_PACKET, type: type, state: .unconnected)
        s.protocol = proto
        // struct sockaddr_ll: family u16, protocol be16, ifindex i32, hatype u16, pkttype u8,
        // halen u8, addr[8]. getsockname gives it cut after the address's length, while bind
        // wants all 20 bytes; its protocol is the socket's (SO_PROTOCOL reads 0 on packet
        // sockets), given to socket(2) again.
        if var name = SockAddr.name(sock, peer: false), name.count >= 8 {
            if name.count < 20 { name.append(Data(count: 20 - name.count)) }
            s.address = name
            s.protocol = Int32(name.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) })
            let index = name.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }
            if index != 0 {
                guard let ifname = PacketInterface.name(of: index, via: sock) else {
                    throw UnsupportedSocket(kind: "packet socket bound to interface \(index), which has no name now")
                }
                s.interfaceName = ifname
            }
        }
        let memberships = try PacketMemberships.of(sock, inode: inode)
        if !memberships.isEmpty {
            s.packetMemberships = try memberships.map { m in
                guard let name = PacketInterface.name(of: m.index, via: sock) else {
                    throw UnsupportedSocket(kind: "packet socket with a membership on interface \(m.index), which has no name now")
                }
                return PacketMembership(interfaceName: name, type: m.type, address: m.address)
            }
        }
        return s
    }
}

extension SocketRebuilder {
    func buildPacket(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            guard let id = f.socketID, let s = f.socket else { continue }
            let proto = s.protocol ?? 0
            // Made with protocol 0, which receives nothing (packet(7)), and given its options
            // and filter before bind(2) sets the protocol and interface: no frame the filter or
            // the interface would have kept out is queued in between.
            let fd = socket(AF_PACKET, s.type | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { throw SSIError.sys("socket(AF_PACKET) for fd \(f.fd)", errno: errno, hint: "needs CAP_NET_RAW") }
            made[id] = fd
            RawSocketOptions.restore(fd, s.rawOptions, who: "packet socket of fd \(f.fd)")
            try SocketFilter.restore(fd, s.filter, locked: s.filterLocked == true, who: "packet socket of fd \(f.fd)")
            var addr = s.address ?? Data()
            if addr.count < 20 {
                // Never bound: bound now to every interface with its protocol.
                addr = Data(count: 20)
                addr.withUnsafeMutableBytes { b in
                    b.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
                    b.storeBytes(of: UInt16(truncatingIfNeeded: proto), toByteOffset: 2, as: UInt16.self)
                }
            }
            var index: Int32 = 0
            if let name = s.interfaceName {
                guard let i = PacketInterface.index(of: name, via: fd) else {
                    throw SSIError(.notFound, "packet socket fd \(f.fd) was bound to interface \(name), which this node does not have (in the application's network namespace)",
                                   hint: "restart or migrate it where that interface exists")
                }
                index = i
            }
            withUnsafeBytes(of: index) { b in for k in 0..<4 { addr[addr.startIndex + 4 + k] = b[k] } }
            if SockAddr.bind(fd, addr) != 0 {
                throw SSIError.sys("bind packet socket fd \(f.fd) to interface \(s.interfaceName ?? "(any)")", errno: errno)
            }
            for m in s.packetMemberships ?? [] {
                guard let index = PacketInterface.index(of: m.interfaceName, via: fd) else {
                    throw SSIError(.notFound, "packet socket fd \(f.fd) had a membership on interface \(m.interfaceName), which this node does not have")
                }
                // struct packet_mreq { int mr_ifindex; unsigned short mr_type, mr_alen;
                // unsigned char mr_address[8]; }
                var req = [UInt8](repeating: 0, count: 16)
                withUnsafeBytes(of: index) { b in for k in 0..<4 { req[k] = b[k] } }
                withUnsafeBytes(of: m.type) { b in req[4] = b[0]; req[5] = b[1] }
                let alen = UInt16(min(m.address.count, 8))
                withUnsafeBytes(of: alen) { b in req[6] = b[0]; req[7] = b[1] }
                for (k, byte) in m.address.prefix(8).enumerated() { req[8 + k] = byte }
                if setsockopt(fd, solPacket, packetAddMembership, &req, 16) != 0 {
                    throw SSIError.sys("packet socket fd \(f.fd): membership (type \(m.type)) on \(m.interfaceName)", errno: errno)
                }
            }
        }
    }
}

/// Interface names and indexes through a socket's own network namespace (netdevice(7):
/// SIOCGIFNAME, SIOCGIFINDEX act in the namespace of the socket they are made on).
enum PacketInterface {
    static func name(of index: Int32, via sock: Int32) -> String? {
        // struct ifreq: the name (16 bytes), then a union whose ifr_ifindex is an int.
        var req = [UInt8](repeating: 0, count: 40)
        withUnsafeBytes(of: index) { b in for k in 0..<4 { req[16 + k] = b[k] } }
        guard ioctl(sock, 0x8910 /* SIOCGIFNAME */, &req) == 0 else { return nil }
        return String(decoding: req.prefix(16).prefix { $0 != 0 }, as: UTF8.self)
    }

    static func index(of name: String, via sock: Int32) -> Int32? {
        var req = [UInt8](repeating: 0, count: 40)
        for (k, b) in name.utf8.prefix(15).enumerated() { req[k] = b }
        guard ioctl(sock, 0x8933 /* SIOCGIFINDEX */, &req) == 0 else { return nil }
        return req.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: Int32.self) }
    }
}

/// The memberships of a packet socket, asked from inside the socket's network namespace
/// (SIOCGSKNS gives it): packet_diag lists the packet sockets of the namespace it is asked in.
enum PacketMemberships {
    static func of(_ sock: Int32, inode: UInt32) throws -> [PacketDiag.Membership] {
        let ns = ioctl(sock, 0x894C /* SIOCGSKNS */)
        let answer: [PacketDiag.Membership]??
        if ns >= 0 {
            defer { close(ns) }
            answer = AppNamespaces.inside(ns, type: AppNamespaces.newNet) { PacketDiag.memberships(inode: inode) }
        } else {
            answer = PacketDiag.memberships(inode: inode)
        }
        guard let found = answer ?? nil else {
            throw UnsupportedSocket(kind: "packet socket whose memberships could not be read (packet_diag: is the af_packet_diag module there?)")
        }
        return found
    }
}
