import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The local control protocol between `ssi` and `ssid`: one JSON object per line on a unix
/// stream socket; the daemon answers `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
/// The daemon checks the caller's credentials (SO_PEERCRED): root or its own user.
public enum ControlClient {
    /// Sends one request and returns its result (blocking: the CLI is synchronous).
    public static func request(socket path: String, _ req: [String: Any], timeout: Int = 30) throws -> Any? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClusterError.config("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw ClusterError.config("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else {
            throw ClusterError.config("no daemon answers on \(path): \(String(cString: strerror(errno))) (is ssid running? ssi cluster up starts a local cluster)")
        }
        var out = try JSONSerialization.data(withJSONObject: req)
        out.append(UInt8(ascii: "\n"))
        try out.withUnsafeBytes { p in
            var off = 0
            while off < p.count {
                let n = write(fd, p.baseAddress! + off, p.count - off)
                if n < 0 { if errno == EINTR { continue }; throw ClusterError.config("write to \(path): \(String(cString: strerror(errno)))") }
                off += n
            }
        }
        var reply: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw ClusterError.config("no answer from \(path) within \(timeout) s: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            reply += buf[0..<n]
        }
        guard let obj = try JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
            throw ClusterError.config("bad answer from \(path)")
        }
        if (obj["ok"] as? Bool) != true { throw ClusterError.remote(obj["error"] as? String ?? "unknown error") }
        return obj["result"]
    }
}

