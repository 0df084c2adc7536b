import Foundation
import Logging
import SSICluster
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The local control socket. Blocking accept on a thread of its own (connections are rare and
/// short), each request handed to the async world; the caller's uid is read with SO_PEERCRED
/// (unix(7)) and must be root's or the daemon's.
final class ControlServer: Service, Sendable {
    let path: String
    let daemon: NodeDaemon
    let fd = Atomic<Int32>(-1)

    init(path: String, daemon: NodeDaemon) {
        self.path = path
        self.daemon = daemon
    }

    func run() async throws {
        let lfd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard lfd >= 0 else { throw ClusterError.config("control socket: \(String(cString: strerror(errno)))") }
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
            throw ClusterError.config("cannot listen on control socket \(path): \(String(cString: strerror(e)))")
        }
        chmod(path, 0o660)
        fd.store(lfd, ordering: .relaxed)
        let logger = daemon.logger
        let daemon = self.daemon
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
                    let msg = Array("{\"ok\":false,\"error\":\"permission denied: only root or uid \(geteuid()) may control ssid\"}\n".utf8)
                    _ = write(c, msg, msg.count)
                    close(c)
                    continue
                }
                Thread { ControlServer.serve(c, daemon: daemon) }.start()
            }
        }
        thread.start()
        try? await gracefulShutdown()
        shutdown(lfd, Int32(SHUT_RDWR))
        close(lfd)
        unlink(path)
    }

    /// One connection: one request line, one answer line.
    static func serve(_ c: Int32, daemon: NodeDaemon) {
        defer { close(c) }
        var line: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while !line.contains(UInt8(ascii: "\n")) {
            let n = read(c, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            line += buf[0..<n]
        }
        let answer = Mutex<[UInt8]>([])
        let done = DispatchSemaphore(value: 0)
        let request = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] ?? [:]
        let box = UncheckedBox(request)
        Task {
            var reply: [String: Any]
            do {
                let r = try await ControlOps.handle(box.value, daemon: daemon)
                reply = ["ok": true, "result": r ?? NSNull()]
            } catch {
                reply = ["ok": false, "error": "\(error)"]
            }
            var d = (try? JSONSerialization.data(withJSONObject: reply)) ?? Data("{\"ok\":false,\"error\":\"unencodable reply\"}".utf8)
            d.append(UInt8(ascii: "\n"))
            answer.withLock { $0 = Array(d) }
            done.signal()
        }
        done.wait()
        let out = answer.withLock { $0 }
        var off = 0
        while off < out.count {
            let n = out[off...].withUnsafeBytes { write(c, $0.baseAddress!, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }
}

/// JSON objects from JSONSerialization are immutable once built; nothing mutates this one
/// after it crosses into the task, hence `@unchecked`.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

/// `struct ucred` of unix(7) (pid, uid, gid), which Glibc's Swift module hides behind
/// _GNU_SOURCE.
struct PeerCred {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
