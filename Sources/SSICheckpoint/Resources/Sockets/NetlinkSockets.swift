import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Netlink sockets (netlink(7)): what programs that talk to the kernel keep open (iproute2's
// `ip monitor`, udev and systemd clients, DHCP clients, anything on libnl or libmnl). The
// socket is the pair (protocol, port id) plus its multicast memberships and options; the
// kernel keeps no other state for it between requests, so a socket made again with those
// answers the next request as the old one would have. What it cannot carry is a message the
// kernel had queued and the program not yet read (a dump's answer, an event): a netlink
// message claims to come from the kernel (port id 0), and no process can send as port 0,
// so such a socket is refused while the queue is not empty.

private let solNetlink: Int32 = 270                 // SOL_NETLINK
private let netlinkAddMembership: Int32 = 1         // NETLINK_ADD_MEMBERSHIP
private let netlinkListMemberships: Int32 = 9       // NETLINK_LIST_MEMBERSHIPS (4.2)

extension ProcessDumper {
    func dumpNetlink(_ sock: Int32, type: Int32, protocol proto: Int32) throws -> SocketImage {
        // FIONREAD is not a netlink ioctl: a peek without taking tells the size of the next
        // message (MSG_TRUNC gives its real length, recv(2)).
        var b: UInt8 = 0
        let queued = recv(sock, &b, 0, Int32(MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC))
        if queued >= 0 {
            throw UnsupportedSocket(kind: "netlink socket (protocol \(proto)) with kernel messages not yet read (\(queued) bytes next; they cannot be queued again: only the kernel sends as port 0); checkpoint again once the application has read them")
        }
        var s = SocketImage(family: AF_NETLINK, type: type, state: .unconnected)
        s.protocol = proto
        // An unbound socket reads as port 0 with no groups: nothing to bind at restart.
        if let name = SockAddr.name(sock, peer: false), name.count >= 12, name.dropFirst(4).contains(where: { $0 != 0 }) { s.address = name }
        if let peer = SockAddr.name(sock, peer: true), peer.count >= 12, peer.dropFirst(4).contains(where: { $0 != 0 }) {
            s.peerAddress = peer
            s.state = .connected
        }
        s.netlinkGroups = Self.netlinkMemberships(sock)
        return s
    }

    /// NETLINK_LIST_MEMBERSHIPS: the groups beyond the first 32 are not in the address.
    static func netlinkMemberships(_ sock: Int32) -> [UInt32]? {
        var words = [UInt32](repeating: 0, count: 64)
        var len = socklen_t(words.count * 4)
        guard getsockopt(sock, solNetlink, netlinkListMemberships, &words, &len) == 0 else { return nil }
        let used = Array(words.prefix(min(words.count, Int(len) / 4)))
        guard let last = used.lastIndex(where: { $0 != 0 }) else { return nil }
        return Array(used[...last])
    }
}

extension SocketRebuilder {
    func buildNetlink(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            guard let id = f.socketID, let s = f.socket else { continue }
            let proto = s.protocol ?? 0
            let fd = socket(AF_NETLINK, s.type | Int32(SOCK_CLOEXEC.rawValue), proto)
            if fd < 0 {
                throw SSIError.sys("socket(AF_NETLINK, protocol \(proto)) for fd \(f.fd)", errno: errno,
                                   hint: "the kernel of this node lacks that netlink family (a module not loaded?)")
            }
            made[id] = fd
            if let addr = s.address, SockAddr.bind(fd, addr) != 0 {
                let e = errno
                // The port id is taken on this node (another process, or a process whose
                // pid it was): the kernel chooses one, as when a program lets it (port id
                // 0). Programs give a port id of their own to tell their sockets apart, and
                // learn it back from getsockname(2); the requests' answers follow the socket.
                guard e == EADDRINUSE else { throw SSIError.sys("bind netlink socket fd \(f.fd) (protocol \(proto))", errno: e) }
                var any = addr
                for i in 4..<8 { any[any.startIndex + i] = 0 }
                if SockAddr.bind(fd, any) != 0 { throw SSIError.sys("bind netlink socket fd \(f.fd) (protocol \(proto)) to a port id of the kernel's choice", errno: errno) }
                warn("netlink socket fd \(f.fd): its port id \(Self.portID(addr)) is taken on this node; it has port id \(Self.portID(SockAddr.name(fd, peer: false) ?? Data())) now")
            }
            for (w, word) in (s.netlinkGroups ?? []).enumerated() {
                for bit in 0..<32 where word & (1 << bit) != 0 {
                    var group = UInt32(w * 32 + bit + 1)
                    if setsockopt(fd, solNetlink, netlinkAddMembership, &group, 4) != 0 {
                        throw SSIError.sys("netlink socket fd \(f.fd): join multicast group \(group)", errno: errno)
                    }
                }
            }
            if let peer = s.peerAddress, SockAddr.connect(fd, peer) != 0 {
                throw SSIError.sys("connect netlink socket fd \(f.fd) to port id \(Self.portID(peer))", errno: errno)
            }
        }
    }

    /// nl_pid of a struct sockaddr_nl (family u16, pad u16, pid u32, groups u32).
    static func portID(_ a: Data) -> UInt32 {
        a.count >= 8 ? a.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) } : 0
    }
}
