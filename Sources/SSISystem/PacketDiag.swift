import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// packet_diag (sock_diag(7) for AF_PACKET): the memberships of a packet socket, which no
/// getsockopt gives back. The dump lists the packet sockets of the diag socket's network
/// namespace.
public enum PacketDiag {
    public struct Membership: Sendable {
        public var index: Int32
        public var type: UInt16
        public var address: Data
    }

    /// The memberships of the packet socket `inode` of the calling thread's network
    /// namespace (PACKET_DIAG_MCLIST), one per PACKET_ADD_MEMBERSHIP; nil if the kernel
    /// would not answer.
    public static func memberships(inode: UInt32) -> [Membership]? {
        guard let messages = try? ask().get() else { return nil }
        var out = [Membership]()
        for m in messages where m.count >= 16 {
            // struct packet_diag_msg { u8 family, type; u16 num; u32 ino; u32 cookie[2]; }
            let ino = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
            guard ino == inode else { continue }
            var off = 16
            while off + 4 <= m.count {
                let len = Int(m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off, as: UInt16.self) })
                let type = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off + 2, as: UInt16.self) }
                guard len >= 4, off + len <= m.count else { break }
                if type == 1 {   // PACKET_DIAG_MCLIST: struct packet_diag_mclist, 44 bytes each
                    var p = off + 4
                    while p + 44 <= off + len {
                        let index = m.withUnsafeBytes { Int32(bitPattern: $0.loadUnaligned(fromByteOffset: p, as: UInt32.self)) }
                        let count = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p + 4, as: UInt32.self) }
                        let mtype = m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p + 8, as: UInt16.self) }
                        let alen = Int(m.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p + 10, as: UInt16.self) })
                        let addr = Data(m[(p + 12)..<(p + 12 + min(alen, 32))])
                        // A membership added n times is listed once with its count.
                        for _ in 0..<max(count, 1) { out.append(Membership(index: index, type: mtype, address: addr)) }
                        p += 44
                    }
                }
                off += (len + 3) & ~3
            }
        }
        return out
    }

    private static func ask() -> Result<[[UInt8]], SockDiag.Failure> {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { return .failure(.send(errno)) }
        defer { close(fd) }
        // nlmsghdr (SOCK_DIAG_BY_FAMILY 20, NLM_F_REQUEST|NLM_F_DUMP) and struct
        // packet_diag_req { u8 family, protocol; u16 pad; u32 ino; u32 show; u32 cookie[2]; }
        // with PACKET_SHOW_MCLIST (2).
        var req = [UInt8](repeating: 0, count: 36)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v) { b in for k in 0..<4 { req[at + k] = b[k] } } }
        put32(36, 0)
        req[4] = 20; req[6] = 0x01; req[7] = 0x03
        req[16] = UInt8(AF_PACKET)
        put32(2, 24)
        return SockDiag.exchange(fd, req)
    }
}
