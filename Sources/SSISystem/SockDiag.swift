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
