import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Unix sockets: socketpairs, named listeners with their pending connections, accepted
// connections, datagram sockets with their queued messages and the fds in flight in them
// (SCM_RIGHTS). Dump reads them through sock_diag and a copy of the fd; restart builds
// them in ssi in the order that gives every end its name and peer again.

extension ProcessDumper {
    func dumpUnix(_ sock: Int32, inode: UInt32) throws -> SocketImage {
        guard let info = unixSockets[inode] else { throw UnsupportedSocket(kind: "unix socket that sock_diag does not list") }
        let type = Int32(info.type)
        guard [1, 2, 5].contains(type) else { throw UnsupportedSocket(kind: "unix socket of type \(type)") }
        var s = SocketImage(family: 1, type: type, state: .unconnected)
        s.address = info.name.map { Data($0) }
        if let name = info.name, name.first != 0, name.first != UInt8(ascii: "/") {
            // Bound to a path relative to the cwd it had then (unix(7)); the kernel keeps the
            // name as given, so the restart binds the same name from that directory.
            let rel = SockAddr.describe(Data(name), family: 1)
            guard let file = UnixSocketFile.path(of: sock), file.hasSuffix("/" + rel) else {
                throw UnsupportedSocket(kind: "unix socket bound to the relative path \(rel), whose file cannot be found (SIOCUNIXFILE needs Linux 6.11)")
            }
            s.bindDirectory = String(file.dropLast(rel.count + 1))
        } else if let name = info.name, name.first == UInt8(ascii: "/") {
            // The kernel keeps the name bound; the file may have moved or gone since.
            switch UnixSocketFile.location(of: sock) {
            case .removed: s.fileRemoved = true
            case .path(let p) where p != SockAddr.describe(Data(name), family: 1): s.filePath = p
            default: break
            }
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
        // A seqpacket socket whose peer is gone (shut down for reading) reads 0 at the end:
        // that is its EOF, not an empty message.
        // An unconnected seqpacket socket has no queue: reading it fails with ENOTCONN.
        if s.state != .listening, info.receiveQueue > 0 || type == 2 || (type == 5 && s.state == .connected) {
            s.datagrams = try peekAll(sock, datagrams: type != 1, eofAtEnd: type == 5 && info.shutdown & 1 != 0)
        }
        // An urgent byte (send(2) MSG_OOB, unix streams since Linux 5.15) not read yet: a peek
        // passes over it, or (SO_OOBINLINE) takes it as an ordinary byte with no mark to stop
        // a read at, and nothing queues one again in its place. poll(2) says POLLPRI while
        // one is queued (unix_poll), inline or not.
        var pri = pollfd(fd: sock, events: Int16(POLLPRI), revents: 0)
        if type == 1, s.state == .connected, poll(&pri, 1, 0) == 1, pri.revents & Int16(POLLPRI) != 0 {
            throw UnsupportedSocket(kind: "unix stream socket with an urgent byte (MSG_OOB) not read yet")
        }
        s.shutdown = info.shutdown == 0 ? nil : Int32(info.shutdown)
        if type != 2, s.state != .unconnected { s.peerCredentials = Self.peerCredentials(sock) }
        if let name = info.name, name.first == UInt8(ascii: "/") || s.bindDirectory != nil, s.fileRemoved != true {
            var st = stat()
            let path = s.filePath ?? SocketRebuilder.filePath(Data(name), s)
            if stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK {
                s.fileTimes = FileTimes.get(path)
                s.directoryTimes = FileTimes.get((path as NSString).deletingLastPathComponent)
                s.fileMode = UInt32(st.st_mode & 0o7777); s.fileUID = st.st_uid; s.fileGID = st.st_gid
            }
        }
        return s
    }

    /// Everything queued to `sock`, without consuming it: SO_PEEK_OFF (socket(7)) makes each
    /// MSG_PEEK start where the previous one ended, so every message is seen once.
    /// On a stream, a peek goes on from skb to skb until one carries fds, whatever the size
    /// asked (unix_stream_read_generic, Linux 6.18: even a one-byte peek returns the fds of the
    /// next write that has some), so where that write begins cannot be told: its fds come
    /// back with the unread bytes of the writes before it, as a read with a large buffer
    /// receives them anyway; a reader reading exactly up to that write sees them early.
    func peekAll(_ sock: Int32, datagrams: Bool, eofAtEnd: Bool = false) throws -> [QueuedDatagram] {
        // The application's own peek offset is put back afterwards.
        let appPeekOffset = SocketOption.peekOffset.get(sock) ?? -1
        guard SocketOption.peekOffset.set(sock, 0) else { throw SSIError.sys("SO_PEEK_OFF on a socket of PID \(pid)", errno: errno) }
        defer { SocketOption.peekOffset.set(sock, appPeekOffset) }
        var out = [QueuedDatagram]()
        // A unix datagram can be as big as the sender's send buffer; a peek that does not
        // take the whole message would leave the offset inside it.
        let sndbuf = Int(SocketOption.sendBuffer.get(sock) ?? 0)
        var buf = [UInt8](repeating: 0, count: max(4 << 20, 2 * sndbuf))
        // With SO_PASSCRED the program reads each message's sender (SCM_CREDENTIALS), and a
        // stream read stops where the sender changes (unix_stream_read_generic): kept.
        let passCredentials = (SocketOption.passCredentials.get(sock) ?? 0) != 0
        while true {
            guard let peeked = try Socket.peek(sock, buffer: &buf, what: "peek a socket of PID \(pid)") else { break }
            // A peek installs the fds in flight in ssi: copies of the very files, which are
            // described like any fd, then closed.
            let held = peeked.fds ?? []
            defer { for fd in held { close(fd) } }
            if peeked.bytes.isEmpty {
                // Stream: end of file. A datagram of no bytes would not move the peek offset.
                if (!datagrams || eofAtEnd) && held.isEmpty { break }
                throw UnsupportedSocket(kind: "unix socket with an empty message queued")
            }
            if peeked.fds == nil { throw UnsupportedSocket(kind: "unix socket with more file descriptors in flight in one message than can be read") }
            var msg = QueuedDatagram(data: Data(peeked.bytes), sender: nil)
            if passCredentials, let c = peeked.credentials { msg.credentials = PeerCredentials(pid: c.pid, uid: c.uid, gid: c.gid) }
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
    func describeInFlight(_ fd: Int32, index: Int32) throws -> FileDescriptorImage {
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
            d.rootNetworkNamespace = rootNetworkNamespace
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
        case S_IFIFO where link.hasPrefix("pipe:["):
            // A pipe end in flight: the pipe is rebuilt with the application's (Pipes.swift,
            // which counts this end as inside it), its bytes peeked here.
            var img = FileDescriptorImage(fd: index, kind: .pipe, path: link, flags: flags, closeOnExec: false, position: 0)
            img.pipeID = UInt64(st.st_ino)
            (img.pipeData, img.pipeSize) = try ProcessDumper(pid: me).peekPipe(fd: fd)
            return img
        default:
            throw UnsupportedSocket(kind: "unix socket with a file descriptor in flight (SCM_RIGHTS) that is \(link)")
        }
    }
}

extension SocketRebuilder {
    /// A unix stream socket bound to the name of a listener it was accepted from: its name is
    /// the listener's, not its own binding.
    func isAccepted(_ f: FileDescriptorImage, _ s: SocketImage) -> Bool {
        s.state == .connected && s.type != 2 && s.address != nil && !isNamedClient(f, s)
    }

    /// A client that had a name of its own when it connected (bound first, or autobound
    /// because it had SO_PASSCRED set: unix(7)), connected to a listener of the application:
    /// its name is no listener's, and its peer's is. Bound again before it connects, so that
    /// both ends name it as before (it came back unnamed).
    func isNamedClient(_ f: FileDescriptorImage, _ s: SocketImage) -> Bool {
        guard s.state == .connected, s.type != 2, let name = s.address, listenerID(named: name) == nil,
              let peer = f.peerID, let pf = images[peer], let lname = state(pf).address else { return false }
        return listenerID(named: lname) != nil
    }

    /// Unix sockets, in steps: named sockets, established connections, pending clients, the
    /// rest, queued data, datagram connections, shutdowns.
    func buildUnix(_ socks: [FileDescriptorImage]) throws {
        try bindNamed(socks)
        try connectEstablished(socks)
        try connectPending(socks)
        try createTheRest(socks)
        try requeueData(socks)
        try connectDatagrams(socks)
        try replayShutdown(socks)
    }

    /// Sockets with a name of their own: bound first (listeners listen).
    private func bindNamed(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, let name = s.address, !isAccepted(f, s) else { continue }
            try freeName(name, for: f)
            let fd = try newSocket(AF_UNIX, s.type, "unix socket \(SockAddr.describe(name, family: 1))")
            made[id] = fd
            var (addr, len) = SockAddr.unix(name)
            let (r, err) = SocketRebuilder.bind(fd, withUnsafeBytes(of: &addr) { Array($0.prefix(Int(len))) }, from: s.bindDirectory)
            if r != 0 {
                throw SSIError.sys("bind unix socket to \(SockAddr.describe(name, family: 1))\(s.bindDirectory.map { " in \($0)" } ?? "")", errno: err,
                                   hint: "another program uses that name now: stop it, then restart again")
            }
            if name.first != 0, s.fileRemoved == true {
                // Bound, its file removed again: the name stays, no file leads to it.
                unlink(SocketRebuilder.filePath(name, s))
            } else if name.first != 0, let moved = s.filePath {
                // The file where the program had moved it: a socket file the killed copy left
                // there is replaced, one a running program listens on refuses the restart.
                try freeName(Data(moved.utf8), for: f)
                if rename(SocketRebuilder.filePath(name, s), moved) != 0 {
                    throw SSIError.sys("move the file of unix socket \(SockAddr.describe(name, family: 1)) to \(moved), where it was", errno: errno)
                }
            }
            if name.first != 0, s.fileRemoved != true, let mode = s.fileMode {
                let path = s.filePath ?? SocketRebuilder.filePath(name, s)
                chmod(path, mode_t(mode))
                if let u = s.fileUID, let g = s.fileGID { chown(path, u, g) }
                // Binding made the file (and removing the old one changed the directory):
                // their times go back to what the application had.
                FileTimes.set(path, s.fileTimes)
                FileTimes.set((path as NSString).deletingLastPathComponent, s.directoryTimes)
            }
            if s.state == .listening, creators.listen(fd, s.backlog ?? 128, as: s.peerCredentials) != 0 {
                throw SSIError.sys("listen on \(SockAddr.describe(name, family: 1))", errno: errno)
            }
        }
    }

    /// Established stream connections: through their listener when it is rebuilt (so
    /// both ends keep their names), as a socketpair otherwise. Accepted at once, so the
    /// listener's queue then holds only the connections that were pending.
    private func connectEstablished(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, s.state == .connected, let peer = f.peerID, let pf = images[peer] else { continue }
            if s.type == 2 && (s.address != nil || state(pf).address != nil) { continue }   // named datagram: step 1 and 5
            // Neither end made yet; or the client alone, bound to its own name (bindNamed).
            let clientBound = (made[id] != nil && isNamedClient(f, s)) || (made[peer] != nil && isNamedClient(pf, state(pf)))
            guard (made[id] == nil && made[peer] == nil) || (clientBound && (made[id] == nil || made[peer] == nil)) else { continue }
            let server = isAccepted(f, s) ? f : (isAccepted(pf, state(pf)) ? pf : nil)
            if let server, let lname = state(server).address, let lid = listenerID(named: lname), let lfd = made[lid] {
                let client = server.socketID == id ? pf : f
                let cfd: Int32
                if let bound = made[client.socketID!] { cfd = bound } else {
                    cfd = try newSocket(AF_UNIX, s.type, "a connection to \(SockAddr.describe(lname, family: 1))")
                    made[client.socketID!] = cfd
                }
                // The client reads as its peer the listener's credentials when it connected,
                // the accepted end the connecting process's (SO_PEERCRED, PeerCredentials.swift).
                listenAs(lid, lfd, state(client).peerCredentials)
                if creators.connect(cfd, Data(unixAddr(lname)), as: state(server).peerCredentials) != 0 {
                    throw SSIError.sys("connect to \(SockAddr.describe(lname, family: 1))", errno: errno)
                }
                let sfd = accept(lfd, nil, nil)
                if sfd < 0 { throw SSIError.sys("accept on \(SockAddr.describe(lname, family: 1))", errno: errno) }
                made[server.socketID!] = sfd
            } else {
                let (a, b) = try creators.socketpair(s.type, as: s.peerCredentials ?? state(pf).peerCredentials)
                made[id] = a; made[peer] = b
            }
        }
    }

    /// A listener's credentials as they were when a client connected (listen(2) sets them
    /// again each time it is called; the client copies them at connect(2)). The listener's
    /// own are given back once every client is connected (`relisten`).
    private func listenAs(_ lid: UInt32, _ lfd: Int32, _ creds: PeerCredentials?) {
        guard let creds, let l = images[lid], state(l).peerCredentials != creds else { return }
        if creators.listen(lfd, state(l).backlog ?? 128, as: creds) == 0 { relistened.insert(lid) }
    }

    private func relisten() {
        for lid in relistened.sorted() {
            guard let l = images[lid], let lfd = made[lid] else { continue }
            _ = creators.listen(lfd, state(l).backlog ?? 128, as: state(l).peerCredentials)
        }
        relistened = []
    }

    /// Connections waiting to be accepted, in their order.
    private func connectPending(_ socks: [FileDescriptorImage]) throws {
        defer { relisten() }
        for f in socks {
            let s = state(f)
            guard s.state == .listening, let name = s.address else { continue }
            for c in s.pendingClients ?? [] where made[c] == nil {
                let cfd = try newSocket(AF_UNIX, s.type, "a pending connection to \(SockAddr.describe(name, family: 1))")
                made[c] = cfd
                if let id = f.socketID, let lfd = made[id], let client = images[c] { listenAs(id, lfd, state(client).peerCredentials) }
                if SockAddr.connect(cfd, Data(unixAddr(name))) != 0 {
                    throw SSIError.sys("connect a pending client to \(SockAddr.describe(name, family: 1))", errno: errno)
                }
            }
        }
    }

    /// The rest: unnamed, unconnected sockets (and datagram sockets connected by name);
    /// a connection whose peer was closed becomes a socketpair whose other end is
    /// closed once the unread bytes are back in.
    /// A connected socket whose peer is gone (closed, or an accepted stream whose client
    /// left): made as one end of a new socketpair whose other end sends the queued messages
    /// and is closed, which leaves it as it was: messages to read, then EOF (stream,
    /// seqpacket) or ECONNREFUSED on send (datagram, unix(7)).
    func rebuiltAsPair(_ f: FileDescriptorImage, _ s: SocketImage) -> Bool {
        guard s.state == .connected else { return false }
        if s.type != 2 { return f.peerID == nil }
        return s.address == nil && s.peerAddress == nil && (f.peerID == nil || images[f.peerID!] == nil)
    }

    private func createTheRest(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, made[id] == nil else { continue }
            if rebuiltAsPair(f, s) {
                let (mine, other) = try creators.socketpair(s.type, as: s.peerCredentials)
                made[id] = mine
                defer { close(other) }
                let messages = s.datagrams ?? (f.socketData.map { [QueuedDatagram(data: $0, sender: nil)] } ?? [])
                for d in messages { try sendMessage(d, from: other, to: nil, what: "unix socket fd \(f.fd)") }
                continue
            }
            made[id] = try newSocket(AF_UNIX, s.type, "an unnamed unix socket")
        }
    }

    /// Queued data, sent again by the peer (or, for datagrams, by the sender when it is
    /// ours, else by an unnamed socket), before datagram sockets connect: a connected
    /// datagram socket only accepts its peer's messages (unix_may_send).
    private func requeueData(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            let s = state(f)
            guard let id = f.socketID, let fd = made[id] else { continue }
            if rebuiltAsPair(f, s) { continue }   // done in 4
            if s.type == 1, let data = f.socketData, !data.isEmpty {
                guard let peer = f.peerID, let pfd = made[peer] else { continue }
                try SocketRebuilder.sendAll(data, from: pfd, what: "unix socket fd \(f.fd)")
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
    }

    /// Puts `data` back in the queue of the socket connected to `sender`. A unix stream's
    /// bytes in flight count against the SENDER's buffer (unix_stream_sendmsg waits on its
    /// sk_sndbuf), and the program may have raised its buffers (SO_SNDBUFFORCE) to queue
    /// megabytes, more than a fresh socket takes: the sender's is forced above the bytes
    /// for the send (the kernel doubles the value, for its bookkeeping) and set back after.
    /// Sent in as many pieces as the kernel takes.
    static func sendAll(_ data: Data, from sender: Int32, what: String) throws {
        let restore = makeSendRoom(sender, for: data.count)
        defer { restore() }
        var done = 0
        while done < data.count {
            let n = data.withUnsafeBytes { send(sender, $0.baseAddress! + done, $0.count - done, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n <= 0 {
                throw SSIError.sys("requeue \(data.count) bytes on \(what) (\(done) went back)", errno: n < 0 ? errno : EAGAIN,
                                   hint: "the snapshot is intact; the restart stopped before any process ran")
            }
            done += n
        }
    }

    /// Forces `sender`'s send buffer above `bytes` if it is not (SO_SNDBUFFORCE, as root);
    /// returns what sets it back.
    static func makeSendRoom(_ sender: Int32, for bytes: Int) -> () -> Void {
        guard let before = SocketOption.sendBuffer.get(sender), bytes + 65536 > Int(before) / 2 else { return {} }
        _ = SocketOption.sendBufferForce.set(sender, Int32(clamping: min(bytes * 2 + (1 << 20), Int(Int32.max) / 2)))
        return { _ = SocketOption.sendBufferForce.set(sender, before / 2) }
    }

    /// Datagram sockets connected to a name.
    private func connectDatagrams(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            let s = state(f)
            guard s.type == 2, s.state == .connected, let id = f.socketID, let fd = made[id], let peerName = s.peerAddress else { continue }
            if let peer = f.peerID, let pf = images[peer], state(pf).address == nil { continue }   // a socketpair
            if SockAddr.connect(fd, Data(unixAddr(peerName))) != 0 {
                throw SSIError.sys("reconnect datagram socket fd \(f.fd) to \(SockAddr.describe(peerName, family: 1))", errno: errno,
                                   hint: "the program that owned that name is gone: start it again, then restart")
            }
        }
    }

    /// shutdown(2) last, once the data is back.
    private func replayShutdown(_ socks: [FileDescriptorImage]) throws {
        for f in socks {
            guard let id = f.socketID, let fd = made[id], let sh = state(f).shutdown, sh != 0 else { continue }
            _ = Glibc.shutdown(fd, sh == 3 ? Int32(SHUT_RDWR) : (sh == 1 ? Int32(SHUT_RD) : Int32(SHUT_WR)))
        }
    }

    func requeue(_ d: QueuedDatagram, to f: FileDescriptorImage, _ s: SocketImage, fd: Int32) throws {
        if let name = s.address, s.type == 2 {
            // Sent to its name, from the socket that sent it if that one is ours.
            var from: Int32 = -1
            var temporary = false
            if let sender = d.sender, let sid = images.first(where: { state($0.value).address == sender && state($0.value).type == s.type })?.key {
                from = made[sid] ?? -1
            }
            var putBack: () -> Void = {}
            if from < 0 { (from, putBack) = try standInSender(d.sender, type: s.type); temporary = true }
            defer { if temporary { close(from); putBack() } }
            try sendMessage(d, from: from, to: Data(unixAddr(name)), what: "unix socket fd \(f.fd)")
        } else if let peer = f.peerID, let pfd = made[peer] {
            try sendMessage(d, from: pfd, to: nil, what: "unix socket fd \(f.fd)")
        } else {
            throw SSIError(.unsupported, "unix socket fd \(f.fd) has queued messages but neither a name nor a peer to receive them again")
        }
    }

    /// Sends one saved message again, with its fds in flight: sockets rebuilt here, files
    /// reopened by ssi at their offset.
    func sendMessage(_ d: QueuedDatagram, from: Int32, to addr: Data?, what: String) throws {
        var fds = [Int32]()
        var opened = [Int32]()
        defer { for fd in opened { close(fd) } }
        for g in d.files ?? [] {
            if g.kind.isSocket {
                guard let id = g.socketID, let fd = made[id] else { throw SSIError(.corrupt, "\(what): a socket in flight was not rebuilt") }
                fds.append(fd)
                continue
            }
            var path = g.path
            if g.kind == .pipe {
                guard let id = g.pipeID, let p = pipes?.path(id, write: g.flags & O_ACCMODE == O_WRONLY) else {
                    throw SSIError(.corrupt, "\(what): a pipe in flight was not rebuilt")
                }
                path = p
            }
            let fd = open(path, g.flags & ~(O_CREAT | O_TRUNC | O_EXCL) | O_CLOEXEC | O_NOCTTY)
            if fd < 0 { throw SSIError.sys("\(what): reopen \(g.path), in flight in a queued message", errno: errno, hint: "put the file back, then restart again") }
            opened.append(fd)
            lseek(fd, off_t(g.position), SEEK_SET)
            fds.append(fd)
        }
        // A message of megabytes (buffers the program raised): room for it in the sender's
        // buffer first, or the send fails (datagram: EMSGSIZE) or waits for good (stream).
        let restore = SocketRebuilder.makeSendRoom(from, for: d.data.count)
        defer { restore() }
        let n = d.credentials.map { creators.send(from, d.data, to: addr, fds: fds, as: $0) } ?? Socket.send(from, d.data, to: addr, fds: fds)
        if n != d.data.count { throw SSIError.sys("requeue a \(d.data.count)-byte message on \(what)", errno: n < 0 ? Int32(-n) : EMSGSIZE) }
    }

    /// A socket that sends a queued datagram in place of its sender, which no longer exists:
    /// bound to the sender's name so that recvfrom(2) gives it as before. An abstract name is
    /// simply taken; a path is usually still there (a closed socket leaves its file): that
    /// file is moved aside for the bind and put back after the send (the returned closure),
    /// with its directory's times. Unnamed, or a name taken by a live socket: unbound.
    func standInSender(_ sender: Data?, type: Int32) throws -> (Int32, () -> Void) {
        let fd = try newSocket(AF_UNIX, type, "requeue a datagram")
        guard let sender, !sender.isEmpty else { return (fd, {}) }
        if sender.first == 0 {
            _ = SockAddr.bind(fd, Data(unixAddr(sender)))
            return (fd, {})
        }
        let path = SocketRebuilder.filePath(sender, nil)
        var st = stat()
        guard path.hasPrefix("/"), lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK else {
            if path.hasPrefix("/") && lstat(path, &st) != 0, SockAddr.bind(fd, Data(unixAddr(sender))) == 0 {
                return (fd, { unlink(path) })
            }
            return (fd, {})
        }
        let probe = socket(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        let live = SockAddr.connect(probe, Data(unixAddr(sender))) == 0
        close(probe)
        if live { return (fd, {}) }
        let dir = (path as NSString).deletingLastPathComponent
        let dirTimes = FileTimes.get(dir)
        let aside = "\(path).ssi-aside-\(getpid())"
        guard rename(path, aside) == 0 else { return (fd, {}) }
        _ = SockAddr.bind(fd, Data(unixAddr(sender)))
        return (fd, {
            unlink(path)
            rename(aside, path)
            FileTimes.set(dir, dirTimes)
        })
    }

    /// The socket file of a name, absolute: a relative name is in the directory it was bound
    /// from.
    static func filePath(_ name: Data, _ s: SocketImage?) -> String {
        let path = SockAddr.describe(name, family: 1)
        guard name.first != UInt8(ascii: "/"), let dir = s?.bindDirectory else { return path }
        return dir + "/" + path
    }

    /// bind(2) with `dir` as the cwd (when given), on a thread of its own that stops sharing
    /// the cwd with the rest of ssi (unshare(2) CLONE_FS), so that a relative name lands
    /// where it was; returns bind's result and errno.
    static func bind(_ fd: Int32, _ addr: [UInt8], from dir: String?) -> (Int32, Int32) {
        @Sendable func body() -> Int32 { SockAddr.bind(fd, Data(addr)) }
        guard let dir else { let r = body(); return (r, errno) }
        nonisolated(unsafe) var result: (Int32, Int32) = (-1, ENOENT)   // written by the thread, read after the semaphore
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            defer { done.signal() }
            let e = ThreadFS.unshareCwd()
            guard e == 0 else { result = (-1, e); return }
            guard chdir(dir) == 0 else { result = (-1, errno); return }
            let r = body()
            result = (r, errno)
        }
        t.start()
        done.wait()
        return result
    }

    /// The address to reach `name` from ssi: a relative name (bound from another cwd) by the
    /// absolute path of its file.
    func unixAddr(_ name: Data) -> [UInt8] {
        var target = name
        if let n = name.first, n != 0, n != UInt8(ascii: "/"),
           let owner = images.values.first(where: { state($0).address == name && state($0).bindDirectory != nil }) {
            target = Data(SocketRebuilder.filePath(name, owner.socket).utf8)
        }
        var (a, len) = SockAddr.unix(target)
        return withUnsafeBytes(of: &a) { Array($0.prefix(Int(len))) }
    }

    func listenerID(named name: Data) -> UInt32? {
        images.first { state($0.value).state == .listening && state($0.value).address == name }?.key
    }

    /// A path name is free when nothing is there, or only the socket file the application
    /// left (no one accepts on it: connect fails with ECONNREFUSED); that file is removed.
    func freeName(_ name: Data, for f: FileDescriptorImage) throws {
        guard name.first == UInt8(ascii: "/") || f.socket?.bindDirectory != nil else { return }
        let path = SocketRebuilder.filePath(name, f.socket)
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
                if let takeover, takeover.enabled { try takeover.moveAside(path); return }
                throw SSIError(.busy, "unix socket \(path) is in use by a running program, so fd \(f.fd) cannot take it back; nothing was changed",
                               hint: "stop the program listening on \(path), then restart again")
            }
        }
        unlink(path)
    }
}
