import Foundation
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The established TCP connections of an application, found from outside like its listening
/// sockets (Listening.swift), and what a migration does with those that came in through the
/// cluster address: they follow the application (the engine saves and rebuilds them with
/// TCP_REPAIR; their local address C is local on every node), so on the source node their
/// packets are held back while the application is copied (a lock), and the source copy's
/// sockets are put in repair mode before it is killed, so that closing them sends the client
/// neither FIN nor RST (tcp(7): a socket closed in repair mode leaves without a word).
public struct TCPConnection: Sendable, Hashable {
    public var local: String
    public var localPort: UInt16
    public var remote: String
    public var remotePort: UInt16
    public var inode: UInt64
    /// Processes and fds that hold it (PIDs as this node sees them).
    public var holders: [(pid: Int32, fd: Int32)] = []

    public static func == (a: TCPConnection, b: TCPConnection) -> Bool { a.inode == b.inode }
    public func hash(into h: inout Hasher) { h.combine(inode) }
    public var description: String { "\(local):\(localPort) -> \(remote):\(remotePort)" }
}

public enum Connections {
    /// Every established TCP connection (state 01) of the application's processes.
    public static func established(root: Int32) -> [TCPConnection] { sockets(root: root, state: "01") }

    /// Every listening TCP socket (state 0A) of the application's processes (the remote
    /// address and port are the kernel's zeros).
    public static func listening(root: Int32) -> [TCPConnection] { sockets(root: root, state: "0A") }

    /// A TCP connection or handshake of the application's network namespace, by its two ends
    /// (the local address is the application's own) and its /proc/net/tcp state (hex: 01
    /// established, 03 a handshake under way: the kernel answered the client's SYN with its
    /// SYN-ACK and waits for the last ACK). A handshake is a request, not a socket: no inode,
    /// no fd (proc(5); net/ipv4/tcp_ipv4.c shows a request as its listener's port and the client).
    public struct Flow: Sendable, Hashable {
        public var remote: String
        public var remotePort: UInt16
        public var localPort: UInt16
        public var state: Substring

        /// The key a held packet of this flow has (PacketHold.flowKey).
        public var key: String { "\(remote):\(remotePort)>\(localPort)" }
    }

    /// The flows of the application's network namespace in one of `states` (proc(5),
    /// /proc/PID/net/tcp's `st`, hex), by their two ends only: one read of that file, no
    /// walk of the processes' fds. That read still walks the host's whole TCP hash table
    /// (3.3 ms for a two-line file on this machine): never inside a freeze.
    public static func flows(root: Int32, states: Set<Substring>) -> [Flow] {
        guard let text = try? ProcFS.read("/proc/\(root)/net/tcp") else { return [] }
        var out: [Flow] = []
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 4, states.contains(f[3]) else { continue }
            let l = f[1].split(separator: ":"), r = f[2].split(separator: ":")
            guard l.count == 2, r.count == 2, let lp = UInt16(l[1], radix: 16), let rp = UInt16(r[1], radix: 16),
                  let ra = ListeningSockets.address(String(r[0]), v6: false) else { continue }
            out.append(Flow(remote: ra, remotePort: rp, localPort: lp, state: f[3]))
        }
        return out
    }

    /// The TCP sockets in state `state` (proc(5), /proc/net/tcp's `st`, hex) of the
    /// application's processes, with the processes and fds that hold them.
    static func sockets(root: Int32, state: Substring) -> [TCPConnection] {
        var holders: [UInt64: [(Int32, Int32)]] = [:]
        var namespaces: [String: Int32] = [:]
        for pid in processTree(root) {
            for fd in (try? openFDs(of: pid)) ?? [] {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                      target.hasPrefix("socket:["), let n = UInt64(target.dropFirst(8).dropLast()) else { continue }
                holders[n, default: []].append((pid, fd))
            }
            if let ns = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net"), namespaces[ns] == nil { namespaces[ns] = pid }
        }
        var out: [TCPConnection] = []
        for pid in namespaces.values {
            for (file, v6) in [("tcp", false), ("tcp6", true)] {
                guard let text = try? ProcFS.read("/proc/\(pid)/net/\(file)") else { continue }
                for line in text.split(separator: "\n").dropFirst() {
                    let f = line.split(separator: " ", omittingEmptySubsequences: true)
                    guard f.count >= 10, f[3] == state, let inode = UInt64(f[9]), let h = holders[inode] else { continue }
                    let l = f[1].split(separator: ":"), r = f[2].split(separator: ":")
                    guard l.count == 2, r.count == 2, let lp = UInt16(l[1], radix: 16), let rp = UInt16(r[1], radix: 16),
                          let la = ListeningSockets.address(String(l[0]), v6: v6), let ra = ListeningSockets.address(String(r[0]), v6: v6) else { continue }
                    out.append(TCPConnection(local: la, localPort: lp, remote: ra, remotePort: rp, inode: inode, holders: h))
                }
            }
        }
        return out
    }

    /// Connections whose other end is inside the application too (both inodes are its own):
    /// the engine rebuilds those pairs itself.
    public static func internalPairs(_ all: [TCPConnection]) -> Set<UInt64> {
        var ends = Set<String>()
        for c in all { ends.insert("\(c.local):\(c.localPort)>\(c.remote):\(c.remotePort)") }
        return Set(all.filter { ends.contains("\($0.remote):\($0.remotePort)>\($0.local):\($0.localPort)") }.map(\.inode))
    }

    /// The nft table that holds back, on this node, the packets of the application's
    /// connections through the cluster address: every packet to or from C on its ports (the
    /// ports it listens on, which its accepted connections share), those delivered here (hook
    /// input: after steering chose this node; a packet this node only passes on to the
    /// application's new node goes through) and those its sockets send. A new connection's
    /// SYN is held too, so that no connection is accepted by a copy about to go.
    ///
    /// With `holdMark` (the node has a PacketHold), what comes in for those ports is not
    /// dropped but marked at prerouting, after the steering's mark (priority mangle + 10), so
    /// that policy routing sends it to the hold (PacketHold.hold(key:address:tcpPorts:)),
    /// which gives it back to the kernel once steering points at the new node: the client
    /// sees a delay, not a loss, and no retransmission timeout (200 ms at least, RFC 6298).
    /// Packets written back come in on the hold's interface and are not marked again. Without
    /// it, they are dropped and TCP sends them again once the connection answers from its new
    /// node.
    public static func lockRuleset(table: String, clusterIP: String, ports: [UInt16], holdMark: UInt32? = nil, holdInterface: String = PacketHold.interface) -> String {
        let set = ports.sorted().map(String.init).joined(separator: ", ")
        let hold = holdMark.map {
            "    chain hold { type filter hook prerouting priority mangle + 10; policy accept; iifname != \"\(holdInterface)\" ip daddr \(clusterIP) tcp dport { \(set) } counter meta mark set 0x\(String($0, radix: 16)); }\n"
        } ?? ""
        return """
        add table ip \(table)
        delete table ip \(table)
        table ip \(table) {
        \(hold)    chain in { type filter hook input priority -310; policy accept; ip daddr \(clusterIP) tcp dport { \(set) } counter drop; }
            chain out { type filter hook output priority -310; policy accept; ip saddr \(clusterIP) tcp sport { \(set) } counter drop; }
        }

        """
    }

    public static func lock(table: String, clusterIP: String, ports: [UInt16], holdMark: UInt32? = nil) throws {
        let (code, out) = try NFTables.apply(lockRuleset(table: table, clusterIP: clusterIP, ports: ports, holdMark: holdMark), tag: table)
        if code != 0 {
            throw SSIError(.system, "nft refused the lock of the connections (table \(table)): \(out)",
                           hint: "the migration was not made; is nftables installed (scripts/setup-cluster.sh)? see the node's log")
        }
        if holdMark != nil { EarlyDemux.suspend() }
    }

    /// The hold of a lock ends (its packets about to be given back): what comes in is
    /// steered again, the drops stay.
    public static func endHold(table: String) {
        _ = try? Proc.run(["nft", "delete", "chain", "ip", table, "hold"], check: false)
    }

    /// The lock gone (`held`: it was made with a hold mark).
    public static func unlock(table: String, held: Bool = false) {
        _ = try? Proc.run(["nft", "delete", "table", "ip", table], check: false)
        if held { EarlyDemux.resume() }
    }

    /// Where a live connection stands: its first unacknowledged byte, the next byte it will
    /// send, the next it expects. Read through a copy of one of its fds, in repair mode for
    /// an instant (tcp(7): TCP_QUEUE_SEQ; SIOCOUTQ counts the bytes not acknowledged),
    /// left with TCP_REPAIR_OFF_NO_WP (-1, Linux 4.17): no window probe on the wire.
    public static func sequenceNumbers(_ c: TCPConnection) -> (sendUnacked: UInt32, sendNext: UInt32, receiveNext: UInt32)? {
        guard let h = c.holders.first, let fd = try? PidFD.copy(fd: h.fd, of: ProcessID(h.pid)) else { return nil }
        defer { close(fd) }
        var outq: Int32 = 0
        guard ioctl(fd, SocketIoctl.outputQueue, &outq) == 0, SocketOption.tcpRepair.set(fd, 1) else { return nil }
        defer { SocketOption.tcpRepair.set(fd, -1) }
        guard SocketOption.tcpRepairQueue.set(fd, SocketOption.tcpSendQueue), let send = SocketOption.tcpQueueSequence.get(fd),
              SocketOption.tcpRepairQueue.set(fd, SocketOption.tcpReceiveQueue), let receive = SocketOption.tcpQueueSequence.get(fd) else { return nil }
        SocketOption.tcpRepairQueue.set(fd, SocketOption.tcpNoQueue)
        let next = UInt32(bitPattern: send)
        return (next &- UInt32(max(0, outq)), next, UInt32(bitPattern: receive))
    }

    /// Waits, while the application runs with its incoming traffic held, for it to read what
    /// its connections have received and to accept the connections its listeners have
    /// waiting: until at most `limit` bytes are left unread in all and no connection waits,
    /// their amount stops falling (an application that does not read or accept), or `within`
    /// has passed. Returns the bytes left unread and the connections left waiting (SIOCINQ,
    /// tcp(7); a listener's accept queue is TCP_INFO's tcpi_unacked; through a pidfd_getfd
    /// copy of each socket). A connection waiting to be accepted cannot be saved: the
    /// checkpoint refuses it.
    ///
    /// `handshakes`, called on every look, does what it can for the handshakes under way and
    /// returns how many are still waiting for their last ACK (counted as waiting: they
    /// become connections to accept once it comes).
    @discardableResult
    public static func drain(_ conns: [TCPConnection], listeners: [TCPConnection] = [], limit: Int = 64 << 10,
                             within: Duration = .milliseconds(40), settle: Duration = .zero,
                             handshakes: (() -> Int)? = nil) -> (unread: Int, waiting: Int) {
        func copies(_ list: [TCPConnection]) -> [Int32] {
            list.compactMap { c in c.holders.first.flatMap { try? PidFD.copy(fd: $0.fd, of: ProcessID($0.pid)) } }
        }
        let fds = copies(conns), listenFDs = copies(listeners)
        defer { for fd in fds + listenFDs { close(fd) } }
        func now() -> (unread: Int, waiting: Int) {
            let unread = fds.reduce(0) { sum, fd in
                var n: Int32 = 0
                return ioctl(fd, SocketIoctl.inputQueue, &n) == 0 ? sum + Int(n) : sum
            }
            let waiting = listenFDs.reduce(0) { sum, fd in
                // struct tcp_info: tcpi_unacked (at 24) is a listener's accept queue.
                var info = [UInt8](repeating: 0, count: 104)
                guard SocketOption.tcpInfo.get(fd, into: &info) != nil else { return sum }
                return sum + Int(info.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt32.self) })
            }
            return (unread, waiting + (handshakes?() ?? 0))
        }
        let start = ContinuousClock.now
        var left = now(), moved = start
        // Given up when nothing has moved for 8 ms: an application that does not read or
        // accept (or one busy elsewhere) costs its peers that much more of a stall, no more.
        // `settle`: looked at for at least that long, for the packets already past the hold
        // when it began (a handshake's last ACK on its way makes a connection to accept).
        // The 8 ms give-up counts only once `settle` is over: it used to end the look at 8 ms
        // with nothing moving, cutting a 15 ms settle short; with the hold set up faster (its
        // nft no longer a fork of the daemon), CI saw a busy listener's move refused by a
        // connection whose last ACK landed just after.
        while ContinuousClock.now - start < within {
            let elapsed = ContinuousClock.now - start
            let busy = left.unread > limit || left.waiting > 0
            if elapsed >= settle && (!busy || ContinuousClock.now - moved >= .milliseconds(8)) { break }
            usleep(500)
            let next = now()
            if next.unread < left.unread || next.waiting < left.waiting { moved = ContinuousClock.now }
            left = next
        }
        return left
    }

    /// The established connections of the application whose other end is not in it.
    public static func toOutside(root: Int32) -> [TCPConnection] {
        let all = established(root: root)
        let inside = internalPairs(all)
        return all.filter { !inside.contains($0.inode) }
    }

    /// Puts each connection's socket in repair mode, through a copy of one of its fds
    /// (pidfd_getfd(2): the same socket). Returns how many were.
    @discardableResult
    public static func silence(_ conns: [TCPConnection]) -> Int {
        var n = 0
        for c in conns {
            guard let h = c.holders.first, let fd = try? PidFD.copy(fd: h.fd, of: ProcessID(h.pid)) else { continue }
            if SocketOption.tcpRepair.set(fd, 1) { n += 1 }
            close(fd)
        }
        return n
    }
}

/// TCP early demux (ip-sysctl.txt tcp_early_demux), off on this node while a migration holds
/// packets of its source copy's connections. Early demux gives a packet of an established
/// connection the socket it belongs to before routing: a packet for the frozen source copy
/// would then be delivered to it whatever its mark says, and one routed elsewhere (to the
/// hold, or to the new node once steering has turned) is dropped by the forwarding path,
/// which refuses a packet that has a local socket (ip_forward). Without it, every packet is
/// routed by its mark. A count, since several applications may be leaving at once; the
/// setting is the network namespace's, the node's.
public enum EarlyDemux {
    private static let state = Mutex<(count: Int, saved: String?)>((0, nil))
    static let path = "/proc/sys/net/ipv4/tcp_early_demux"

    public static func suspend() {
        state.withLock { s in
            if s.count == 0 {
                s.saved = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                try? ProcFS.write(path, "0")
            }
            s.count += 1
        }
    }

    public static func resume() {
        state.withLock { s in
            guard s.count > 0 else { return }
            s.count -= 1
            if s.count == 0 { try? ProcFS.write(path, s.saved ?? "1"); s.saved = nil }
        }
    }
}
