import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The CLI's end of the control protocol (ControlProtocol.swift). The daemon checks the
/// caller's credentials (SO_PEERCRED): root or its own user. Blocking: the CLI is synchronous.
public struct ControlConnection: ~Copyable {
    let fd: Int32
    public let path: String

    /// Connects to the daemon's socket. Throws `unreachable` when no daemon answers there:
    /// nothing was asked, so another daemon may be tried.
    public init(socket path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SSIError.sys("socket(AF_UNIX) for \(path)", errno: errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw SSIError(.invalidArgument, "control socket path too long: \(path)", hint: "use a path under 108 bytes")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else {
            let e = errno
            close(fd)
            throw SSIError(.unreachable, "no daemon answers on \(path): \(String(cString: strerror(e)))",
                           hint: "is ssid running? ssi cluster up starts a local cluster")
        }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Sends the request and waits up to `timeout` seconds for the answer. The daemon's
    /// error comes back typed, as it threw it.
    public consuming func send(_ request: ControlRequest, timeout: Int = 30, passing fds: [Int32] = []) throws -> ControlReply {
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var out = try JSONEncoder().encode(request)
        out.append(UInt8(ascii: "\n"))
        // unix(7): SCM_RIGHTS ride on the first byte sent with them; the daemon collects them
        // with the line.
        var first = 0
        if !fds.isEmpty {
            first = Socket.send(fd, out.prefix(1), to: nil, fds: fds)
            if first < 0 { throw SSIError.sys("passing fds \(fds) to the daemon on \(path)", errno: Int32(-first)) }
        }
        try out.withUnsafeBytes { p in
            var off = first
            while off < p.count {
                // MSG_NOSIGNAL (send(2)): a daemon that died is an error to report, not a
                // SIGPIPE that kills ssi without a word.
                let n = Glibc.send(fd, p.baseAddress! + off, p.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EPIPE || errno == ECONNRESET {
                        throw SSIError(.disconnected, "the daemon on \(path) closed the connection before it took the request",
                                       hint: "it may have stopped; nothing was done; see its log")
                    }
                    throw SSIError.sys("write to the daemon on \(path)", errno: errno)
                }
                off += n
            }
        }
        let line = try readLine(timeout: timeout)
        let answer: ControlAnswer
        do { answer = try JSONDecoder().decode(ControlAnswer.self, from: Data(line)) } catch {
            throw SSIError(.corrupt, "the daemon on \(path) sent an answer that does not parse: \(error)",
                           hint: "are ssi and ssid from the same build?")
        }
        switch answer {
        case .ok(let reply): return reply
        case .failed(let e): throw e
        }
    }

    private func readLine(timeout: Int) throws -> [UInt8] {
        var reply: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw SSIError(.timeout, "no answer from the daemon on \(path) within \(timeout) s",
                               hint: "the operation may still be done; see its log")
            }
            if n < 0 { throw SSIError.sys("read from the daemon on \(path)", errno: errno) }
            if n == 0 {
                if reply.isEmpty {
                    throw SSIError(.disconnected, "the daemon on \(path) closed the connection without answering",
                                   hint: "it may have stopped; the operation may or may not have been done")
                }
                break
            }
            reply += buf[0..<n]
        }
        return reply
    }
}

public enum ControlClient {
    /// One request to the daemon on `socket`.
    public static func request(socket path: String, _ request: ControlRequest, timeout: Int = 30) throws -> ControlReply {
        try ControlConnection(socket: path).send(request, timeout: timeout)
    }
}
