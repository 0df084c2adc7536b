import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What every sock_diag(7) query shares (NETLINK_SOCK_DIAG): sending one request and
/// gathering the messages of the answer. UnixDiag and InetDiag build the requests and read
/// the messages.
enum SockDiag {
    enum Failure: Error { case send(Int32), recv(Int32), refused(Int32) }

    /// Sends `request` (a struct nlmsghdr first) on `fd` and returns the payload (what
    /// follows the 16-byte nlmsghdr) of every message of the answer, until NLMSG_DONE or an
    /// NLMSG_ERROR whose error is 0 (the ack a request without NLM_F_DUMP gets, netlink(7));
    /// another NLMSG_ERROR is `.refused` with its errno.
    /// `exchange` on a NETLINK_SOCK_DIAG socket of its own, in the calling thread's network
    /// namespace (the one whose sockets the answer lists).
    static func query(_ request: [UInt8]) -> Result<[[UInt8]], Failure> {
        let fd = socket(16 /* AF_NETLINK */, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { return .failure(.send(errno)) }
        defer { close(fd) }
        return exchange(fd, request)
    }

    /// The netlink attributes (struct nlattr: u16 length, u16 type, then the value, padded to
    /// 4 bytes) of `message` from byte `offset` on, in order.
    static func attributes(_ message: [UInt8], from offset: Int) -> [(type: UInt16, value: ArraySlice<UInt8>)] {
        var out = [(type: UInt16, value: ArraySlice<UInt8>)]()
        var a = offset
        while a + 4 <= message.count {
            let len = Int(message.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: a, as: UInt16.self) })
            let type = message.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: a + 2, as: UInt16.self) }
            guard len >= 4, a + len <= message.count else { break }
            out.append((type, message[(a + 4)..<(a + len)]))
            a += (len + 3) & ~3
        }
        return out
    }

    static func exchange(_ fd: Int32, _ request: [UInt8]) -> Result<[[UInt8]], Failure> {
        guard (request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return .failure(.send(errno)) }
        var out = [[UInt8]]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { if errno == EINTR { continue }; return .failure(.recv(errno)) }
            var off = 0
            func u32(_ at: Int) -> UInt32 { buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
            while off + 16 <= n {
                let len = Int(u32(off)), type = buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off + 4, as: UInt16.self) }
                if type == 3 { return .success(out) }                                   // NLMSG_DONE
                if type == 2 {                                                          // NLMSG_ERROR
                    let e = Int32(bitPattern: u32(off + 16))
                    return e == 0 ? .success(out) : .failure(.refused(-e))
                }
                if len < 16 || off + len > n { return .success(out) }
                out.append(Array(buf[(off + 16)..<(off + len)]))
                off += (len + 3) & ~3
            }
        }
    }
}
