import Foundation
import Logging
import SSIControl
import SSISystem
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The local control socket (the protocol: SSIControl/ControlProtocol.swift). Blocking accept
/// on a thread of its own (connections are rare and short), each request handed to the async
/// world and to the subsystem it names; the caller's uid is read with SO_PEERCRED (unix(7))
/// and must be root's or the daemon's.
final class ControlServer: Service, Sendable {
    let path: String
    /// Subsystem name -> subsystem (`ControlRequest.subsystem`).
    let routes: [String: any Subsystem]
    let logger: Logger

    init(path: String, routes: [String: any Subsystem], logger: Logger) {
        self.path = path
        self.routes = routes
        self.logger = logger
    }

    func run() async throws {
        let lfd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard lfd >= 0 else { throw SSIError.sys("socket(AF_UNIX) for the control socket \(path)", errno: errno) }
        unlink(path)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() where i < p.count - 1 { p[i] = b } }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(lfd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0, listen(lfd, 64) == 0 else {
            let e = errno
            close(lfd)
            throw SSIError.sys("cannot listen on the control socket \(path)", errno: e, hint: "is another ssid using it? set control = PATH")
        }
        chmod(path, 0o660)
        let logger = self.logger
        let thread = Thread {
            while true {
                let c = accept(lfd, nil, nil)
                if c < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                var cred = PeerCred()
                var len = socklen_t(MemoryLayout<PeerCred>.size)
                if getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || (cred.uid != 0 && cred.uid != geteuid()) {
                    logger.warning("control: refused pid \(cred.pid) uid \(cred.uid): not root nor the daemon's user")
                    let refused = SSIError(.permission, "permission denied: only root or uid \(geteuid()) may control ssid",
                                           hint: "run ssi as root (sudo)")
                    Self.write(c, Self.encode(.failed(refused)))
                    close(c)
                    continue
                }
                Thread { self.serve(c) }.start()
            }
        }
        thread.start()
        try? await gracefulShutdown()
        shutdown(lfd, Int32(SHUT_RDWR))
        close(lfd)
        unlink(path)
    }

    /// One connection: one request line, one answer line. The request may bring the
    /// caller's fds 0-2 (SCM_RIGHTS on its first bytes, `ssi run`): they are handed to the
    /// subsystem, which owns them from then on.
    func serve(_ c: Int32) {
        defer { close(c) }
        var line: [UInt8] = []
        var fds: [Int32] = []
        while !line.contains(UInt8(ascii: "\n")) {
            guard let (bytes, got) = try? Socket.receive(c, max: 65536), !bytes.isEmpty else {
                fds.forEach { close($0) }
                return
            }
            line += bytes
            fds += got
        }
        let out = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        let passed = fds
        let task = Task {
            let a: ControlAnswer
            do {
                a = .ok(try await answer(Data(line), fds: passed))
            } catch {
                a = .failed(SSIError.wrapping(error))
            }
            out.withLock { $0 = Self.encode(a) }
            done.signal()
        }
        // A client that hangs up before its answer (killed, interrupted) cancels its request:
        // a migration it asked for is given up (ProcessTableSubsystem). The client never
        // half-closes its end, so a hang-up (POLLHUP/POLLRDHUP, poll(2)) means it is gone.
        // POLLRDHUP (0x2000, <bits/poll.h>) is behind _GNU_SOURCE, which Glibc's module hides.
        let rdhup: Int16 = 0x2000
        var cancelled = false
        while done.wait(timeout: .now() + .milliseconds(200)) == .timedOut {
            guard !cancelled else { continue }
            var p = pollfd(fd: c, events: rdhup, revents: 0)
            if poll(&p, 1, 0) > 0 && p.revents & (Int16(POLLHUP | POLLERR) | rdhup) != 0 {
                cancelled = true
                task.cancel()
            }
        }
        if !cancelled { Self.write(c, out.withLock { $0 }) }
    }

    private func answer(_ line: Data, fds: [Int32]) async throws -> ControlReply {
        let request: ControlRequest
        do { request = try JSONDecoder().decode(ControlRequest.self, from: line) } catch {
            fds.forEach { close($0) }
            throw SSIError(.invalidArgument, "control: a request that does not parse: \(error)", hint: "are ssi and ssid from the same build?")
        }
        guard let s = routes[request.subsystem] else {
            fds.forEach { close($0) }
            throw SSIError(.unsupported, "control: no subsystem \(request.subsystem) in this ssid", hint: "are ssi and ssid from the same build?")
        }
        return try await s.handle(request, fds: fds)
    }

    static func encode(_ a: ControlAnswer) -> [UInt8] {
        var d = (try? JSONEncoder().encode(a)) ?? Data(#"{"failed":{"_0":{"kind":"system","message":"control: unencodable answer"}}}"#.utf8)
        d.append(UInt8(ascii: "\n"))
        return Array(d)
    }

    static func write(_ c: Int32, _ out: [UInt8]) {
        var off = 0
        while off < out.count {
            let n = out[off...].withUnsafeBytes { Glibc.write(c, $0.baseAddress!, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }
}

/// `struct ucred` of unix(7) (pid, uid, gid), which Glibc's Swift module hides behind
/// _GNU_SOURCE.
struct PeerCred {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
