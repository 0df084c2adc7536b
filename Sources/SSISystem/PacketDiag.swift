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
            // PACKET_DIAG_MCLIST (1): struct packet_diag_mclist { u32 index, count; u16 type,
            // alen; u8 addr[32]; }, 44 bytes each.
            for attr in SockDiag.attributes(m, from: 16) where attr.type == 1 {
                let v = Array(attr.value)
                var p = 0
                while p + 44 <= v.count {
                    let index = v.withUnsafeBytes { Int32(bitPattern: $0.loadUnaligned(fromByteOffset: p, as: UInt32.self)) }
                    let count = v.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p + 4, as: UInt32.self) }
                    let mtype = v.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p + 8, as: UInt16.self) }
                    let alen = Int(v.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p + 10, as: UInt16.self) })
                    let addr = Data(v[(p + 12)..<(p + 12 + min(alen, 32))])
                    // A membership added n times is listed once with its count.
                    for _ in 0..<max(count, 1) { out.append(Membership(index: index, type: mtype, address: addr)) }
                    p += 44
                }
            }
        }
        return out
    }

    private static func ask() -> Result<[[UInt8]], SockDiag.Failure> {
        // nlmsghdr (SOCK_DIAG_BY_FAMILY 20, NLM_F_REQUEST|NLM_F_DUMP) and struct
        // packet_diag_req { u8 family, protocol; u16 pad; u32 ino; u32 show; u32 cookie[2]; }
        // with PACKET_SHOW_MCLIST (2).
        var req = [UInt8](repeating: 0, count: 36)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v) { b in for k in 0..<4 { req[at + k] = b[k] } } }
        put32(36, 0)
        req[4] = 20; req[6] = 0x01; req[7] = 0x03
        req[16] = 17   // AF_PACKET
        put32(2, 24)
        return SockDiag.query(req)
    }
}
