import CSSILinux
import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Who a socket belongs to and who its peer is, as the application reads them:
//
// - The owner: a socket's inode has the uid and gid of the process that made it (its
//   fsuid/fsgid), and the kernel keeps the uid as the socket's sk_uid too. SO_REUSEPORT lets
//   only sockets of one owner share a port (a program that drops root and binds another
//   worker's socket to its port gets EADDRINUSE otherwise), netfilter's owner match and
//   `ss -e` read it. Restart makes every socket in ssi, as root: fchown(2) on the socket
//   gives it its owner back (sockfs_setattr changes sk_uid with the inode's uid).
// - A unix stream or seqpacket socket's peer credentials (SO_PEERCRED, unix(7)): the PID
//   and effective ids of the process that called socketpair(2) (both ends), listen(2) (a
//   listener's, which the clients that connect copy), or connect(2) (what the accepted end
//   reads). Servers check them (who may talk to the D-Bus daemon, to Postgres through
//   peer authentication, to a privileged helper). Restart makes each such call in a
//   short-lived process with the original caller's PID and ids (cssi_creator_call); when
//   that caller is the root being restored, whose PID is already taken, in the root itself
//   (an injected call, with its effective ids switched around it).

extension ProcessDumper {
    /// SO_PEERCRED of a unix socket, the PID in ssi's namespace (translated with the
    /// application's processes, SocketOwners.keepApplicationCreators); nil when the kernel
    /// holds none (an unconnected socket, a datagram socket: pid 0 and the overflow ids).
    static func peerCredentials(_ sock: Int32) -> PeerCredentials? {
        var cred = UCred()
        var len = socklen_t(MemoryLayout<UCred>.size)
        guard getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0, cred.pid > 0 else { return nil }
        return PeerCredentials(pid: cred.pid, uid: cred.uid, gid: cred.gid)
    }

    /// The owner of socket `sock` when it is not root (fstat(2) of the socket's inode).
    static func socketOwner(_ sock: Int32) -> (uid: UInt32, gid: UInt32)? {
        var st = stat()
        guard fstat(sock, &st) == 0, st.st_uid != 0 || st.st_gid != 0 else { return nil }
        return (st.st_uid, st.st_gid)
    }
}

/// struct ucred (socket(7)), which glibc declares only with _GNU_SOURCE.
private struct UCred {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

enum SocketOwners {
    /// Who holds the other end of a connection that leads out of the application, for the
    /// refusal (" (held by PID N, name, ...)"), or "". A process in the cgroup of `pid` but
    /// outside its tree has left it by a double fork (a service dbus-daemon starts
    /// on demand, a daemonizing helper): the application's own, which it cannot take along.
    /// Only on this error path: every process's fds are read.
    static func describeHolder(ofSocket inode: UInt32, near pid: Int32) -> String {
        let link = "socket:[\(inode)]"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let p = Int32(name), p != getpid() else { continue }
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p)/fd")) ?? []
            guard fds.contains(where: { (try? ProcFS.readLink("/proc/\(p)/fd/\($0)")) == link }) else { continue }
            let comm = (try? ProcFS.read("/proc/\(p)/comm"))?.trimmingCharacters(in: .newlines) ?? "?"
            // The application's own cgroup (ssi/app-N), which its processes never leave.
            let group = { (q: Int32) in (try? ProcFS.read("/proc/\(q)/cgroup"))?.split(separator: "\n").first { $0.hasPrefix("0::") && $0.contains("/ssi/app-") } }
            if let g = group(pid), group(p) == g {
                return " (held by PID \(p), \(comm), which is in the application's cgroup but left its process tree: a double fork, as a service a D-Bus daemon starts on demand; only a process tree is checkpointed)"
            }
            return " (held by PID \(p), \(comm))"
        }
        return ""
    }

    /// Every socket image of `images`, in-flight ones included, changed by `body`.
    static func eachSocket(_ images: inout [ProcessImage], _ body: (inout SocketImage) -> Void) {
        func visit(_ f: inout FileDescriptorImage) {
            if f.socket != nil { body(&f.socket!) }
            guard var grams = f.socket?.datagrams else { return }
            for d in grams.indices {
                guard var files = grams[d].files else { continue }
                for k in files.indices { visit(&files[k]) }
                grams[d].files = files
            }
            f.socket?.datagrams = grams
        }
        for i in images.indices {
            for k in images[i].fds.indices { visit(&images[i].fds[k]) }
        }
    }

    /// A peer's PID is kept only when it is one of the application's processes (a PID of
    /// another process means nothing after a restart, and may be anyone's then); with
    /// `inner`, translated to the application's own PID namespace.
    static func keepApplicationCreators(_ images: inout [ProcessImage], inner: [Int32: Int32]? = nil) {
        let pids = Set(images.map(\.pid))
        func known(_ pid: Int32?) -> Int32? {
            guard let pid else { return nil }
            if let inner { return inner[pid] }
            return pids.contains(pid) ? pid : nil
        }
        eachSocket(&images) { s in
            if let c = s.peerCredentials { s.peerCredentials?.pid = known(c.pid) }
            // The senders of queued messages (SCM_CREDENTIALS) likewise.
            guard var grams = s.datagrams, grams.contains(where: { $0.credentials != nil }) else { return }
            for k in grams.indices { if let c = grams[k].credentials { grams[k].credentials?.pid = known(c.pid) } }
            s.datagrams = grams
        }
    }
}

/// One call that fixes peer credentials, with the ids it is made as.
enum CreatorCall {
    case socketpair(type: Int32)
    case connect(fd: Int32, address: Data)
    case listen(fd: Int32, backlog: Int32)

    var name: String {
        switch self {
        case .socketpair: return "socketpair"
        case .connect: return "connect"
        case .listen: return "listen"
        }
    }
}

/// Makes the calls that fix a unix socket's peer credentials, as the process that made the
/// original call (see the top of this file). Without credentials, or when they cannot be
/// had (the PID taken by a process outside the application, ids that may not connect to
/// the socket's file), a plain call from ssi: the connection is what matters, its
/// credentials are then ssi's, and the restart says so.
final class SocketCreators {
    /// The application's PID namespace when it has its own (an fd of ssi), else -1.
    let pidNamespace: Int32
    /// The root being restored (its PID in the application's namespace), and the call made
    /// in it (injected, only from the thread that traces it): its PID is taken already.
    let rootPID: Int32?
    /// The root's PID in ssi's namespace.
    let rootOuterPID: Int32?
    let inRoot: ((CreatorCall, PeerCredentials) throws -> (result: Int64, pair: (Int32, Int32)?))?
    /// Credentials that could not be given, for one warning.
    private(set) var missed: [String] = []

    init(pidNamespace: Int32 = -1, rootPID: Int32? = nil, rootOuterPID: Int32? = nil,
         inRoot: ((CreatorCall, PeerCredentials) throws -> (result: Int64, pair: (Int32, Int32)?))? = nil) {
        (self.pidNamespace, self.rootPID, self.rootOuterPID, self.inRoot) = (pidNamespace, rootPID, rootOuterPID, inRoot)
    }

    /// ptrace requests come only from the thread that traces the root: sockets of another
    /// network namespace are built on a thread of their own (SocketRebuilder.build).
    private let tracer = Int32(truncatingIfNeeded: cssi_gettid())

    deinit { if pidNamespace >= 0 { close(pidNamespace) } }

    /// socketpair(2) as `creds`' process; the two ends, close-on-exec.
    func socketpair(_ type: Int32, as creds: PeerCredentials?) throws -> (Int32, Int32) {
        if let creds, let (r, pair) = try make(.socketpair(type: type), creds), r == 0, let pair { return pair }
        var sv: [Int32] = [0, 0]
        if Glibc.socketpair(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) != 0 { throw SSIError.sys("socketpair", errno: errno) }
        return (sv[0], sv[1])
    }

    /// connect(2) of `fd` to `addr` as `creds`' process; 0, or -1 with errno set.
    func connect(_ fd: Int32, _ addr: Data, as creds: PeerCredentials?) -> Int32 {
        if let creds, let (r, _) = (try? make(.connect(fd: fd, address: addr), creds)) ?? nil, r == 0 { return 0 }
        return SockAddr.connect(fd, addr)
    }

    /// listen(2) on `fd` as `creds`' process; 0, or -1 with errno set.
    func listen(_ fd: Int32, _ backlog: Int32, as creds: PeerCredentials?) -> Int32 {
        if let creds, let (r, _) = (try? make(.listen(fd: fd, backlog: backlog), creds)) ?? nil, r == 0 { return 0 }
        return Glibc.listen(fd, backlog)
    }

    /// A queued message sent again by its sender, whose credentials the kernel attaches to it
    /// (SCM_CREDENTIALS): from a process with the sender's PID and ids, or, for the root,
    /// from ssi naming the root's PID (`rootOuterPID`, which exists: root may name any
    /// process, unix(7)). The bytes sent or -errno.
    func send(_ fd: Int32, _ data: Data, to addr: Data?, fds: [Int32], as creds: PeerCredentials) -> Int {
        if let pid = creds.pid, pid == rootPID, let outer = rootOuterPID {
            return Socket.send(fd, data, to: addr, fds: fds, credentials: (outer, creds.uid, creds.gid))
        }
        var c = cssi_creator_call()
        c.op = Int32(CSSI_CREATOR_SEND)
        c.fd = fd
        c.uid = creds.uid
        c.gid = creds.gid
        let address = addr.map(Array.init) ?? []
        let r: Int = data.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in
                address.withUnsafeBytes { a in
                    c.addr = addr == nil ? nil : a.baseAddress
                    c.addrlen = UInt32(a.count)
                    c.buf = b.baseAddress
                    c.len = UInt(b.count)
                    c.fds = f.baseAddress
                    c.nfds = Int32(f.count)
                    return spawn(&c, as: creds.pid, what: "a queued message")
                }
            }
        }
        if r == 0, c.result != -Int(EACCES), c.result != -Int(EPERM) { return c.result }
        missed.append("a queued message's sender")
        return Socket.send(fd, data, to: addr, fds: fds)
    }

    /// Runs `c` in a short-lived process with PID `pid` (cssi_creator_call); when the PID is
    /// taken (by ssi-init, or a process outside the application), with the ids alone.
    /// 0 once it ran (its result in `c.result`), or -errno.
    private func spawn(_ c: inout cssi_creator_call, as pid: Int32?, what: String) -> Int {
        let r = cssi_creator_call(pidNamespace, pid ?? 0, &c)
        guard r == -Int(EEXIST) else { return r }
        missed.append("\(what) as PID \(pid ?? 0) (taken)")
        return cssi_creator_call(pidNamespace, 0, &c)
    }

    /// The call's result (0 or -errno) and the pair made, or nil when it could not be made
    /// as `creds`' process.
    private func make(_ call: CreatorCall, _ creds: PeerCredentials) throws -> (Int64, (Int32, Int32)?)? {
        if let pid = creds.pid, pid == rootPID, let inRoot, Int32(truncatingIfNeeded: cssi_gettid()) == tracer {
            let (r, pair) = try inRoot(call, creds)
            if r == -Int64(EACCES) || r == -Int64(EPERM) { missed.append("\(call.name) as PID \(pid)"); return nil }
            return (r, pair)
        }
        var c = cssi_creator_call()
        c.uid = creds.uid
        c.gid = creds.gid
        switch call {
        case .socketpair(let type): c.op = Int32(CSSI_CREATOR_SOCKETPAIR); c.type = type
        case .listen(let fd, let backlog): c.op = Int32(CSSI_CREATOR_LISTEN); c.fd = fd; c.backlog = backlog
        case .connect(let fd, _): c.op = Int32(CSSI_CREATOR_CONNECT); c.fd = fd
        }
        let address: [UInt8] = { if case .connect(_, let a) = call { return Array(a) } else { return [] } }()
        let r: Int = address.withUnsafeBytes { a in
            c.addr = a.baseAddress
            c.addrlen = UInt32(a.count)
            return spawn(&c, as: creds.pid, what: call.name)
        }
        guard r == 0 else { missed.append("\(call.name): \(String(cString: strerror(Int32(-r))))"); return nil }
        if c.result == -Int(EACCES) || c.result == -Int(EPERM) { missed.append("\(call.name) as uid \(creds.uid)"); return nil }
        return (Int64(c.result), c.op == Int32(CSSI_CREATOR_SOCKETPAIR) && c.result == 0 ? (c.sv.0, c.sv.1) : nil)
    }
}
