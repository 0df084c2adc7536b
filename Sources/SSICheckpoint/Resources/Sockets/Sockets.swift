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
            if type == 1, let parts = img.socket?.datagrams, !parts.contains(where: { $0.files != nil || $0.credentials != nil }) {
                img.socketData = parts.reduce(into: Data()) { $0.append($1.data) }
                img.socket?.datagrams = nil
            }
            img.peerID = unixSockets[inode].flatMap { $0.peer == 0 ? nil : $0.peer }
            img.socketType = type
        case (AF_INET, 1) where proto == IPPROTO_TCP, (AF_INET6, 1) where proto == IPPROTO_TCP:
            img = FileDescriptorImage(fd: fd, kind: .tcpSocket, path: link, flags: flags, closeOnExec: cloexec, position: 0)
            img.socket = try dumpTCP(sock, family: family, inode: inode)
        case (AF_INET, 2) where proto == IPPROTO_UDP, (AF_INET6, 2) where proto == IPPROTO_UDP:
            img = FileDescriptorImage(fd: fd, kind: .udpSocket, path: link, flags: flags, closeOnExec: cloexec, position: 0)
            img.socket = try dumpUDP(sock, family: family, inode: inode)
        case (AF_INET, 2), (AF_INET6, 2):
            throw UnsupportedSocket(kind: "datagram socket of protocol \(proto)")
        case (AF_PACKET, _):
            img = FileDescriptorImage(fd: fd, kind: .packetSocket, path: link, flags: flags, closeOnExec: cloexec, position: 0)
            img.socket = try dumpPacket(sock, type: type, protocol: proto, inode: inode)
        case (AF_NETLINK, _):
            img = FileDescriptorImage(fd: fd, kind: .netlinkSocket, path: link, flags: flags, closeOnExec: cloexec, position: 0)
            img.socket = try dumpNetlink(sock, type: type, protocol: proto)
        default:
            throw UnsupportedSocket(kind: "socket of family \(family), type \(type)")
        }
        img.socketID = inode
        var s = img.socket!
        // Made in a network namespace that is not the root's (one the application made): its
        // id, so that restart builds it inside that namespace made again.
        if let ns = ThreadFS.socketNetworkNamespace(sock), ns != rootNetworkNamespace, rootNetworkNamespace != 0 { s.netns = ns }
        var opts = [String: Int32]()
        for o in keptSocketOptions where o.families.contains(family) {
            if let v = o.option.get(sock), v != 0 { opts[o.name] = v }
        }
        s.options = opts.isEmpty ? nil : opts
        s.rawOptions = RawSocketOptions.dump(sock, family: family, type: type, tcp: img.kind == .tcpSocket)
        if let (uid, gid) = Self.socketOwner(sock) { (s.ownerUID, s.ownerGID) = (uid, gid) }
        (s.filter, s.filterLocked) = SocketFilter.dump(sock)
        img.socket = s
        return img
    }






    /// Every socket must be rebuildable from what the application holds: a unix peer, a
    /// pending client, a TCP peer must all be inside it. Others fail the checkpoint (or, with
    /// -i, become closed fds).
    static func checkSockets(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool, tcpEstablished: Bool = false) throws {
        let all = tables.values.flatMap { $0 }.flatMap { [$0] + SocketRebuilder.inFlightSockets(of: $0) }
        let unixIDs = Set(all.filter { $0.kind == .unixSocket }.compactMap(\.socketID))
        let pendingIDs = Set(all.compactMap { $0.socket?.pendingClients }.flatMap { $0 })
        // Compared as IPv4 where an IPv6 socket holds a v4-mapped address: a dual-stack
        // listener's connection from an IPv4 client of the application names both ends so.
        let v4 = { (a: Data?) in a.map(SockAddr.unmapped) }
        let tcpEnds = Set(all.filter { $0.kind == .tcpSocket && $0.socket?.state == .connected }.map { [v4($0.socket?.address), v4($0.socket?.peerAddress)] })
        for (pid, fds) in tables {
            for carrier in fds {
              for f in [carrier] + SocketRebuilder.inFlightSockets(of: carrier) {
                var problem: String? = nil
                if f.kind == .unixSocket {
                    let s = f.socket
                    let stream = (f.socketType ?? s?.type ?? 1) != 2
                    if let peer = f.peerID, !unixIDs.contains(peer) {
                        // A datagram socket connected to an outside name is reconnected by name.
                        if stream || s?.peerAddress == nil {
                            problem = "unix socket connected to \(SockAddr.describe(s?.peerAddress, family: 1)) outside the application" + SocketOwners.describeHolder(ofSocket: peer, near: pid)
                        }
                    } else if f.peerID == nil, s?.state == .connected, stream, !pendingIDs.contains(f.socketID ?? 0), s?.shutdown != 3 {
                        problem = "unix connection waiting in the accept queue of a listener outside the application"
                    }
                    for c in s?.pendingClients ?? [] where !unixIDs.contains(c) {
                        problem = "unix listener \(SockAddr.describe(s?.address, family: 1)) with a pending connection from outside the application"
                    }
                } else if f.kind == .tcpSocket, let s = f.socket, s.state == .connected, !tcpEnds.contains([v4(s.peerAddress), v4(s.address)]) {
                    // With --tcp-established (CRIU's name) it is saved as external: rebuilt in
                    // repair mode against the same peer, which sees nothing if the restart
                    // comes before it sends or times out.
                    if s.tcp?.finReceived == true, s.tcp?.finSent != true, f.socketID == carrier.socketID, let local = s.address, let remote = s.peerAddress,
                       InetDiag.owned(family: s.family, local: remote, remote: local) != true {
                        // Its peer closed it and is gone (no process holds the other end): a
                        // stand-in peer sends the FIN again at restart (repairTCP).
                        if let i = tables[pid]!.firstIndex(where: { $0.fd == carrier.fd }) { tables[pid]![i].socket?.tcp?.peerGone = true }
                        continue
                    } else if s.tcp?.finSent == true || s.tcp?.finReceived == true {
                        // Its FIN would have to come from the peer (or reach it) again.
                        problem = "half-closed TCP connection \(SockAddr.describe(s.address, family: s.family)) -> \(SockAddr.describe(s.peerAddress, family: s.family)) (\(s.tcp?.finReceived == true ? "its peer closed" : "it shut its side down")) whose peer is outside the application"
                    } else if tcpEstablished && f.socketID == carrier.socketID {
                        if let i = tables[pid]!.firstIndex(where: { $0.fd == carrier.fd }) { tables[pid]![i].external = true }
                        continue
                    } else {
                        problem = "TCP connection \(SockAddr.describe(s.address, family: s.family)) -> \(SockAddr.describe(s.peerAddress, family: s.family)) whose peer is outside the application"
                    }
                }
                guard let problem else { continue }
                let inFlight = f.socketID != carrier.socketID ? "a socket in flight in it: " : ""
                if ignoreUnsupported { tables[pid]!.removeAll { $0.fd == carrier.fd }; break }
                let tcp = problem.hasPrefix("TCP connection") ? "`ssi checkpoint --tcp-established` to save it, or " : ""
                throw SSIError(.unsupported, "PID \(pid) fd \(carrier.fd): \(inFlight)\(problem) is not supported yet; nothing was written and the application goes on",
                               hint: "use \(tcp)`ssi checkpoint -i` to restore it as a closed fd")
              }
            }
        }
    }
}

// MARK: - restart

/// Builds every socket of an application in ssi, connected and filled as it was.
final class SocketRebuilder {
    /// socket inode -> the new socket, an fd of ssi.
    var made: [UInt32: Int32] = [:]
    var images: [UInt32: FileDescriptorImage] = [:]
    var repairing: [(fd: Int32, reuse: Int32)] = []
    /// TCP bytes written by the application and not yet sent, written once out of repair mode.
    var unsentTCP: [(fd: Int32, data: Data, what: String)] = []
    /// Connections whose receiving side the program had shut (shutdown(2) SHUT_RD), shut
    /// again once out of repair mode (it sends nothing).
    var shutReading: [Int32] = []
    /// TCP connections that had sent their FIN (TCPRepairState.finSent): shut down for
    /// writing once out of repair mode and their unsent bytes written.
    var finishing: [Int32] = []
    /// Stand-in peers of connections whose peer was gone (TCPRepairState.peerGone), closed
    /// once they have sent their FIN.
    var standIns: [Int32] = []
    /// Where the peers of saved connections stand (RestartOptions.tcpPeerCheck), and the
    /// connections to reset once out of repair mode (TCPPeers.swift).
    var tcpPeerCheck: TCPPeerCheck? = nil
    /// RestartOptions.tcpPeerAcks.
    var tcpPeerAcks: [String: UInt32] = [:]
    /// Where each TCP connection of the application's receive queue ends, by "local>peer"
    /// (buildTCP, trimmedToPeer).
    var receivedByConnection: [String: UInt32] = [:]
    /// RestartOptions.tcpKeepSent.
    var tcpKeepSent = false
    var resetting: [Int32] = []
    /// The application's pipes (held by ssi), for pipe ends in flight.
    var pipes: PipeRegistry?
    /// Names a migration's source copy still holds (NameTakeover.swift).
    var takeover: NameTakeover?
    /// Who makes the calls that fix unix sockets' peer credentials (PeerCredentials.swift).
    var creators = SocketCreators()
    /// Listeners whose credentials were changed for a client's connect (UnixSockets.swift).
    var relistened = Set<UInt32>()

    deinit { closeAll() }

    func closeAll() {
        for fd in made.values { close(fd) }
        made = [:]
    }

    /// `sockets`: one image per socket (the first fd that holds it).
    /// Sockets in flight (SCM_RIGHTS) in the messages queued on `f`.
    static func inFlightSockets(of f: FileDescriptorImage) -> [FileDescriptorImage] {
        (f.socket?.datagrams ?? []).flatMap { $0.files ?? [] }.filter { $0.kind.isSocket }
    }

    /// Network namespaces the application made (saved id -> ssi's fd on the one made again).
    var netNamespaces: [UInt64: Int32] = [:]
    /// The root's network namespace when it is not ssi's (RestartOptions.rootNetwork).
    var rootNetwork: Int32? = nil

    /// Builds every socket: those of the root's network namespace here, the others on a
    /// thread of ssi inside their namespace (socket(2) makes a socket in the calling thread's
    /// network namespace, and binds, connects and sock_diag requests act there). Sockets
    /// that talk to each other (a pair, a connection, a datagram peer) are in one namespace.
    func build(_ held: [FileDescriptorImage]) throws {
        let groups = Dictionary(grouping: held) { $0.socket?.netns }
        if let rootNetwork {
            let outcome: Result<Void, Error>? = AppNamespaces.inside(rootNetwork, type: AppNamespaces.newNet) { Result { try self.buildSockets(groups[nil] ?? []) } }
            guard let outcome else { throw SSIError(.system, "could not enter the application's network namespace to rebuild its sockets") }
            try outcome.get()
        } else {
            try buildSockets(groups[nil] ?? [])
        }
        for (ns, list) in groups.sorted(by: { ($0.key ?? 0) < ($1.key ?? 0) }) {
            guard let ns else { continue }
            guard let fd = netNamespaces[ns] else { throw SSIError(.corrupt, "sockets of network namespace net:[\(ns)], which no process of the snapshot is in") }
            let outcome: Result<Void, Error>? = AppNamespaces.inside(fd, type: AppNamespaces.newNet) { Result { try self.buildSockets(list) } }
            guard let outcome else { throw SSIError(.system, "could not enter network namespace net:[\(ns)] to rebuild its sockets") }
            try outcome.get()
        }
    }

    private func buildSockets(_ held: [FileDescriptorImage]) throws {
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
        let udp = sockets.filter { $0.kind == .udpSocket }
        try buildUnix(unix)
        try buildTCP(tcp)
        try buildUDP(udp)
        try buildNetlink(sockets.filter { $0.kind == .netlinkSocket })
        try buildPacket(sockets.filter { $0.kind == .packetSocket })
        for f in sockets { try applyOptions(f) }
    }

    func state(_ f: FileDescriptorImage) -> SocketImage {
        // Version 2 snapshots: a socketpair end, no SocketImage.
        if let s = f.socket { return s }
        return SocketImage(family: 1, type: f.socketType ?? 1, state: .connected)
    }

    func newSocket(_ family: Int32, _ type: Int32, _ what: String) throws -> Int32 {
        let fd = socket(family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SSIError.sys("socket() for \(what)", errno: errno) }
        return fd
    }

    /// A TCP (type 1) or UDP (type 2) socket for each image of `socks`, known by its socketID,
    /// with IPV6_V6ONLY set before anything binds it (bind(2) decides with it which addresses
    /// the socket takes).
    func newInetSockets(_ socks: [FileDescriptorImage], type: Int32, _ proto: String) throws -> [(f: FileDescriptorImage, s: SocketImage, fd: Int32)] {
        try socks.compactMap { f in
            guard let id = f.socketID, let s = f.socket else { return nil }
            let fd = try newSocket(s.family, type, "\(proto) socket \(SockAddr.describe(s.address, family: s.family))")
            made[id] = fd
            if s.family == AF_INET6 { SocketOption.ipv6Only.set(fd, s.options?["IPV6_V6ONLY"] ?? 0) }
            // Sockets sharing a port with SO_REUSEPORT (nginx's `reuseport`, a server's
            // worker per CPU) each need it before their bind, or the second bind finds the
            // port taken (socket(7)).
            if (s.options?["SO_REUSEPORT"] ?? 0) != 0 { SocketOption.reusePort.set(fd, 1) }
            RawSocketOptions.restore(fd, s.rawOptions, who: "\(proto) socket of fd \(f.fd)", only: beforeBindSocketOptions)
            return (f, s, fd)
        }
    }

    private func applyOptions(_ f: FileDescriptorImage) throws {
        // A packet socket has its options before it is bound (buildPacket).
        guard f.kind != .packetSocket, let id = f.socketID, let fd = made[id], let s = f.socket else { return }
        for o in keptSocketOptions where o.families.contains(s.family) && o.name != "SO_REUSEADDR" && o.name != "IPV6_V6ONLY" {
            if let v = s.options?[o.name] { o.option.set(fd, v) }
        }
        RawSocketOptions.restore(fd, s.rawOptions, who: "socket of fd \(f.fd)")
        try SocketFilter.restore(fd, s.filter, locked: s.filterLocked == true, who: "socket of fd \(f.fd)")
        if s.ownerUID != nil || s.ownerGID != nil, fchown(fd, s.ownerUID ?? 0, s.ownerGID ?? 0) != 0 {
            throw SSIError.sys("give socket of fd \(f.fd) its owner \(s.ownerUID ?? 0):\(s.ownerGID ?? 0) back (fchown)", errno: errno)
        }
    }
}

extension ProcessRestorer {
    /// Sockets are built in ssi, where they can be bound, connected and filled with plain
    /// calls; this process (the root) takes each one and keeps it at its slot, before it forks.
    func takeSockets(_ shared: SharedDescriptions) throws {
        let sockets = SocketRebuilder()
        sockets.netNamespaces = netNamespaces
        sockets.rootNetwork = rootNetwork
        sockets.tcpPeerCheck = tcpPeerCheck
        sockets.tcpPeerAcks = tcpPeerAcks
        sockets.tcpKeepSent = tcpKeepSent
        sockets.pipes = pipes
        sockets.takeover = takeover
        sockets.creators = try socketCreators()
        defer { sockets.closeAll() }
        try sockets.build(shared.socketEnds)
        if !sockets.creators.missed.isEmpty {
            warn("unix sockets' peer credentials (SO_PEERCRED) are ssi's, not the application's, for: \(Set(sockets.creators.missed).sorted().joined(separator: ", "))")
        }
        for f in shared.socketEnds {
            guard let id = f.socketID, let mine = sockets.made[id], let slot = shared.socketSlot[id] else { continue }
            let fd = try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "socket of fd \(f.fd)")
            try inj.call("dup3 socket", .dup3, fd, UInt64(slot), 0)
            try inj.call("close", .close, fd)
        }
    }

    /// Who makes the calls that fix peer credentials (PeerCredentials.swift): a process with
    /// the caller's PID in the application's PID namespace (when it has its own, the one
    /// this root made), or this root itself for the calls it made.
    private func socketCreators() throws -> SocketCreators {
        var ns: Int32 = -1
        if ownNamespace {
            ns = Glibc.open("/proc/\(pid)/ns/pid", O_RDONLY | O_CLOEXEC)
            if ns < 0 { throw SSIError.sys("open /proc/\(pid)/ns/pid", errno: errno) }
        }
        return SocketCreators(pidNamespace: ns, rootPID: image.pid, rootOuterPID: pid) { [self] call, creds in try socketCallInRoot(call, creds) }
    }

    /// `call` made by this root with `creds`' effective ids (setresuid(2) with the real and
    /// saved ids left at root's, so that it may switch back: capabilities(7), the effective
    /// set comes back when the effective uid is 0 again). The fds are ssi's, copied in and
    /// out with pidfd_getfd.
    private func socketCallInRoot(_ call: CreatorCall, _ creds: PeerCredentials) throws -> (result: Int64, pair: (Int32, Int32)?) {
        let keep = UInt64(UInt32.max)   // -1: unchanged
        let switchIDs = creds.uid != 0 || creds.gid != 0
        if switchIDs {
            try inj.call("setresgid for a socket's credentials", .setresgid, keep, UInt64(creds.gid), keep)
            try inj.call("setresuid for a socket's credentials", .setresuid, keep, UInt64(creds.uid), keep)
        }
        var r: Int64 = 0
        var pair: (Int32, Int32)? = nil
        var theirs: [UInt64] = []
        do {
            switch call {
            case .socketpair(let type):
                r = try inj.rawArgs(.socketpair, [UInt64(AF_UNIX), UInt64(type | Int32(SOCK_CLOEXEC.rawValue)), 0, scratch + 20480])
                if r == 0 {
                    let sv = try mem.read(Int32.self, count: 2, at: scratch + 20480)
                    let a = sv[0], b = sv[1]
                    theirs = [UInt64(a), UInt64(b)]
                    pair = (try FDTransfer.copy(fd: a, from: ProcessID(pid)), try FDTransfer.copy(fd: b, from: ProcessID(pid)))
                }
            case .connect(let fd, let address):
                let in_ = try FDTransfer.take(fd, inj: inj, ssiPidFD: ssiPidFD, what: "a unix socket to connect")
                theirs = [in_]
                try mem.write(Array(address), to: scratch + 20480)
                r = try inj.rawArgs(.connect, [in_, scratch + 20480, UInt64(address.count)])
            case .listen(let fd, let backlog):
                let in_ = try FDTransfer.take(fd, inj: inj, ssiPidFD: ssiPidFD, what: "a unix socket to listen on")
                theirs = [in_]
                r = try inj.rawArgs(.listen, [in_, UInt64(UInt32(bitPattern: backlog))])
            }
        } catch {
            for fd in theirs { _ = try? inj.raw(.close, fd) }
            if switchIDs { _ = try? inj.raw(.setresuid, keep, 0, keep); _ = try? inj.raw(.setresgid, keep, 0, keep) }
            throw error
        }
        for fd in theirs { _ = try inj.raw(.close, fd) }
        if switchIDs {
            try inj.call("setresuid back to root", .setresuid, keep, 0, keep)
            try inj.call("setresgid back to root", .setresgid, keep, 0, keep)
        }
        return (r, pair)
    }
}
