#if canImport(Glibc)
import Glibc
#endif

/// Unix domain sockets as the kernel lists them through sock_diag (sock_diag(7),
/// NETLINK_SOCK_DIAG with AF_UNIX): each socket's inode, type, state, peer inode and queue.
/// /proc/net/unix does not show peers; this is how a socketpair's two ends are matched.
public struct UnixSocketInfo: Sendable, Equatable {
    public var inode: UInt32
    public var type: UInt8
    public var state: UInt8
    public var peer: UInt32
    /// Connected sockets: bytes (stream) or queued datagrams' size waiting to be read;
    /// listening sockets: connections waiting in the accept queue.
    public var receiveQueue: UInt32
    /// Connected sockets: memory of what this socket sent that its peer has not read yet
    /// (skb truesize, not bytes); listening sockets: the backlog.
    public var sendQueue: UInt32 = 0
    /// The bound name, sun_path bytes (an abstract name starts with a 0 byte).
    public var name: [UInt8]? = nil
    public var hasName: Bool { name != nil }
    /// Listening sockets: the client sockets whose connections wait to be accepted, oldest
    /// first (UNIX_DIAG_ICONS lists each embryo's peer).
    public var pendingClients: [UInt32] = []
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2) as shutdown(2) left them.
    public var shutdown: UInt8 = 0
}

public enum UnixDiag {
    public static func sockets() throws -> [UInt32: UnixSocketInfo] {
        let fd = socket(16 /* AF_NETLINK */, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        if fd < 0 { throw SSIError.sys("socket(NETLINK_SOCK_DIAG)", errno: errno) }
        defer { close(fd) }
        // struct nlmsghdr (16 bytes) + struct unix_diag_req (24 bytes).
        var req = [UInt8](repeating: 0, count: 40)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { req.replaceSubrange(at..<(at + 4), with: $0) } }
        func put16(_ v: UInt16, _ at: Int) { withUnsafeBytes(of: v.littleEndian) { req.replaceSubrange(at..<(at + 2), with: $0) } }
        put32(40, 0)
        put16(20, 4)                         // SOCK_DIAG_BY_FAMILY
        put16(0x1 | 0x300, 6)                // NLM_F_REQUEST | NLM_F_DUMP
        put32(1, 8)
        req[16] = 1                          // AF_UNIX
        put32(0xffff_ffff, 20)               // all states
        put32(0x1 | 0x4 | 0x8 | 0x10, 28)    // UDIAG_SHOW_NAME | PEER | ICONS | RQLEN
        put32(0, 32); put32(0, 36)           // cookie: any
        let messages: [[UInt8]]
        switch SockDiag.exchange(fd, req) {
        case .success(let m): messages = m
        case .failure(.send(let e)): throw SSIError.sys("send sock_diag request", errno: e)
        case .failure(.recv(let e)): throw SSIError.sys("recv sock_diag", errno: e)
        case .failure(.refused(let e)): throw SSIError.sys("sock_diag refused the request", errno: e)
        }
        var out = [UInt32: UnixSocketInfo]()
        for msg in messages where msg.count >= 16 {
            func u32(_ at: Int) -> UInt32 { msg.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
            func u16(_ at: Int) -> UInt16 { msg.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt16.self) } }
            // struct unix_diag_msg: family, type, state, pad, ino, cookie[2]; then attributes.
            var info = UnixSocketInfo(inode: u32(4), type: msg[1], state: msg[2], peer: 0, receiveQueue: 0)
            var a = 16
            while a + 4 <= msg.count {
                let alen = Int(u16(a)), atype = u16(a + 2)
                if alen < 4 || a + alen > msg.count { break }
                switch atype {
                case 0: info.name = Array(msg[(a + 4)..<(a + alen)])  // UNIX_DIAG_NAME
                case 2: info.peer = u32(a + 4)               // UNIX_DIAG_PEER
                case 3:                                      // UNIX_DIAG_ICONS: u32 inodes
                    info.pendingClients = stride(from: a + 4, to: a + alen, by: 4).map { u32($0) }
                case 4: info.receiveQueue = u32(a + 4); info.sendQueue = u32(a + 8)  // UNIX_DIAG_RQLEN
                case 6: info.shutdown = msg[a + 4]           // UNIX_DIAG_SHUTDOWN
                default: break
                }
                a += (alen + 3) & ~3
            }
            out[info.inode] = info
        }
        return out
    }
}
