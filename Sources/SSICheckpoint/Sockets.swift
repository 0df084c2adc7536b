import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Sockets inside an application: unix sockets (socketpairs, named listeners with their
// pending connections, accepted connections, datagram sockets with their queued messages)
// and TCP sockets (listeners, bound sockets, connections whose two ends are both inside the
// application, rebuilt with TCP_REPAIR).
//
// Dump reads each socket through a copy of the process's fd taken with pidfd_getfd(2): the
// copy is the same socket, so peeking at it (MSG_PEEK, SO_PEEK_OFF) or putting it in repair
// mode sees the application's own queues, and nothing is consumed.
//
// Restart builds every socket in ssi itself, where plain socket calls can be made, then the
// application's root process takes them (FDTransfer.take) and holds them at reserved fd
// numbers before it forks, so each process inherits the ones it uses.

/// A socket the checkpoint cannot take; the caller turns it into a refusal naming the fd
/// (or a closed fd with -i).
struct UnsupportedSocket: Error { let kind: String }

/// The socket options kept across a restart, by name (the snapshot's keys), for these
/// families (AF_UNIX 1, AF_INET 2, AF_INET6 10).
let keptSocketOptions: [(name: String, option: SocketOption, families: Set<Int32>)] = [
    ("SO_REUSEADDR", .reuseAddress, [2, 10]), ("SO_REUSEPORT", .reusePort, [2, 10]),
    ("SO_KEEPALIVE", .keepAlive, [2, 10]), ("SO_PASSCRED", .passCredentials, [1]),
    ("TCP_NODELAY", .tcpNoDelay, [2, 10]), ("IPV6_V6ONLY", .ipv6Only, [10]),
]

/// sockaddr helpers: a unix name is kept as its sun_path bytes, an inet address as the
/// whole struct sockaddr_in/in6.
enum SockAddr {
    static func unix(_ path: Data) -> (sockaddr_un, socklen_t) {
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let n = min(path.count, MemoryLayout.size(ofValue: a.sun_path))
        withUnsafeMutableBytes(of: &a.sun_path) { dst in path.prefix(n).withUnsafeBytes { dst.copyMemory(from: $0) } }
        return (a, socklen_t(2 + n))
    }

    /// A printable form: the path, "@name" for an abstract name, "1.2.3.4:80" for inet.
    static func describe(_ d: Data?, family: Int32) -> String {
        guard let d, !d.isEmpty else { return "(unnamed)" }
        if family == AF_UNIX {
            if d.first == 0 { return "@" + String(decoding: d.dropFirst().prefix { $0 != 0 }, as: UTF8.self) }
            return String(decoding: d.prefix { $0 != 0 }, as: UTF8.self)
        }
        var host = [CChar](repeating: 0, count: 64)
        let (port, ok): (UInt16, Bool) = d.withUnsafeBytes { raw in
            if family == AF_INET, raw.count >= MemoryLayout<sockaddr_in>.size {
                var sin = raw.loadUnaligned(as: sockaddr_in.self)
                return (UInt16(bigEndian: sin.sin_port), inet_ntop(AF_INET, &sin.sin_addr, &host, 64) != nil)
            }
            if raw.count >= MemoryLayout<sockaddr_in6>.size {
                var sin6 = raw.loadUnaligned(as: sockaddr_in6.self)
                return (UInt16(bigEndian: sin6.sin6_port), inet_ntop(AF_INET6, &sin6.sin6_addr, &host, 64) != nil)
            }
            return (0, false)
        }
        guard ok else { return "?" }
        let h = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return family == AF_INET6 ? "[\(h)]:\(port)" : "\(h):\(port)"
    }

    static func name(_ fd: Int32, peer: Bool) -> Data? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &ss) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &len) : getsockname(fd, $0, &len) }
        }
        guard r == 0 else { return nil }
        return withUnsafeBytes(of: &ss) { Data($0.prefix(Int(len))) }
    }

    static func bind(_ fd: Int32, _ addr: Data) -> Int32 {
        addr.withUnsafeBytes { Glibc.bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count)) }
    }

    static func connect(_ fd: Int32, _ addr: Data) -> Int32 {
        addr.withUnsafeBytes { Glibc.connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count)) }
    }
}

// MARK: - dump

extension ProcessDumper {
    /// A copy of fd `fd` of this process (pidfd_getfd(2)): the same open file, so the same
    /// socket, inotify instance... whose state can be read from here.
    func fdCopy(fd: Int32) throws -> Int32 { try FDTransfer.copy(fd: fd, from: ProcessID(pid)) }

    /// The image of socket fd `fd`, or UnsupportedSocket saying what it is.
    func dumpSocket(fd: Int32, inode: UInt32, link: String, flags: Int32, cloexec: Bool) throws -> FileDescriptorImage {
        let sock = try fdCopy(fd: fd)
        defer { close(sock) }
        let family = SocketOption.domain.get(sock) ?? -1
        let type = SocketOption.type.get(sock) ?? -1
        let proto = SocketOption.protocol.get(sock) ?? -1
        var img: FileDescriptorImage
        switch (family, type) {
        case (AF_UNIX, _):
            img = FileDescriptorImage(fd: fd, kind: .unixSocket, path: link, flags: flags, closeOnExec: cloexec, position: 0)
            img.socket = try dumpUnix(sock, inode: inode)
            if type == 1, let parts = img.socket?.datagrams, !parts.contains(where: { $0.files != nil }) {
                img.socketData = parts.reduce(into: Data()) { $0.append($1.data) }
                img.socket?.datagrams = nil
            }
            img.peerID = unixSockets[inode].flatMap { $0.peer == 0 ? nil : $0.peer }
            img.socketType = type
        case (AF_INET, 1) where proto == IPPROTO_TCP, (AF_INET6, 1) where proto == IPPROTO_TCP:
            img = FileDescriptorImage(fd: fd, kind: .tcpSocket, path: link, flags: flags, closeOnExec: cloexec, position: 0)
            img.socket = try dumpTCP(sock, family: family)
        case (AF_INET, 2), (AF_INET6, 2):
            throw UnsupportedSocket(kind: "UDP socket")
        case (AF_NETLINK, _):
            throw UnsupportedSocket(kind: "netlink socket")
        default:
            throw UnsupportedSocket(kind: "socket of family \(family), type \(type)")
        }
        img.socketID = inode
        var s = img.socket!
        var opts = [String: Int32]()
        for o in keptSocketOptions where o.families.contains(family) {
            if let v = o.option.get(sock), v != 0 { opts[o.name] = v }
        }
        s.options = opts.isEmpty ? nil : opts
        img.socket = s
        return img
    }

    private func dumpUnix(_ sock: Int32, inode: UInt32) throws -> SocketImage {
        guard let info = unixSockets[inode] else { throw UnsupportedSocket(kind: "unix socket that sock_diag does not list") }
        let type = Int32(info.type)
        guard [1, 2, 5].contains(type) else { throw UnsupportedSocket(kind: "unix socket of type \(type)") }
        var s = SocketImage(family: 1, type: type, state: .unconnected)
        s.address = info.name.map { Data($0) }
        if let name = info.name, name.first != 0, name.first != UInt8(ascii: "/") {
            throw UnsupportedSocket(kind: "unix socket bound to the relative path \(SockAddr.describe(Data(name), family: 1))")
        }
        switch info.state {
        case 10: // TCP_LISTEN
            s.state = .listening
            s.backlog = Int32(bitPattern: info.sendQueue)
            s.pendingClients = info.pendingClients.isEmpty ? nil : info.pendingClients
        case 1:  // TCP_ESTABLISHED: connected (a stream waiting to be accepted has no peer inode yet)
            s.state = .connected
            if info.peer != 0 { s.peerAddress = unixSockets[info.peer]?.name.map { Data($0) } }
            if info.peer == 0 && type != 2 && info.sendQueue > 0 {
                throw UnsupportedSocket(kind: "unix connection not yet accepted, with data already sent on it")
            }
        default:
            s.state = .unconnected
        }
        // Stream bytes are kept as one datagram here and moved to socketData by the caller.
        // For datagrams sock_diag gives only the first message's length (unix_inq_len): always peek.
        if s.state != .listening, info.receiveQueue > 0 || type != 1 { s.datagrams = try peekAll(sock, datagrams: type != 1) }
        s.shutdown = info.shutdown == 0 ? nil : Int32(info.shutdown)
        if let name = info.name, name.first == UInt8(ascii: "/") {
            var st = stat()
            if stat(SockAddr.describe(Data(name), family: 1), &st) == 0, st.st_mode & S_IFMT == S_IFSOCK {
                s.fileMode = UInt32(st.st_mode & 0o7777); s.fileUID = st.st_uid; s.fileGID = st.st_gid
            }
        }
        return s
    }

    /// Everything queued to `sock`, without consuming it: SO_PEEK_OFF (socket(7)) makes each
    /// MSG_PEEK start where the previous one ended, so every message is seen once.
    private func peekAll(_ sock: Int32, datagrams: Bool) throws -> [QueuedDatagram] {
        // The application's own peek offset is put back afterwards.
        let appPeekOffset = SocketOption.peekOffset.get(sock) ?? -1
        guard SocketOption.peekOffset.set(sock, 0) else { throw SSIError.sys("SO_PEEK_OFF on a socket of PID \(pid)", errno: errno) }
        defer { SocketOption.peekOffset.set(sock, appPeekOffset) }
        var out = [QueuedDatagram]()
        // A unix datagram can be as big as the sender's send buffer; a peek that does not
        // take the whole message would leave the offset inside it.
        let sndbuf = Int(SocketOption.sendBuffer.get(sock) ?? 0)
        var buf = [UInt8](repeating: 0, count: max(4 << 20, 2 * sndbuf))
        while true {
            guard let peeked = try Socket.peek(sock, buffer: &buf, what: "peek a socket of PID \(pid)") else { break }
            // A peek installs the fds in flight in ssi: copies of the very files, which are
            // described like any fd, then closed.
            let held = peeked.fds ?? []
            defer { for fd in held { close(fd) } }
            if peeked.bytes.isEmpty {
                // Stream: end of file. A datagram of no bytes would not move the peek offset.
                if !datagrams && held.isEmpty { break }
                throw UnsupportedSocket(kind: "unix socket with an empty message queued")
            }
            if peeked.fds == nil { throw UnsupportedSocket(kind: "unix socket with more file descriptors in flight in one message than can be read") }
            var msg = QueuedDatagram(data: Data(peeked.bytes), sender: nil)
            if !held.isEmpty {
                if inFlightDepth > 0 { throw UnsupportedSocket(kind: "socket in flight that itself carries file descriptors in flight") }
                msg.files = try held.enumerated().map { try describeInFlight($0.element, index: Int32($0.offset)) }
            }
            // The name is a struct sockaddr_un: sun_family (2 bytes), then sun_path.
            if datagrams, peeked.name.count > 2, (SocketOption.type.get(sock) ?? 2) == 2 {
                msg.sender = Data(peeked.name.dropFirst(2))
            }
            out.append(msg)
        }
        return out
    }

    /// An fd in flight, installed in ssi by a peek: a regular file or directory (path, flags,
    /// offset) or a socket (described like the application's own).
    private func describeInFlight(_ fd: Int32, index: Int32) throws -> FileDescriptorImage {
        let me = getpid()
        let link = (try? ProcFS.readLink("/proc/self/fd/\(fd)")) ?? "?"
        let info = try FdInfo.read(pid: me, fd: fd)
        let flags = info.flags & ~O_CLOEXEC
        var st = stat()
        if fstat(fd, &st) != 0 { throw SSIError.sys("fstat an fd in flight", errno: errno) }
        switch st.st_mode & S_IFMT {
        case S_IFSOCK:
            if SocketOption.domain.get(fd) != AF_UNIX {
                throw UnsupportedSocket(kind: "unix socket with a TCP or other non-unix socket in flight (SCM_RIGHTS)")
            }
            var d = ProcessDumper(pid: me)
            d.unixSockets = unixSockets
            d.inFlightDepth = inFlightDepth + 1
            var img = try d.dumpSocket(fd: fd, inode: UInt32(truncatingIfNeeded: st.st_ino), link: link, flags: flags, cloexec: false)
            img.fd = index
            return img
        case S_IFREG where link.hasPrefix("/") && !link.hasSuffix(" (deleted)"):
            var img = FileDescriptorImage(fd: index, kind: .regular, path: link, flags: flags, closeOnExec: false, position: info.pos)
            img.size = Int64(st.st_size)
            return img
        case S_IFDIR where link.hasPrefix("/"):
            return FileDescriptorImage(fd: index, kind: .directory, path: link, flags: flags, closeOnExec: false, position: info.pos)
        default:
            throw UnsupportedSocket(kind: "unix socket with a file descriptor in flight (SCM_RIGHTS) that is \(link)")
        }
    }

    private func dumpTCP(_ sock: Int32, family: Int32) throws -> SocketImage {
        var info = [UInt8](repeating: 0, count: 232)
        if SocketOption.tcpInfo.get(sock, into: &info) == nil { throw SSIError.sys("TCP_INFO of a socket of PID \(pid)", errno: errno) }
        func u32(_ at: Int) -> UInt32 { info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
        var s = SocketImage(family: family, type: 1, state: .unconnected)
        s.address = SockAddr.name(sock, peer: false)
        let state = info[0]
        switch state {
        case 10: // TCP_LISTEN: tcp_get_info puts the accept queue in tcpi_unacked, the backlog in tcpi_sacked
            s.state = .listening
            if u32(24) > 0 {
                throw UnsupportedSocket(kind: "TCP listening socket on \(SockAddr.describe(s.address, family: family)) with \(u32(24)) connection(s) waiting to be accepted")
            }
            s.backlog = Int32(bitPattern: u32(28))
        case 7: // TCP_CLOSE: created, maybe bound
            // Port 0 (bytes 2-3 of sockaddr_in and sockaddr_in6): not bound.
            if let a = s.address, a.count >= 4, a[a.startIndex + 2] == 0, a[a.startIndex + 3] == 0 { s.address = nil }
        case 1: // TCP_ESTABLISHED
            s.state = .connected
            s.peerAddress = SockAddr.name(sock, peer: true)
            s.tcp = try repairDump(sock, info: info)
        default:
            let names = [2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 8: "CLOSE_WAIT", 9: "LAST_ACK", 11: "CLOSING"]
            throw UnsupportedSocket(kind: "TCP socket in state \(names[Int(state)] ?? "\(state)")")
        }
        return s
    }

    /// Reads a connection's sequence numbers, queues and options in repair mode (tcp(7),
    /// TCP_REPAIR needs CAP_NET_ADMIN). Leaving repair mode sends a window probe, which the
    /// peer answers like any duplicate ACK: the connection goes on unchanged.
    private func repairDump(_ sock: Int32, info: [UInt8]) throws -> TCPRepairState {
        // Entering and leaving repair mode change the socket's SO_REUSEADDR (the kernel sets
        // sk_reuse to SK_FORCE_REUSE, then SK_NO_REUSE): read the application's value first and
        // put it back, or its connection would end in a TIME_WAIT that keeps its own listener
        // from binding the port again after a restart.
        let reuse = SocketOption.reuseAddress.get(sock) ?? 0
        guard SocketOption.tcpRepair.set(sock, 1) else {
            throw SSIError.sys("TCP_REPAIR on a socket of PID \(pid)", errno: errno, hint: errno == EPERM ? "run as root (CAP_NET_ADMIN)" : nil)
        }
        defer {
            SocketOption.tcpRepair.set(sock, 0)
            SocketOption.reuseAddress.set(sock, reuse)
        }
        var inq: Int32 = 0, outq: Int32 = 0
        if ioctl(sock, SocketIoctl.inputQueue, &inq) != 0 || ioctl(sock, SocketIoctl.outputQueue, &outq) != 0 {
            throw SSIError.sys("PID \(pid): queue sizes of a TCP connection (SIOCINQ/SIOCOUTQ)", errno: errno)
        }
        func queue(_ q: Int32, _ count: Int32) throws -> (UInt32, Data) {
            guard SocketOption.tcpRepairQueue.set(sock, q) else { throw SSIError.sys("TCP_REPAIR_QUEUE", errno: errno) }
            guard let rawSeq = SocketOption.tcpQueueSequence.get(sock) else {
                throw SSIError.sys("PID \(pid): sequence number of a TCP connection (TCP_QUEUE_SEQ)", errno: errno)
            }
            let seq = UInt32(bitPattern: rawSeq)
            guard count > 0 else { return (seq, Data()) }
            var buf = [UInt8](repeating: 0, count: Int(count))
            // In repair mode a peek reads the selected queue, the send queue included.
            let n = recv(sock, &buf, buf.count, Int32(MSG_PEEK | MSG_DONTWAIT))
            if n != Int(count) { throw SSIError(.system, "PID \(pid): read \(n) of the \(count) bytes queued on a TCP connection") }
            return (seq, Data(buf))
        }
        let (recvSeq, recvQueue) = try queue(SocketOption.tcpReceiveQueue, inq)
        let (sendSeq, sendQueue) = try queue(SocketOption.tcpSendQueue, outq)
        SocketOption.tcpRepairQueue.set(sock, SocketOption.tcpNoQueue)
        var winBytes = [UInt8](repeating: 0, count: 20)
        if SocketOption.tcpRepairWindow.get(sock, into: &winBytes) == nil { throw SSIError.sys("TCP_REPAIR_WINDOW", errno: errno) }
        let win = winBytes.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
        // struct tcp_info: tcpi_options at 5, the window scales at 6 (snd in the low nibble),
        // tcpi_snd_mss at 16.
        let opts = info[5], scales = opts & 4 != 0 ? info[6] : 0   // TCPI_OPT_WSCALE
        // In repair mode TCP_MAXSEG gives the negotiated limit (mss_clamp); tcpi_snd_mss is the
        // current segment size, smaller by the options, and would shrink at every restart.
        let mss = SocketOption.tcpMaxSegment.get(sock).map { UInt32($0) } ?? info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt32.self) }
        guard let stamp = SocketOption.tcpTimestamp.get(sock) else { throw SSIError.sys("PID \(pid): TCP_TIMESTAMP", errno: errno) }
        return TCPRepairState(sendSeq: sendSeq, recvSeq: recvSeq, sendQueue: sendQueue, recvQueue: recvQueue, mss: mss,
                              sendWindowScale: scales & 0xf, recvWindowScale: scales >> 4, sack: opts & 2 != 0,
                              timestamps: opts & 1 != 0, timestamp: UInt32(bitPattern: stamp),
                              window: win)
    }

    /// Every socket must be rebuildable from what the application holds: a unix peer, a
    /// pending client, a TCP peer must all be inside it. Others fail the checkpoint (or, with
    /// -i, become closed fds).
    static func checkSockets(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool) throws {
        let all = tables.values.flatMap { $0 }.flatMap { [$0] + SocketRebuilder.inFlightSockets(of: $0) }
        let unixIDs = Set(all.filter { $0.kind == .unixSocket }.compactMap(\.socketID))
        let pendingIDs = Set(all.compactMap { $0.socket?.pendingClients }.flatMap { $0 })
        let tcpEnds = Set(all.filter { $0.kind == .tcpSocket && $0.socket?.state == .connected }.map { [$0.socket?.address, $0.socket?.peerAddress] })
        for (pid, fds) in tables {
            for carrier in fds {
              for f in [carrier] + SocketRebuilder.inFlightSockets(of: carrier) {
                var problem: String? = nil
                if f.kind == .unixSocket {
                    let s = f.socket
                    let stream = (f.socketType ?? s?.type ?? 1) != 2
                    if let peer = f.peerID, !unixIDs.contains(peer) {
                        // A datagram socket connected to an outside name is reconnected by name.
                        if stream || s?.peerAddress == nil { problem = "unix socket connected to \(SockAddr.describe(s?.peerAddress, family: 1)) outside the application" }
                    } else if f.peerID == nil, s?.state == .connected, stream, !pendingIDs.contains(f.socketID ?? 0), s?.shutdown != 3 {
                        problem = "unix connection waiting in the accept queue of a listener outside the application"
                    }
                    for c in s?.pendingClients ?? [] where !unixIDs.contains(c) {
                        problem = "unix listener \(SockAddr.describe(s?.address, family: 1)) with a pending connection from outside the application"
                    }
                } else if f.kind == .tcpSocket, let s = f.socket, s.state == .connected, !tcpEnds.contains([s.peerAddress, s.address]) {
                    problem = "TCP connection \(SockAddr.describe(s.address, family: s.family)) -> \(SockAddr.describe(s.peerAddress, family: s.family)) whose peer is outside the application"
                }
                guard let problem else { continue }
                let inFlight = f.socketID != carrier.socketID ? "a socket in flight in it: " : ""
                if ignoreUnsupported { tables[pid]!.removeAll { $0.fd == carrier.fd }; break }
                throw SSIError(.unsupported, "PID \(pid) fd \(carrier.fd): \(inFlight)\(problem) is not supported yet; nothing was written and the application goes on",
                               hint: "use `ssi checkpoint -i` to restore it as a closed fd")
              }
            }
        }
    }
}

// MARK: - restart

/// Builds every socket of an application in ssi, connected and filled as it was.
final class SocketRebuilder {
    /// socket inode -> the new socket, an fd of ssi.
    private(set) var made: [UInt32: Int32] = [:]
    private var images: [UInt32: FileDescriptorImage] = [:]
    private var repairing: [(fd: Int32, reuse: Int32)] = []

    deinit { closeAll() }

    func closeAll() {
        for fd in made.values { close(fd) }
        made = [:]
    }

    /// `sockets`: one image per socket (the first fd that holds it).
    /// Sockets in flight (SCM_RIGHTS) in the messages queued on `f`.
    static func inFlightSockets(of f: FileDescriptorImage) -> [FileDescriptorImage] {
        (f.socket?.datagrams ?? []).flatMap { $0.files ?? [] }.filter { $0.kind == .unixSocket || $0.kind == .tcpSocket }
    }

    func build(_ held: [FileDescriptorImage]) throws {
        // Sockets in flight that no process holds any more are rebuilt too, to be sent again.
        var sockets = held
        var seen = Set(held.compactMap(\.socketID))
        for f in held {
            for g in SocketRebuilder.inFlightSockets(of: f) where !seen.contains(g.socketID ?? 0) {
                seen.insert(g.socketID ?? 0)
                sockets.append(g)
            }
        }
        for f in sockets { if let id = f.socketID { images[id] = f } }
        let unix = sockets.filter { $0.kind == .unixSocket }
        let tcp = sockets.filter { $0.kind == .tcpSocket }
        try buildUnix(unix)
        try buildTCP(tcp)
        for f in sockets { try applyOptions(f) }
    }

    private func state(_ f: FileDescriptorImage) -> SocketImage {
        // Version 2 snapshots: a socketpair end, no SocketImage.
        if let s = f.socket { return s }
        return SocketImage(family: 1, type: f.socketType ?? 1, state: .connected)
    }

    private func newSocket(_ family: Int32, _ type: Int32, _ what: String) throws -> Int32 {
        let fd = socket(family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SSIError.sys("socket() for \(what)", errno: errno) }
        return fd
    }

    // MARK: unix

    /// A unix stream socket bound to the name of a listener it was accepted from: its name is
    /// the listener's, not its own binding.
    private func isAccepted(_ f: FileDescriptorImage, _ s: SocketImage) -> Bool {
        s.state == .connected && s.type != 2 && s.address != nil
    }

    private func buildUnix(_ socks: [FileDescriptorImage]) throws {
        // 1. Sockets with a name of their own: bound first (listeners listen).
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, let name = s.address, !isAccepted(f, s) else { continue }
            try freeName(name, for: f)
            let fd = try newSocket(AF_UNIX, s.type, "unix socket \(SockAddr.describe(name, family: 1))")
            made[id] = fd
            let (addr, len) = SockAddr.unix(name)
            var a = addr
            let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, len) } }
            if r != 0 {
                throw SSIError.sys("bind unix socket to \(SockAddr.describe(name, family: 1))", errno: errno,
                                   hint: "another program uses that name now: stop it, then restart again")
            }
            if name.first == UInt8(ascii: "/"), let mode = s.fileMode {
                let path = SockAddr.describe(name, family: 1)
                chmod(path, mode_t(mode))
                if let u = s.fileUID, let g = s.fileGID { chown(path, u, g) }
            }
            if s.state == .listening, listen(fd, s.backlog ?? 128) != 0 {
                throw SSIError.sys("listen on \(SockAddr.describe(name, family: 1))", errno: errno)
            }
        }
        // 2. Established stream connections: through their listener when it is rebuilt (so
        //    both ends keep their names), as a socketpair otherwise. Accepted at once, so the
        //    listener's queue then holds only the connections that were pending.
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, made[id] == nil, s.state == .connected, let peer = f.peerID, let pf = images[peer], made[peer] == nil else { continue }
            if s.type == 2 && (s.address != nil || state(pf).address != nil) { continue }   // named datagram: step 1 and 5
            let server = isAccepted(f, s) ? f : (isAccepted(pf, state(pf)) ? pf : nil)
            if let server, let lname = state(server).address, let lid = listenerID(named: lname), let lfd = made[lid] {
                let client = server.socketID == id ? pf : f
                let cfd = try newSocket(AF_UNIX, s.type, "a connection to \(SockAddr.describe(lname, family: 1))")
                made[client.socketID!] = cfd
                if SockAddr.connect(cfd, Data(unixAddr(lname))) != 0 {
                    throw SSIError.sys("connect to \(SockAddr.describe(lname, family: 1))", errno: errno)
                }
                let sfd = accept(lfd, nil, nil)
                if sfd < 0 { throw SSIError.sys("accept on \(SockAddr.describe(lname, family: 1))", errno: errno) }
                made[server.socketID!] = sfd
            } else {
                var sv: [Int32] = [0, 0]
                if socketpair(AF_UNIX, s.type | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) != 0 { throw SSIError.sys("socketpair", errno: errno) }
                made[id] = sv[0]; made[peer] = sv[1]
            }
        }
        // 3. Connections waiting to be accepted, in their order.
        for f in socks {
            let s = state(f)
            guard s.state == .listening, let name = s.address else { continue }
            for c in s.pendingClients ?? [] where made[c] == nil {
                let cfd = try newSocket(AF_UNIX, s.type, "a pending connection to \(SockAddr.describe(name, family: 1))")
                made[c] = cfd
                if SockAddr.connect(cfd, Data(unixAddr(name))) != 0 {
                    throw SSIError.sys("connect a pending client to \(SockAddr.describe(name, family: 1))", errno: errno)
                }
            }
        }
        // 4. The rest: unnamed, unconnected sockets (and datagram sockets connected by name);
        //    a connection whose peer was closed becomes a socketpair whose other end is
        //    closed once the unread bytes are back in.
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, made[id] == nil else { continue }
            if s.state == .connected, s.type != 2, f.peerID == nil {
                var sv: [Int32] = [0, 0]
                if socketpair(AF_UNIX, s.type | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) != 0 { throw SSIError.sys("socketpair", errno: errno) }
                made[id] = sv[0]
                defer { close(sv[1]) }
                let messages = s.datagrams ?? (f.socketData.map { [QueuedDatagram(data: $0, sender: nil)] } ?? [])
                for d in messages { try sendMessage(d, from: sv[1], to: nil, what: "unix socket fd \(f.fd)") }
                continue
            }
            made[id] = try newSocket(AF_UNIX, s.type, "an unnamed unix socket")
        }
        // 5. Queued data, sent again by the peer (or, for datagrams, by the sender when it is
        //    ours, else by an unnamed socket), before datagram sockets connect: a connected
        //    datagram socket only accepts its peer's messages (unix_may_send).
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, let fd = made[id] else { continue }
            if s.state == .connected, s.type != 2, f.peerID == nil { continue }   // done in 4
            if s.type == 1, let data = f.socketData, !data.isEmpty {
                guard let peer = f.peerID, let pfd = made[peer] else { continue }
                let n = data.withUnsafeBytes { send(pfd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                if n != data.count { throw SSIError.sys("requeue \(data.count) bytes on unix socket fd \(f.fd)", errno: errno) }
                continue
            }
            if s.type == 1 {
                // Stream bytes cut where fds were attached: each piece sent with its fds.
                guard let peer = f.peerID, let pfd = made[peer] else { continue }
                for d in s.datagrams ?? [] { try sendMessage(d, from: pfd, to: nil, what: "unix socket fd \(f.fd)") }
                continue
            }
            for d in s.datagrams ?? [] {
                try requeue(d, to: f, s, fd: fd)
            }
        }
        // 6. Datagram sockets connected to a name.
        for f in socks {
            let s = state(f)
            guard s.type == 2, s.state == .connected, let id = f.socketID, let fd = made[id], let peerName = s.peerAddress else { continue }
            if let peer = f.peerID, let pf = images[peer], state(pf).address == nil { continue }   // a socketpair
            if SockAddr.connect(fd, Data(unixAddr(peerName))) != 0 {
                throw SSIError.sys("reconnect datagram socket fd \(f.fd) to \(SockAddr.describe(peerName, family: 1))", errno: errno,
                                   hint: "the program that owned that name is gone: start it again, then restart")
            }
        }
        // 7. shutdown(2) last, once the data is back.
        for f in socks {
            guard let id = f.socketID, let fd = made[id], let sh = state(f).shutdown, sh != 0 else { continue }
            _ = Glibc.shutdown(fd, sh == 3 ? Int32(SHUT_RDWR) : (sh == 1 ? Int32(SHUT_RD) : Int32(SHUT_WR)))
        }
    }

    private func requeue(_ d: QueuedDatagram, to f: FileDescriptorImage, _ s: SocketImage, fd: Int32) throws {
        if let name = s.address, s.type == 2 {
            // Sent to its name, from the socket that sent it if that one is ours.
            var from: Int32 = -1
            var temporary = false
            if let sender = d.sender, let sid = images.first(where: { state($0.value).address == sender && state($0.value).type == s.type })?.key {
                from = made[sid] ?? -1
            }
            if from < 0 { from = try newSocket(AF_UNIX, s.type, "requeue a datagram"); temporary = true }
            defer { if temporary { close(from) } }
            try sendMessage(d, from: from, to: Data(unixAddr(name)), what: "unix socket fd \(f.fd)")
        } else if let peer = f.peerID, let pfd = made[peer] {
            try sendMessage(d, from: pfd, to: nil, what: "unix socket fd \(f.fd)")
        } else {
            throw SSIError(.unsupported, "unix socket fd \(f.fd) has queued messages but neither a name nor a peer to receive them again")
        }
    }

    /// Sends one saved message again, with its fds in flight: sockets rebuilt here, files
    /// reopened by ssi at their offset.
    private func sendMessage(_ d: QueuedDatagram, from: Int32, to addr: Data?, what: String) throws {
        var fds = [Int32]()
        var opened = [Int32]()
        defer { for fd in opened { close(fd) } }
        for g in d.files ?? [] {
            if g.kind == .unixSocket || g.kind == .tcpSocket {
                guard let id = g.socketID, let fd = made[id] else { throw SSIError(.corrupt, "\(what): a socket in flight was not rebuilt") }
                fds.append(fd)
                continue
            }
            let fd = open(g.path, g.flags & ~(O_CREAT | O_TRUNC | O_EXCL) | O_CLOEXEC | O_NOCTTY)
            if fd < 0 { throw SSIError.sys("\(what): reopen \(g.path), in flight in a queued message", errno: errno, hint: "put the file back, then restart again") }
            opened.append(fd)
            lseek(fd, off_t(g.position), SEEK_SET)
            fds.append(fd)
        }
        let n = Socket.send(from, d.data, to: addr, fds: fds)
        if n != d.data.count { throw SSIError.sys("requeue a \(d.data.count)-byte message on \(what)", errno: n < 0 ? Int32(-n) : EMSGSIZE) }
    }

    private func unixAddr(_ name: Data) -> [UInt8] {
        var (a, len) = SockAddr.unix(name)
        return withUnsafeBytes(of: &a) { Array($0.prefix(Int(len))) }
    }

    private func listenerID(named name: Data) -> UInt32? {
        images.first { state($0.value).state == .listening && state($0.value).address == name }?.key
    }

    /// A path name is free when nothing is there, or only the socket file the application
    /// left (no one accepts on it: connect fails with ECONNREFUSED); that file is removed.
    private func freeName(_ name: Data, for f: FileDescriptorImage) throws {
        guard name.first == UInt8(ascii: "/") else { return }
        let path = SockAddr.describe(name, family: 1)
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFSOCK else {
            throw SSIError(.busy, "fd \(f.fd) was bound to \(path), which now exists and is not a socket; nothing was changed",
                           hint: "move that file away, then restart again")
        }
        for type in [Int32(SOCK_STREAM.rawValue), Int32(SOCK_DGRAM.rawValue), Int32(SOCK_SEQPACKET.rawValue)] {
            let probe = socket(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0)
            defer { close(probe) }
            if SockAddr.connect(probe, Data(unixAddr(name))) == 0 {
                throw SSIError(.busy, "unix socket \(path) is in use by a running program, so fd \(f.fd) cannot take it back; nothing was changed",
                               hint: "stop the program listening on \(path), then restart again")
            }
        }
        unlink(path)
    }

    // MARK: tcp

    private func buildTCP(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            guard let id = f.socketID, let s = f.socket else { continue }
            let fd = try newSocket(s.family, 1, "TCP socket \(SockAddr.describe(s.address, family: s.family))")
            made[id] = fd
            if s.family == AF_INET6 { SocketOption.ipv6Only.set(fd, s.options?["IPV6_V6ONLY"] ?? 0) }
            switch s.state {
            case .listening, .unconnected:
                guard let addr = s.address else { continue }
                // SO_REUSEADDR for the bind only: the application's own connections on this
                // port may linger in TIME_WAIT after the kill (tcp(7)).
                SocketOption.reuseAddress.set(fd, 1)
                // Right after `checkpoint --kill`, the application's own connections on this
                // port may still be closing and hold it for a moment: wait up to 1 s for them
                // before calling the port taken.
                var r = SockAddr.bind(fd, addr), err = errno, tries = 0
                while r != 0 && err == EADDRINUSE && tries < 50 {
                    usleep(20_000)
                    tries += 1
                    r = SockAddr.bind(fd, addr); err = errno
                }
                if r != 0 {
                    throw SSIError.sys("bind TCP socket fd \(f.fd) to \(SockAddr.describe(addr, family: s.family))", errno: err,
                                       hint: err == EADDRINUSE ? "another program uses that port now: stop it, then restart again" : nil)
                }
                SocketOption.reuseAddress.set(fd, s.options?["SO_REUSEADDR"] ?? 0)
                if s.state == .listening, listen(fd, s.backlog ?? 128) != 0 {
                    throw SSIError.sys("listen on \(SockAddr.describe(addr, family: s.family))", errno: errno)
                }
            case .connected:
                guard let r = s.tcp, let local = s.address, let peer = s.peerAddress else { continue }
                // Repair mode (tcp(7), linux/tcp.h): bind and connect set up the connection
                // without a packet on the wire; the port may be taken by the listener or a
                // TIME_WAIT leftover, which repair mode is allowed to share (SK_FORCE_REUSE).
                guard SocketOption.tcpRepair.set(fd, 1) else {
                    throw SSIError.sys("TCP_REPAIR", errno: errno, hint: errno == EPERM ? "run as root (CAP_NET_ADMIN)" : nil)
                }
                repairing.append((fd, s.options?["SO_REUSEADDR"] ?? 0))
                let what = "TCP connection \(SockAddr.describe(local, family: s.family)) -> \(SockAddr.describe(peer, family: s.family))"
                if SockAddr.bind(fd, local) != 0 { throw SSIError.sys("bind \(what)", errno: errno) }
                // TCP_QUEUE_SEQ sets where each queue starts; the bytes put back below move
                // it on to the saved value.
                for (q, seq) in [(SocketOption.tcpSendQueue, r.sendSeq &- UInt32(r.sendQueue.count)), (SocketOption.tcpReceiveQueue, r.recvSeq &- UInt32(r.recvQueue.count))] {
                    guard SocketOption.tcpRepairQueue.set(fd, q), SocketOption.tcpQueueSequence.set(fd, Int32(bitPattern: seq)) else {
                        throw SSIError.sys("set the sequence numbers of \(what)", errno: errno)
                    }
                }
                if r.timestamps { SocketOption.tcpTimestamp.set(fd, Int32(bitPattern: r.timestamp)) }
                if SockAddr.connect(fd, peer) != 0 { throw SSIError.sys("connect (repair) \(what)", errno: errno) }
                // struct tcp_repair_opt { opt_code, opt_val }: TCPOPT_MSS 2, WINDOW 3, SACK_PERM 4, TIMESTAMP 8.
                var opts: [UInt32] = [2, r.mss]
                if r.sendWindowScale != 0 || r.recvWindowScale != 0 { opts += [3, UInt32(r.sendWindowScale) | UInt32(r.recvWindowScale) << 16] }
                if r.sack { opts += [4, 0] }
                if r.timestamps { opts += [8, 0] }
                try SocketOption.tcpRepairOptions.set(fd, bytes: opts.withUnsafeBytes { Array($0) }, "TCP_REPAIR_OPTIONS on \(what)")
                for (q, data) in [(SocketOption.tcpReceiveQueue, r.recvQueue), (SocketOption.tcpSendQueue, r.sendQueue)] where !data.isEmpty {
                    // A fresh socket's buffers may be smaller than what was queued on the
                    // autotuned original: grow them to fit (SO_*BUFFORCE, root; the kernel
                    // doubles the value, socket(7)), else the bytes would not go back in.
                    let isSend = q == SocketOption.tcpSendQueue
                    let want = Int32(min(data.count + (64 << 10), Int(Int32.max / 4)))
                    if ((isSend ? SocketOption.sendBuffer : .receiveBuffer).get(fd) ?? 0) < want * 2 {
                        (isSend ? SocketOption.sendBufferForce : .receiveBufferForce).set(fd, want)
                    }
                    SocketOption.tcpRepairQueue.set(fd, q)
                    // In repair mode, bytes sent go straight into the selected queue; the send
                    // queue counts as sent and not yet acknowledged, so TCP retransmits it.
                    var off = 0
                    while off < data.count {
                        let n = data.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                        if n <= 0 { throw SSIError.sys("put back \(data.count) queued bytes on \(what)", errno: errno) }
                        off += n
                    }
                }
                SocketOption.tcpRepairQueue.set(fd, SocketOption.tcpNoQueue)
                if r.window.count == 5 {
                    try SocketOption.tcpRepairWindow.set(fd, bytes: r.window.withUnsafeBytes { Array($0) }, "TCP_REPAIR_WINDOW on \(what)")
                }
            }
        }
        // Both ends exist now: leaving repair mode lets them talk (the window probe it sends
        // reaches a socket, not a reset).
        for (fd, reuse) in repairing {
            SocketOption.tcpRepair.set(fd, 0)
            SocketOption.reuseAddress.set(fd, reuse)   // cleared by leaving repair mode
        }
        repairing = []
    }

    private func applyOptions(_ f: FileDescriptorImage) throws {
        guard let id = f.socketID, let fd = made[id], let s = f.socket else { return }
        for o in keptSocketOptions where o.families.contains(s.family) && o.name != "SO_REUSEADDR" && o.name != "IPV6_V6ONLY" {
            if let v = s.options?[o.name] { o.option.set(fd, v) }
        }
    }
}
