import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// TCP sockets: listeners, bound sockets, and connections whose two ends are both inside the
// application, read and rebuilt in repair mode (TCP_REPAIR, tcp(7)): sequence numbers, both
// queues, negotiated options and window, with no packet on the wire.

extension ProcessDumper {
    func dumpTCP(_ sock: Int32, family: Int32, inode: UInt32) throws -> SocketImage {
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
        case 1, 4, 5, 8, 9, 11: // ESTABLISHED; FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING
            s.state = .connected
            s.peerAddress = SockAddr.name(sock, peer: true)
            // A half-closed connection (a peer that closed with bytes unread: CLOSE_WAIT; a
            // client that shut its side down: FIN_WAIT2): saved as established with where
            // each FIN stands, and rebuilt so (repairTCP, buildTCP). Its peer must be inside
            // the application (checkSockets).
            s.tcp = try repairDump(sock, info: info, finSent: [4, 5, 9, 11].contains(state), finReceived: [8, 9, 11].contains(state))
            // shutdown(SHUT_RD) leaves the state ESTABLISHED (only SHUT_WR sends a FIN):
            // inet_diag's shutdown bits tell (RCV_SHUTDOWN 1).
            if let sh = InetDiag.shutdown(family: family, protocol: Int32(IPPROTO_TCP), inode: inode), sh & 1 != 0 { s.shutdown = 1 }
        default:
            let names = [2: "SYN_SENT", 3: "SYN_RECV", 6: "TIME_WAIT"]
            throw UnsupportedSocket(kind: "TCP socket in state \(names[Int(state)] ?? "\(state)")")
        }
        return s
    }

    /// Reads a connection's sequence numbers, queues and options in repair mode (tcp(7),
    /// TCP_REPAIR needs CAP_NET_ADMIN). Leaving repair mode sends a window probe, which the
    /// peer answers like any duplicate ACK: the connection goes on unchanged.
    /// `finSent`, `finReceived`: the connection is half-closed (dumpTCP). The FIN this end sent
    /// counts in the send queue's sequence number (write_seq) and, until acknowledged, in
    /// SIOCOUTQ, with no byte to read; the peer's counts in the receive queue's (rcv_nxt) and
    /// not in SIOCINQ (tcp_inq). Both are taken off, so that the numbers are those of the
    /// data, and the FINs are sent again after it at restart.
    func repairDump(_ sock: Int32, info: [UInt8], finSent: Bool = false, finReceived: Bool = false) throws -> TCPRepairState {
        // Urgent data not read yet (send(2) MSG_OOB, tcp(7)): a peek stops at its mark, and
        // repair mode has no way to queue a byte as urgent again, so the connection cannot be
        // saved whole. tcp_poll reports it as POLLPRI.
        var urgent = pollfd(fd: sock, events: Int16(POLLPRI), revents: 0)
        if poll(&urgent, 1, 0) > 0 && urgent.revents & Int16(POLLPRI) != 0 {
            throw UnsupportedSocket(kind: "TCP connection with urgent data (MSG_OOB) not read yet (repair mode cannot queue it as urgent again; once the program has read it, a checkpoint succeeds)")
        }
        return try inRepairMode(sock) { try repairRead(sock, info: info, finSent: finSent, finReceived: finReceived) }
    }

    /// Runs `body` with `sock` in repair mode, the program's settings that entering and
    /// leaving it would change put back after:
    /// - SO_REUSEADDR: the kernel sets sk_reuse to SK_FORCE_REUSE, then SK_NO_REUSE; the
    ///   connection would otherwise end in a TIME_WAIT that keeps its own listener from
    ///   binding the port again after a restart;
    /// - a peek offset the program set (SO_PEEK_OFF, TCP since Linux 6.10), which would make
    ///   the queues' peeks start past their first bytes and move the offset: off meanwhile.
    func inRepairMode<T>(_ sock: Int32, _ body: () throws -> T) throws -> T {
        let reuse = SocketOption.reuseAddress.get(sock) ?? 0
        let peekOffset = SocketOption.peekOffset.get(sock) ?? -1
        if peekOffset >= 0 { SocketOption.peekOffset.set(sock, -1) }
        defer { if peekOffset >= 0 { SocketOption.peekOffset.set(sock, peekOffset) } }
        guard SocketOption.tcpRepair.set(sock, 1) else {
            throw SSIError.sys("TCP_REPAIR on a socket of PID \(pid)", errno: errno, hint: errno == EPERM ? "run as root (CAP_NET_ADMIN)" : nil)
        }
        defer {
            SocketOption.tcpRepair.set(sock, 0)
            SocketOption.reuseAddress.set(sock, reuse)
        }
        return try body()
    }

    /// repairDump's reading, the socket in repair mode.
    private func repairRead(_ sock: Int32, info: [UInt8], finSent: Bool, finReceived: Bool) throws -> TCPRepairState {
        var inq: Int32 = 0, outq: Int32 = 0, notSent: Int32 = 0
        if ioctl(sock, SocketIoctl.inputQueue, &inq) != 0 || ioctl(sock, SocketIoctl.outputQueue, &outq) != 0 {
            throw SSIError.sys("PID \(pid): queue sizes of a TCP connection (SIOCINQ/SIOCOUTQ)", errno: errno)
        }
        if ioctl(sock, SocketIoctl.outputQueueNotSent, &notSent) != 0 { notSent = 0 }
        func queue(_ q: Int32, _ count: Int32) throws -> (UInt32, Data) { try repairQueue(sock, q, count: count) }
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
        var state = TCPRepairState(sendSeq: finSent ? sendSeq &- 1 : sendSeq, recvSeq: finReceived ? recvSeq &- 1 : recvSeq, sendQueue: sendQueue,
                                   recvQueue: recvQueue, mss: mss, sendWindowScale: scales & 0xf, recvWindowScale: scales >> 4, sack: opts & 2 != 0,
                                   timestamps: opts & 1 != 0, timestamp: UInt32(bitPattern: stamp),
                                   window: win)
        if finSent { state.finSent = true }
        if finReceived {
            state.finReceived = true
            // rcv_wup may stand past the FIN; TCP_REPAIR_WINDOW refuses one after rcv_nxt.
            if state.window.count == 5, Int32(bitPattern: state.window[4] &- state.recvSeq) > 0 { state.window[4] = state.recvSeq }
        }
        state.timestampRead = Clock.nanoseconds(Clock.realtime)
        if notSent > 0 && notSent <= outq { state.unsent = UInt32(notSent) }
        return state
    }

    /// One queue of a connection in repair mode (TCP_REPAIR_QUEUE `q`), of `count` bytes as
    /// SIOCINQ or SIOCOUTQ said: its sequence number (TCP_QUEUE_SEQ) and its bytes.
    /// Segments between two ends of the application are still processed while it is
    /// frozen (the freeze stops programs, not their kernel's TCP: two full windows go on
    /// exchanging probes, and a receive queue the kernel collapses into less memory opens
    /// its window again), so a queue may change while it is read: the receive queue grows
    /// at its end, the send queue loses acknowledged bytes at its head (its end, write_seq,
    /// cannot move: the program is stopped). The send queue is what a peek returns, the
    /// last bytes before its sequence number; the receive queue is read again until its
    /// sequence number did not move during the read.
    func repairQueue(_ sock: Int32, _ q: Int32, count firstCount: Int32) throws -> (UInt32, Data) {
        func sequence() throws -> UInt32 {
            guard let rawSeq = SocketOption.tcpQueueSequence.get(sock) else {
                throw SSIError.sys("PID \(pid): sequence number of a TCP connection (TCP_QUEUE_SEQ)", errno: errno)
            }
            return UInt32(bitPattern: rawSeq)
        }
        guard SocketOption.tcpRepairQueue.set(sock, q) else { throw SSIError.sys("TCP_REPAIR_QUEUE", errno: errno) }
        let receive = q == SocketOption.tcpReceiveQueue
        for attempt in 0..<5 {
            let seq = try sequence()
            // The receive queue's size again on a second reading: bytes came meanwhile.
            var count = firstCount
            if receive && attempt > 0 {
                var inq: Int32 = 0
                if ioctl(sock, SocketIoctl.inputQueue, &inq) != 0 { throw SSIError.sys("PID \(pid): SIOCINQ of a TCP connection", errno: errno) }
                count = inq
            }
            guard count > 0 else {
                if receive, try sequence() != seq { continue }
                return (seq, Data())
            }
            var buf = [UInt8](repeating: 0, count: Int(count))
            // In repair mode a peek reads the selected queue, the send queue included.
            let n = recv(sock, &buf, buf.count, Int32(MSG_PEEK | MSG_DONTWAIT))
            if n < 0 || (receive && n != Int(count)) {
                throw SSIError(.system, "PID \(pid): read \(n) of the \(count) bytes queued on a TCP connection")
            }
            var data = Data(buf.prefix(n))
            if receive, SocketOption.peekOffset.set(sock, count) {
                // SIOCINQ counts up to an urgent mark ahead (tcp_inq): once the program has
                // read the urgent byte (MSG_OOB), its place in the stream is a hole reads skip,
                // and the bytes past it are not counted. A peek from there takes them (it
                // skips the hole, as the program's reads will): the restored queue is the bytes
                // the program has yet to read, ending at the same sequence number.
                // One peek, as large as the queue can be: the offset it moves on by counts the
                // bytes copied, not the hole, so a second peek would read the last byte again.
                var more = [UInt8](repeating: 0, count: max(1 << 16, 2 * Int(SocketOption.receiveBuffer.get(sock) ?? 0)))
                let m = recv(sock, &more, more.count, Int32(MSG_PEEK | MSG_DONTWAIT))
                if m > 0 { data.append(contentsOf: more[..<m]) }
                SocketOption.peekOffset.set(sock, -1)
            }
            if receive, try sequence() != seq { continue }
            return (seq, data)
        }
        throw SSIError(.state, "PID \(pid): a TCP connection of the application kept receiving while it was read (frozen, its peer's kernel still sends); nothing was written and the application goes on",
                       hint: "checkpoint again")
    }

    /// Once every socket of the application has been read, the receive queues of its
    /// connections between two of its own ends are read again. The two ends were read one
    /// after the other while their kernel still moved data between them (repairQueue): a
    /// receiver read before its sender could have taken more bytes since, which the sender,
    /// read after, no longer has queued (acknowledged). Rebuilt so, those bytes were in
    /// neither queue: the receiver waited for them for good (tcpmore.c's two full windows
    /// stalled 1 run in 5). Read last, every receive queue reaches at least where its
    /// sender's queue begins; bytes in both are sent again and dropped by the receiver as
    /// old, as TCP does.
    static func rereadReceiveQueues(_ tables: inout [Int32: [FileDescriptorImage]], exitedLeaders: [Int32: Int32]) throws {
        for (pid, fds) in tables {
            for (i, f) in fds.enumerated() {
                guard f.kind == .tcpSocket, f.external != true, let s = f.socket, s.state == .connected, var r = s.tcp, r.peerGone != true else { continue }
                let d = ProcessDumper(pid: exitedLeaders[pid] ?? pid)
                let sock = try d.fdCopy(fd: f.fd)
                defer { close(sock) }
                let (seq, data) = try d.inRepairMode(sock) { () throws -> (UInt32, Data) in
                    var inq: Int32 = 0
                    if ioctl(sock, SocketIoctl.inputQueue, &inq) != 0 { throw SSIError.sys("PID \(pid): SIOCINQ of a TCP connection", errno: errno) }
                    defer { SocketOption.tcpRepairQueue.set(sock, SocketOption.tcpNoQueue) }
                    return try d.repairQueue(sock, SocketOption.tcpReceiveQueue, count: inq)
                }
                r.recvSeq = r.finReceived == true ? seq &- 1 : seq
                r.recvQueue = data
                if r.window.count == 5, Int32(bitPattern: r.window[4] &- r.recvSeq) > 0 { r.window[4] = r.recvSeq }
                tables[pid]![i].socket?.tcp = r
            }
        }
    }
}

extension SocketRebuilder {
    func buildTCP(_ socks: [FileDescriptorImage]) throws {
        // Where each connection's receive queue ends, by its two ends' addresses, for its
        // peer's send queue (trimmedToPeer).
        for f in socks {
            guard let s = f.socket, s.state == .connected, let r = s.tcp, let key = Self.connectionKey(s.address, s.peerAddress, s.family) else { continue }
            receivedByConnection[key] = r.recvSeq
        }
        for (f, s, fd) in try newInetSockets(socks, type: 1, "TCP") {
            switch s.state {
            case .listening, .unconnected: try bindTCP(f, s, fd: fd)
            case .connected: try repairTCP(f, s, fd: fd)
            }
        }
        // Both ends exist now: leaving repair mode lets them talk (the window probe it sends
        // reaches a socket, not a reset).
        for (fd, reuse) in repairing {
            SocketOption.tcpRepair.set(fd, 0)
            SocketOption.reuseAddress.set(fd, reuse)   // cleared by leaving repair mode
        }
        repairing = []
        for fd in shutReading { Glibc.shutdown(fd, Int32(SHUT_RD)) }
        shutReading = []
        disconnectStale()
        // Bytes the application had written and TCP had not sent yet: written now, as the
        // application would have had them sent (in repair mode they would count as sent and
        // lost, and go out one retransmission timeout at a time).
        for (fd, data, what) in unsentTCP {
            var off = 0
            while off < data.count {
                let n = data.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                if n <= 0 { throw SSIError.sys("send the \(data.count) unsent bytes of \(what) again", errno: errno) }
                off += n
            }
        }
        unsentTCP = []
        // Half-closed connections: each FIN sent again after the data, from the end that had
        // sent it; its peer, rebuilt before the FIN, takes it as the first time.
        for fd in finishing { Glibc.shutdown(fd, Int32(SHUT_WR)) }
        finishing = []
        for fd in standIns { close(fd) }
        standIns = []
    }

    /// A listening or merely bound socket: bound to its address again (and listening).
    private func bindTCP(_ f: FileDescriptorImage, _ s: SocketImage, fd: Int32) throws {
        guard let addr = s.address else { return }
        // SO_REUSEADDR for the bind only: the application's own connections on this
        // port may linger in TIME_WAIT after the kill (tcp(7)).
        SocketOption.reuseAddress.set(fd, 1)
        // Right after `checkpoint --kill`, the application's own connections on this
        // port may still be closing and hold it for a moment: wait up to 1 s for them
        // before calling the port taken.
        var r = SockAddr.bind(fd, addr), err = errno, tries = 0
        if r != 0 && err == EADDRINUSE && s.state == .listening {
            // The application's closed connections on this port may sit in TIME_WAIT, and
            // SO_REUSEADDR does not get past them when they were made without it (the
            // listener's accepted sockets inherit its setting). They belong to no process and
            // were the application's: ended with SOCK_DESTROY, as the program's own restart
            // would have waited them out. A live socket on the port still refuses the bind.
            let port = addr.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self) }
            if InetDiag.destroyTimeWait(family: s.family, localPort: port) > 0 { r = SockAddr.bind(fd, addr); err = errno }
        }
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
    }

    /// The connection's timestamp clock now (RFC 7323, in ms as tcp(7) TCP_TIMESTAMP gives
    /// it): the saved value moved on by the time since it was read, so that the restored
    /// copy's clock is the one its peer knows, not one that lags by the freeze. The peer
    /// keeps the newest timestamp it has seen and drops as old (PAWS) any segment stamped
    /// below it: anything the source copy's kernel sent after the snapshot (leaving repair
    /// mode sends an acknowledgement) would otherwise be newer than the restored copy's
    /// segments for as long as the freeze lasted. Capped at 2^30 ticks (12 days in ms): a
    /// jump of 2^31 would read as a step backwards. The value's low bit is not time: since Linux 6.7 it says
    /// the clock counts microseconds (tcp_usec_ts), and setting it back says the same, so
    /// it is kept as read and the time added in the clock's unit.
    static func timestampNow(_ r: TCPRepairState) -> UInt32 {
        guard let read = r.timestampRead else { return r.timestamp }
        let usec = r.timestamp & 1 == 1
        let elapsed = min(max(0, Clock.nanoseconds(Clock.realtime) - read) / (usec ? 1_000 : 1_000_000), 1 << 30)
        return ((r.timestamp &+ UInt32(elapsed)) & ~1) | (r.timestamp & 1)
    }

    /// The last acknowledgement its peer sent after the snapshot (RestartOptions.tcpPeerAcks).
    func peerAck(_ s: SocketImage) -> UInt32? {
        guard !tcpPeerAcks.isEmpty, let (_, lp) = Self.hostPort(s.address, s.family), let (ra, rp) = Self.hostPort(s.peerAddress, s.family) else { return nil }
        return tcpPeerAcks["\(ra):\(rp)>\(lp)"]
    }

    /// The connection with the part of its send queue that `peerAck` acknowledges dropped
    /// (only within the part it had sent: an acknowledgement of anything else is not one of
    /// this connection's). The restored copy sends its whole queue again, counting none of
    /// it as sent (repairTCP), so a peer ahead of the snapshot would acknowledge what that
    /// copy takes for unsent data: tcp_ack drops such acknowledgements, the copy waits for
    /// ones it will never get, and a bulk sender stalls.
    static func trimmed(_ r: TCPRepairState, peerAck: UInt32?) -> TCPRepairState {
        guard let ack = peerAck else { return r }
        let firstUnacked = r.sendSeq &- UInt32(r.sendQueue.count)
        let ahead = Int32(bitPattern: ack &- firstUnacked)
        let sent = r.sendQueue.count - Int(r.unsent ?? 0)
        guard ahead > 0, Int(ahead) <= sent else { return r }
        var t = r
        t.sendQueue = r.sendQueue.subdata(in: (r.sendQueue.startIndex + Int(ahead))..<r.sendQueue.endIndex)
        return t
    }

    /// "local>peer" of a connection, IPv4 addresses of v4-mapped IPv6 ones (a dual-stack
    /// listener's accepted end names its IPv4 client so).
    static func connectionKey(_ local: Data?, _ peer: Data?, _ family: Int32) -> String? {
        guard let local, let peer else { return nil }
        let l = SockAddr.unmapped(local), p = SockAddr.unmapped(peer)
        let lf = l.withUnsafeBytes { Int32($0.loadUnaligned(as: UInt16.self)) }, pf = p.withUnsafeBytes { Int32($0.loadUnaligned(as: UInt16.self)) }
        return "\(SockAddr.describe(l, family: lf))>\(SockAddr.describe(p, family: pf))"
    }

    /// A connection whose peer is inside the application, with the part of its send queue
    /// that the peer's saved receive queue already holds dropped. The two ends are read one
    /// after the other while their kernel still moves data between them, and the receive
    /// queues last (ProcessDumper.rereadReceiveQueues): the receiver may be ahead of where
    /// the sender's queue begins. The restored sender counts its whole queue unsent
    /// (repairTCP): the receiver's acknowledgement of bytes it has not sent yet would be
    /// dropped (tcp_ack, "ack of unsent data"), its window updates with it, and the sender,
    /// waiting for a window, would wait for good (tcpmore.c's two full windows, 1 run in 5).
    static func trimmedToPeer(_ r: TCPRepairState, received: UInt32) -> TCPRepairState {
        let start = r.sendSeq &- UInt32(r.sendQueue.count)
        let ahead = Int32(bitPattern: received &- start)
        guard ahead > 0, Int(ahead) <= r.sendQueue.count else { return r }
        var t = r
        t.sendQueue = r.sendQueue.subdata(in: (r.sendQueue.startIndex + Int(ahead))..<r.sendQueue.endIndex)
        if let unsent = r.unsent { t.unsent = min(unsent, UInt32(t.sendQueue.count)) }
        return t
    }

    /// `fd`, in repair mode, made one end of a connection without a packet on the wire
    /// (tcp(7), linux/tcp.h): bound to `local`, its send and receive queues starting at
    /// `sendStart` and `receiveStart` (TCP_QUEUE_SEQ), the timestamp clock, segment size and
    /// options negotiated as `r` says (`mirrored`: for the other end of `r`, whose window
    /// scales are the other way round), connected to `peer`. The port may be taken by a
    /// listener or a TIME_WAIT leftover, which repair mode may share (SK_FORCE_REUSE).
    private func repairConnect(_ fd: Int32, _ r: TCPRepairState, local: Data, peer: Data, sendStart: UInt32, receiveStart: UInt32,
                               mirrored: Bool, what: String) throws {
        if SockAddr.bind(fd, local) != 0 { throw SSIError.sys("bind \(what)", errno: errno) }
        for (q, seq) in [(SocketOption.tcpSendQueue, sendStart), (SocketOption.tcpReceiveQueue, receiveStart)] {
            guard SocketOption.tcpRepairQueue.set(fd, q), SocketOption.tcpQueueSequence.set(fd, Int32(bitPattern: seq)) else {
                throw SSIError.sys("set the sequence numbers of \(what)", errno: errno)
            }
        }
        SocketOption.tcpRepairQueue.set(fd, SocketOption.tcpNoQueue)
        if r.timestamps { SocketOption.tcpTimestamp.set(fd, Int32(bitPattern: Self.timestampNow(r))) }
        // The segment size, before connect: the repair connect computes the socket's current
        // MSS then (tcp_connect_init: from TCP_MAXSEG's user_mss and the route's MTU), and
        // TCP_REPAIR_OPTIONS below only sets the clamp, which nothing recomputes it from while
        // the path MTU stays the same: the rebuilt connection sent 524-byte segments (the
        // 536 default less timestamps) for good, and a bulk sender crawled.
        // TCP_MAXSEG takes 88 to 32767 (MAX_TCP_WINDOW): loopback's 65483 is refused and the
        // connection starts with the default segment size. Setting 32767 instead made a
        // restored connection to an outside peer with megabytes queued stall (tcpexternal.c),
        // so such a size is left to the default, as before.
        if r.mss >= 88 && r.mss <= 32767 { SocketOption.tcpMaxSegment.set(fd, Int32(r.mss)) }
        if SockAddr.connect(fd, peer) != 0 { throw SSIError.sys("connect (repair) \(what)", errno: errno) }
        // struct tcp_repair_opt { opt_code, opt_val }: TCPOPT_MSS 2, WINDOW 3, SACK_PERM 4, TIMESTAMP 8.
        let (mine, theirs) = mirrored ? (r.recvWindowScale, r.sendWindowScale) : (r.sendWindowScale, r.recvWindowScale)
        var opts: [UInt32] = [2, r.mss]
        if mine != 0 || theirs != 0 { opts += [3, UInt32(mine) | UInt32(theirs) << 16] }
        if r.sack { opts += [4, 0] }
        if r.timestamps { opts += [8, 0] }
        try SocketOption.tcpRepairOptions.set(fd, bytes: opts.withUnsafeBytes { Array($0) }, "TCP_REPAIR_OPTIONS on \(what)")
    }

    /// A connection rebuilt in repair mode, its queues refilled; it leaves repair mode in
    /// buildTCP once every end exists.
    private func repairTCP(_ f: FileDescriptorImage, _ s: SocketImage, fd: Int32) throws {
        guard var r = s.tcp, let local = s.address, let peer = s.peerAddress else { return }
        if let stale = staleConnection(f, s, r) { try resetTCP(f, s, fd: fd, at: stale); return }
        r = Self.trimmed(r, peerAck: peerAck(s))
        if let key = Self.connectionKey(peer, local, s.family), let received = receivedByConnection[key] { r = Self.trimmedToPeer(r, received: received) }
        // Repair mode (tcp(7), linux/tcp.h): bind and connect set up the connection
        // without a packet on the wire; the port may be taken by the listener or a
        // TIME_WAIT leftover, which repair mode is allowed to share (SK_FORCE_REUSE).
        guard SocketOption.tcpRepair.set(fd, 1) else {
            throw SSIError.sys("TCP_REPAIR", errno: errno, hint: errno == EPERM ? "run as root (CAP_NET_ADMIN)" : nil)
        }
        repairing.append((fd, s.options?["SO_REUSEADDR"] ?? 0))
        if (s.shutdown ?? 0) & 1 != 0 { shutReading.append(fd) }
        if r.finSent == true { finishing.append(fd) }
        let what = "TCP connection \(SockAddr.describe(local, family: s.family)) -> \(SockAddr.describe(peer, family: s.family))"
        // The queues start where the saved bytes put back below move them on to the saved
        // sequence numbers.
        try repairConnect(fd, r, local: local, peer: peer, sendStart: r.sendSeq &- UInt32(r.sendQueue.count),
                          receiveStart: r.recvSeq &- UInt32(r.recvQueue.count), mirrored: false, what: what)
        // The whole send queue is written once out of repair mode (buildTCP), from the
        // first unacknowledged byte: the part already sent would otherwise count as sent
        // and go out again only after a retransmission timeout, which is a full second on a
        // socket that has measured no round trip yet (TCP_TIMEOUT_INIT); written anew, it
        // goes out at once. A peer that had it already just acknowledges it again (RFC
        // 2883, D-SACK). The unsent part was never seen by the peer either way. With
        // tcpKeepSent, the sent part goes back as sent (RestartOptions.tcpKeepSent).
        let unsent = tcpKeepSent ? min(Int(r.unsent ?? 0), r.sendQueue.count) : r.sendQueue.count
        let sent = r.sendQueue.prefix(r.sendQueue.count - unsent)
        if unsent > 0 {
            unsentTCP.append((fd, r.sendQueue.suffix(unsent), what))
            let want = Int32(min(r.sendQueue.count + (64 << 10), Int(Int32.max / 4)))
            if (SocketOption.sendBuffer.get(fd) ?? 0) < want * 2 { SocketOption.sendBufferForce.set(fd, want) }
        }
        for (q, data) in [(SocketOption.tcpReceiveQueue, r.recvQueue), (SocketOption.tcpSendQueue, Data(sent))] where !data.isEmpty {
            // A fresh socket's buffers may be smaller than what was queued on the
            // autotuned original: grow them to fit (SO_*BUFFORCE, root; the kernel
            // doubles the value, socket(7)), else the bytes would not go back in.
            let isSend = q == SocketOption.tcpSendQueue
            // (the send buffer holds the unsent part too, written after repair mode)
            let want = Int32(min((isSend ? r.sendQueue.count : data.count) + (64 << 10), Int(Int32.max / 4)))
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
            // struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup. The
            // kernel refuses (EINVAL, tcp_repair_set_window) a max_window below snd_wnd, an
            // snd_wl1 past rcv_nxt + rcv_wnd or an rcv_wup past rcv_nxt: values read while
            // segments between two ends of the application were still being processed (the
            // freeze stops the programs, not their kernel's TCP; two full windows exchange
            // probes) may not fit the queue's end read a moment before. Brought within it.
            var w = r.window
            if w[2] < w[1] { w[2] = w[1] }
            if Int32(bitPattern: w[4] &- r.recvSeq) > 0 { w[4] = r.recvSeq }
            if Int32(bitPattern: w[0] &- (r.recvSeq &+ w[3])) > 0 { w[0] = r.recvSeq }
            try SocketOption.tcpRepairWindow.set(fd, bytes: w.withUnsafeBytes { Array($0) }, "TCP_REPAIR_WINDOW on \(what)")
        }
        if r.peerGone == true { try standInPeer(s, r, what: what) }
    }

    /// The peer of a connection whose peer had closed it and gone (TCPRepairState.peerGone):
    /// a socket at the peer's address, connected in repair mode with the sequence numbers
    /// the peer had (it sends from where this end receives, and receives from this end's
    /// first unacknowledged byte), the same options mirrored. Once out of repair mode it
    /// sends its FIN (this end goes to CLOSE_WAIT, its unread bytes then end of file) and is
    /// closed, as the peer's program had closed it: data written to it afterwards is answered
    /// with a reset, as the peer's kernel would have answered. The killed copy's end of the
    /// connection may linger in TIME_WAIT at the peer's port: ended first.
    private func standInPeer(_ s: SocketImage, _ r: TCPRepairState, what: String) throws {
        guard let local = s.address, let peer = s.peerAddress, let (_, port) = Self.hostPort(peer, s.family) else { return }
        InetDiag.destroyTimeWait(family: s.family, localPort: UInt16(port).bigEndian)
        let fd = try newSocket(s.family, 1, "stand-in peer of \(what)")
        standIns.append(fd)
        guard SocketOption.tcpRepair.set(fd, 1) else { throw SSIError.sys("TCP_REPAIR on the stand-in peer of \(what)", errno: errno) }
        repairing.append((fd, 0))
        // It sends from where this end receives, and receives from this end's first
        // unacknowledged byte.
        try repairConnect(fd, r, local: peer, peer: local, sendStart: r.recvSeq, receiveStart: r.sendSeq &- UInt32(r.sendQueue.count),
                          mirrored: true, what: "the stand-in peer of \(what)")
        finishing.append(fd)
    }
}

extension ProcessDumper {
    /// Before the kill: TCP connections to the outside go into repair mode (tcp(7)), so
    /// that closing them when their process dies sends neither FIN nor RST
    /// (tcp_disconnect() only marks a socket in repair mode aborted): the peer keeps the
    /// connection open for the restart.
    static func silenceExternalTCP(_ tables: [Int32: [FileDescriptorImage]]) {
        for (pid, fds) in tables {
            for f in fds where f.kind == .tcpSocket && f.external == true {
                guard let copy = try? FDTransfer.copy(fd: f.fd, from: ProcessID(pid)) else { continue }
                SocketOption.tcpRepair.set(copy, 1)
                close(copy)
            }
        }
    }
}
