import CSSILinux
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Socket options by name (socket(7), tcp(7), ipv6(7); values from the uapi headers, some of
/// which glibc does not declare), with typed get and set.
public struct SocketOption: Hashable, Sendable {
    public let level: Int32
    public let name: Int32
    public init(level: Int32, name: Int32) { self.level = level; self.name = name }

    public static let reuseAddress = SocketOption(level: SOL_SOCKET, name: 2)          // SO_REUSEADDR
    public static let type = SocketOption(level: SOL_SOCKET, name: 3)                  // SO_TYPE
    public static let sendBuffer = SocketOption(level: SOL_SOCKET, name: 7)            // SO_SNDBUF
    public static let receiveBuffer = SocketOption(level: SOL_SOCKET, name: 8)         // SO_RCVBUF
    public static let keepAlive = SocketOption(level: SOL_SOCKET, name: 9)             // SO_KEEPALIVE
    public static let reusePort = SocketOption(level: SOL_SOCKET, name: 15)            // SO_REUSEPORT
    public static let passCredentials = SocketOption(level: SOL_SOCKET, name: 16)      // SO_PASSCRED
    public static let sendBufferForce = SocketOption(level: SOL_SOCKET, name: 32)      // SO_SNDBUFFORCE (root)
    public static let receiveBufferForce = SocketOption(level: SOL_SOCKET, name: 33)   // SO_RCVBUFFORCE (root)
    public static let `protocol` = SocketOption(level: SOL_SOCKET, name: 38)           // SO_PROTOCOL
    public static let domain = SocketOption(level: SOL_SOCKET, name: 39)               // SO_DOMAIN
    public static let peekOffset = SocketOption(level: SOL_SOCKET, name: 42)           // SO_PEEK_OFF
    public static let tcpNoDelay = SocketOption(level: Int32(IPPROTO_TCP), name: 1)    // TCP_NODELAY
    public static let tcpMaxSegment = SocketOption(level: Int32(IPPROTO_TCP), name: 2) // TCP_MAXSEG
    public static let tcpInfo = SocketOption(level: Int32(IPPROTO_TCP), name: 11)      // TCP_INFO
    public static let tcpRepair = SocketOption(level: Int32(IPPROTO_TCP), name: 19)    // TCP_REPAIR (3.5)
    public static let tcpRepairQueue = SocketOption(level: Int32(IPPROTO_TCP), name: 20)   // TCP_REPAIR_QUEUE
    public static let tcpQueueSequence = SocketOption(level: Int32(IPPROTO_TCP), name: 21) // TCP_QUEUE_SEQ
    public static let tcpRepairOptions = SocketOption(level: Int32(IPPROTO_TCP), name: 22) // TCP_REPAIR_OPTIONS
    public static let tcpTimestamp = SocketOption(level: Int32(IPPROTO_TCP), name: 24)     // TCP_TIMESTAMP
    public static let tcpRepairWindow = SocketOption(level: Int32(IPPROTO_TCP), name: 29)  // TCP_REPAIR_WINDOW (4.8)
    public static let ipv6Only = SocketOption(level: Int32(IPPROTO_IPV6), name: 26)    // IPV6_V6ONLY

    /// TCP_REPAIR_QUEUE values.
    public static let tcpNoQueue: Int32 = 0, tcpReceiveQueue: Int32 = 1, tcpSendQueue: Int32 = 2

    /// getsockopt of an int option; nil on failure (errno set).
    public func get(_ fd: Int32) -> Int32? {
        var v: Int32 = 0
        var len = socklen_t(4)
        return getsockopt(fd, level, name, &v, &len) == 0 ? v : nil
    }

    /// setsockopt of an int option; false on failure (errno set).
    @discardableResult
    public func set(_ fd: Int32, _ value: Int32) -> Bool {
        var v = value
        return setsockopt(fd, level, name, &v, 4) == 0
    }

    /// getsockopt of a structure into `bytes`; returns the length the kernel gave, nil on failure.
    public func get(_ fd: Int32, into bytes: inout [UInt8]) -> Int? {
        var len = socklen_t(bytes.count)
        return getsockopt(fd, level, name, &bytes, &len) == 0 ? Int(len) : nil
    }

    /// setsockopt of a structure; throws naming `what`.
    public func set(_ fd: Int32, bytes: [UInt8], _ what: @autoclosure () -> String) throws {
        let r = bytes.withUnsafeBytes { setsockopt(fd, level, name, $0.baseAddress, socklen_t($0.count)) }
        if r != 0 { throw SSIError.sys(what(), errno: errno) }
    }
}

/// ioctl(2) requests on sockets and pipes (sockios.h, ioctls.h).
public enum SocketIoctl {
    /// SIOCINQ, the same number as FIONREAD: bytes queued to read.
    public static let inputQueue: UInt = 0x541B
    /// SIOCOUTQ: bytes queued to send, not yet acknowledged.
    public static let outputQueue: UInt = 0x5411
    /// SIOCOUTQNSD: bytes in the send queue not sent yet (tcp(7)).
    public static let outputQueueNotSent: UInt = 0x894B

    /// Bytes queued to read on a socket, pipe or inotify fd; nil if refused.
    public static func queuedBytes(_ fd: Int32) -> Int32? {
        var n: Int32 = 0
        return ioctl(fd, inputQueue, &n) == 0 ? n : nil
    }
}

/// One message read off a socket with MSG_PEEK (Socket.peek).
public struct PeekedMessage {
    public var bytes: [UInt8]
    /// The sender's name: sockaddr bytes as recvmsg gave them (empty when it had none).
    public var name: [UInt8]
    /// File descriptors in flight, installed in this process by the peek (close-on-exec);
    /// the caller owns them. nil when more came than could be read.
    public var fds: [Int32]?
    /// Its SCM_CREDENTIALS (the socket must have SO_PASSCRED): the sender's PID (in our PID
    /// namespace), uid and gid; nil without.
    public var credentials: (pid: Int32, uid: UInt32, gid: UInt32)?
}

/// Socket calls that C must make (ancillary data).
public enum Socket {
    /// recvmsg(2) with MSG_PEEK|MSG_DONTWAIT into `buf` (reused from call to call): the next
    /// message (or, on a stream, bytes) without consuming it. nil when nothing is queued
    /// (EAGAIN); throws on other errors.
    public static func peek(_ sock: Int32, buffer buf: inout [UInt8], what: @autoclosure () -> String) throws -> PeekedMessage? {
        var name = [UInt8](repeating: 0, count: MemoryLayout<sockaddr_storage>.size)
        var namelen = UInt32(name.count)
        var fds = [Int32](repeating: -1, count: 253)
        var nfds: Int32 = 0
        var cred: [UInt32] = [0, 0, 0]
        let n = cssi_peek_message(sock, &buf, UInt(buf.count), &name, &namelen, &fds, &nfds, &cred)
        if n == -Int(EAGAIN) { return nil }
        if n < 0 { throw SSIError.sys(what(), errno: Int32(-n)) }
        var m = PeekedMessage(bytes: Array(buf[0..<n]), name: Array(name.prefix(Int(namelen))), fds: nfds < 0 ? nil : Array(fds.prefix(Int(nfds))))
        if cred[0] != 0 { m.credentials = (Int32(bitPattern: cred[0]), cred[1], cred[2]) }
        return m
    }

    /// The next datagram of `sock` (MSG_PEEK|MSG_DONTWAIT, into `buf`) with its sender's name
    /// and what its ancillary data tells of its packet (CSSILinux cssi_packet_info: the
    /// destination address of its header, TTL or hop limit, TOS or traffic class), as far as
    /// the socket asks for them. nil when nothing is queued.
    public static func peekDatagram(_ sock: Int32, buffer buf: inout [UInt8], what: @autoclosure () -> String)
        throws -> (bytes: [UInt8], name: [UInt8], destination: [UInt8]?, ttl: Int32?, tos: Int32?)? {
        var name = [UInt8](repeating: 0, count: MemoryLayout<sockaddr_storage>.size)
        var namelen = UInt32(name.count)
        var info = cssi_packet_info()
        let n = cssi_peek_datagram(sock, &buf, UInt(buf.count), &name, &namelen, &info)
        if n == -Int(EAGAIN) { return nil }
        if n < 0 { throw SSIError.sys(what(), errno: Int32(-n)) }
        let dst = withUnsafeBytes(of: info.dst) { Array($0.prefix(Int(info.dst_len))) }
        return (Array(buf[0..<n]), Array(name.prefix(Int(namelen))), dst.isEmpty ? nil : dst, info.ttl >= 0 ? info.ttl : nil, info.tos >= 0 ? info.tos : nil)
    }

    /// One datagram to `address` with the TTL (hop limit) and TOS (traffic class) it is given
    /// as ancillary data (nil: the socket's own). Returns the bytes sent or -errno.
    public static func sendDatagram(_ sock: Int32, _ bytes: Data, to address: Data, ipv6: Bool, ttl: Int32?, tos: Int32?) -> Int {
        bytes.withUnsafeBytes { b in
            address.withUnsafeBytes { cssi_send_datagram(sock, $0.baseAddress, UInt32($0.count), b.baseAddress, UInt(b.count), ipv6 ? 1 : 0, ttl ?? -1, tos ?? -1) }
        }
    }

    /// recvmsg(2), blocking: up to `max` bytes, and the fds (at most 3) that came with them
    /// as SCM_RIGHTS, close-on-exec, owned by the caller. Throws on an error.
    public static func receive(_ sock: Int32, max: Int) throws -> (bytes: [UInt8], fds: [Int32]) {
        var buf = [UInt8](repeating: 0, count: max)
        var fds = [Int32](repeating: -1, count: 3)
        var nfds: Int32 = 0
        let n = cssi_recv_with_fds(sock, &buf, UInt(max), &fds, &nfds)
        if n < 0 { throw SSIError.sys("recvmsg on socket \(sock)", errno: Int32(-n)) }
        return (Array(buf[0..<n]), Array(fds.prefix(Int(nfds))))
    }

    /// sendmsg(2), MSG_DONTWAIT|MSG_NOSIGNAL, of `bytes` to `address` (nil: the connected
    /// peer) with `fds` as SCM_RIGHTS. Returns the bytes sent or -errno.
    /// `credentials`: SCM_CREDENTIALS to send (pid in our namespace, uid, gid: another
    /// process's needs CAP_SYS_ADMIN, other ids CAP_SETUID/CAP_SETGID).
    public static func send(_ sock: Int32, _ bytes: Data, to address: Data?, fds: [Int32], credentials: (pid: Int32, uid: UInt32, gid: UInt32)? = nil) -> Int {
        let cred: [UInt32]? = credentials.map { [UInt32(bitPattern: $0.pid), $0.uid, $0.gid] }
        return bytes.withUnsafeBytes { b in
            fds.withUnsafeBufferPointer { f in
                (cred ?? []).withUnsafeBufferPointer { c in
                    let cp = cred == nil ? nil : c.baseAddress
                    guard let address else { return cssi_send_with_creds(sock, nil, 0, b.baseAddress, UInt(b.count), f.baseAddress, Int32(f.count), cp) }
                    return address.withUnsafeBytes { cssi_send_with_creds(sock, $0.baseAddress, UInt32($0.count), b.baseAddress, UInt(b.count), f.baseAddress, Int32(f.count), cp) }
                }
            }
        }
    }
}

public enum UnixSocketFile {
    public enum Location: Equatable { case unknown, path(String), removed }

    /// Where the file of a unix socket bound to a path is now (SIOCUNIXFILE): at a path
    /// (renamed since the bind, or not), removed (unlinked: the socket keeps its name, but
    /// no file leads to it), or unknown (no such ioctl before Linux 6.11, or no file).
    public static func location(of socket: Int32) -> Location {
        let r = cssi_ioctl_long(socket, 0x89E0, 0)
        guard r >= 0 else { return .unknown }
        defer { close(Int32(r)) }
        guard let link = try? ProcFS.readLink("/proc/self/fd/\(r)"), link.hasPrefix("/") else { return .unknown }
        return link.hasSuffix(" (deleted)") ? .removed : .path(link)
    }

    /// The absolute path of the file a unix socket is bound to, through SIOCUNIXFILE
    /// (0x89E0, SIOCPROTOPRIVATE; Linux 6.11): an O_PATH fd on that very file, whatever the
    /// cwd its bind was relative to; /proc/self/fd names it. nil if the kernel lacks it, the
    /// socket has no file (abstract, unbound), or the file was removed.
    public static func path(of socket: Int32) -> String? {
        let r = cssi_ioctl_long(socket, 0x89E0, 0)
        guard r >= 0 else { return nil }
        defer { close(Int32(r)) }
        guard let link = try? ProcFS.readLink("/proc/self/fd/\(r)"), link.hasPrefix("/"), !link.hasSuffix(" (deleted)") else { return nil }
        return link
    }
}

public enum ThreadFS {
    /// Runs `body` on a new thread and waits for it: what it does to its own namespaces
    /// (setns(2) and unshare(2) of the net, IPC and UTS kinds move only the calling thread)
    /// ends with it, and every other thread's stay as they were.
    public static func onThread<T>(_ body: @escaping () -> T) -> T {
        nonisolated(unsafe) var result: T? = nil   // written by the thread, read after the semaphore
        nonisolated(unsafe) let work = body        // run on that thread only, while we wait
        let done = DispatchSemaphore(value: 0)
        Thread {
            defer { done.signal() }
            result = work()
        }.start()
        done.wait()
        return result!
    }

    /// A new, empty network namespace (only "lo", down), held by the returned fd.
    /// `privateTCPHash`: with a TCP hash table of its own (PrivateTCPHash).
    public static func makeNetworkNamespace(privateTCPHash: Bool = false) throws -> Int32 {
        let made: (fd: Int32, errno: Int32) = onThread {
            let e = privateTCPHash ? PrivateTCPHash.during { unshareNetwork() } : unshareNetwork()
            guard e == 0 else { return (-1, e) }
            let fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
            return (fd, fd < 0 ? errno : 0)
        }
        if made.fd < 0 { throw SSIError.sys("make a network namespace (unshare CLONE_NEWNET)", errno: made.errno, hint: "needs root (CAP_SYS_ADMIN)") }
        return made.fd
    }

    /// unshare(2) CLONE_NEWNET for the calling thread: a new, empty network namespace (only
    /// "lo", down). Returns 0 or an errno.
    public static func unshareNetwork() -> Int32 {
        let r = cssi_unshare_net()
        return r < 0 ? Int32(-r) : 0
    }

    /// setns(2) of the calling thread into the namespace of `fd` (CLONE_NEWNET 0x40000000...).
    public static func enter(_ fd: Int32, type: Int32) -> Int32 {
        let r = cssi_setns(fd, type)
        return r < 0 ? Int32(-r) : 0
    }

    /// The flags of network interface `name` (IFF_UP...) in the calling thread's network
    /// namespace (SIOCGIFFLAGS, netdevice(7)); nil if it has none of that name.
    public static func interfaceFlags(_ name: String) -> UInt32? {
        let r = cssi_if_flags(name)
        return r < 0 ? nil : UInt32(r)
    }

    /// Deletes the interface with index `index` (rtnetlink RTM_DELLINK). Returns 0 or an errno.
    public static func deleteInterface(index: UInt32) -> Int32 {
        let r = cssi_link_delete(Int32(bitPattern: index))
        return r < 0 ? -r : 0
    }

    /// Sets them (SIOCSIFFLAGS). Returns 0 or an errno.
    public static func setInterfaceFlags(_ name: String, _ flags: UInt32) -> Int32 {
        let r = cssi_if_set_flags(name, flags)
        return r < 0 ? Int32(-r) : 0
    }

    /// Moves an Ethernet address from interface `from` of the network namespace of `fd`
    /// (which gets `placeholder`) to interface `to` of the calling thread's namespace, with
    /// two ioctls back to back (cssi_swap_mac): frames for the address arriving in between
    /// reach neither. Returns 0 or an errno.
    public static func swapMAC(namespace fd: Int32, from: String, placeholder: [UInt8], to: String, mac: [UInt8]) throws -> Int32 {
        guard mac.count == 6, placeholder.count == 6 else { return EINVAL }
        let here = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard here >= 0 else { return errno }
        defer { close(here) }
        return try Spawn.inNetwork(fd) { () -> Int32 in
            let there = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard there >= 0 else { return errno }
            defer { close(there) }
            let r = placeholder.withUnsafeBufferPointer { p in mac.withUnsafeBufferPointer { m in cssi_swap_mac(there, from, p.baseAddress, here, to, m.baseAddress) } }
            return r < 0 ? Int32(-r % 1000) : 0
        }
    }

    /// Sets its Ethernet address (SIOCSIFHWADDR). Returns 0 or an errno.
    public static func setInterfaceMAC(_ name: String, _ mac: [UInt8]) -> Int32 {
        guard mac.count == 6 else { return EINVAL }
        let r = mac.withUnsafeBufferPointer { cssi_if_set_mac(name, $0.baseAddress) }
        return r < 0 ? Int32(-r) : 0
    }

    /// The inode of the network namespace socket `fd` was made in (SIOCGSKNS), nil if the
    /// kernel cannot tell.
    public static func socketNetworkNamespace(_ fd: Int32) -> UInt64? {
        let r = cssi_socket_netns(fd)
        return r < 0 ? nil : UInt64(r)
    }

    /// The type of the file system `path` is on (statfs(2) f_type), nil if it cannot tell.
    public static func fileSystemType(_ path: String) -> Int? {
        let r = cssi_fs_type(path)
        return r < 0 ? nil : r
    }

    /// Queues signal `info` (a 128-byte siginfo, its first int the signal) on process `tgid`,
    /// or on its thread `tid` (rt_sigqueueinfo(2), rt_tgsigqueueinfo(2)). Returns 0 or an errno.
    public static func queueSignal(_ info: [UInt8], tgid: Int32, tid: Int32?) -> Int32 {
        guard info.count == 128 else { return EINVAL }
        let sig = info.withUnsafeBytes { $0.load(as: Int32.self) }
        let r = info.withUnsafeBytes { b in tid.map { cssi_rt_tgsigqueueinfo(tgid, $0, sig, b.baseAddress) } ?? cssi_rt_sigqueueinfo(tgid, sig, b.baseAddress) }
        return r < 0 ? Int32(-r) : 0
    }

    /// unshare(2) CLONE_FS for the calling thread only: a chdir on it then moves no other
    /// thread's cwd. Returns 0 or an errno.
    public static func unshareCwd() -> Int32 {
        let r = cssi_unshare_fs()
        return r < 0 ? Int32(-r) : 0
    }
}

/// A layer-3 tun interface of this network namespace (Documentation/networking/tuntap.rst):
/// what the kernel routes to it is read from the fd, one IP packet per read; what is
/// written to the fd is received by the kernel as if it came in on that interface.
public enum TunDevice {
    public static func open(_ name: String) throws -> Int32 {
        let fd = cssi_tun_open(name)
        if fd < 0 { throw SSIError.sys("open tun interface \(name) (/dev/net/tun)", errno: -fd, hint: "needs root (CAP_NET_ADMIN) and a kernel with CONFIG_TUN") }
        return fd
    }
}

/// IPv4 routes of this network namespace, set over rtnetlink (no `ip` program to start).
public enum Route4 {
    /// Replaces (or adds) the route `destination`/32 out of `interface` and/or via `gateway`,
    /// with preferred source `source`, tagged with routing protocol `proto` (ip-route(8)).
    public static func replace(_ destination: String, interface: String? = nil, gateway: String? = nil, source: String? = nil, proto: UInt8) throws {
        try replace(destination, prefix: 32, interface: interface, gateway: gateway, source: source, proto: proto)
    }

    /// The same for `destination`/`prefix`.
    public static func replace(_ destination: String, prefix: Int, interface: String? = nil, gateway: String? = nil, source: String? = nil, proto: UInt8) throws {
        func addr(_ s: String?) throws -> UInt32 {
            guard let s else { return 0 }
            var a = in_addr()
            guard inet_pton(AF_INET, s, &a) == 1 else { throw SSIError(.invalidArgument, "\(s) is not an IPv4 address") }
            return a.s_addr
        }
        var oif: Int32 = 0
        if let interface {
            oif = Int32(if_nametoindex(interface))
            if oif == 0 { throw SSIError.sys("route \(destination): interface \(interface)", errno: errno) }
        }
        guard (0...32).contains(prefix) else { throw SSIError(.invalidArgument, "route \(destination)/\(prefix): the prefix is 0 to 32") }
        let r = cssi_route4_replace_prefix(try addr(destination), UInt8(prefix), oif, try addr(gateway), try addr(source), proto)
        if r < 0 {
            let how = [interface.map { "dev \($0)" }, gateway.map { "via \($0)" }].compactMap { $0 }.joined(separator: " ")
            throw SSIError.sys("route \(destination)/\(prefix) \(how)", errno: -r)
        }
    }
}

/// ARP announcements (RFC 5227) from the calling thread's network namespace.
public enum ARP {
    /// Broadcasts "`address` is at `mac`" from `interface` (cssi_announce_arp): switches and
    /// bridges learn the MAC's port from it. Returns 0 or an errno.
    public static func announce(interface: String, mac: [UInt8], address: String) -> Int32 {
        var a = in_addr()
        guard mac.count == 6, inet_pton(AF_INET, address, &a) == 1 else { return EINVAL }
        let r = mac.withUnsafeBufferPointer { cssi_announce_arp(interface, $0.baseAddress, a.s_addr) }
        return r < 0 ? -r : 0
    }
}

/// Network namespaces with a TCP established-connection hash table of their own
/// (net.ipv4.tcp_child_ehash_entries, Documentation/networking/ip-sysctl.rst, Linux 6.1),
/// instead of a share of the host's. Reading /proc/PID/net/tcp (or tcp6) walks every bucket
/// of the table the namespace uses: the host's, sized by its memory (262144 buckets on a
/// 24 GiB machine), takes 4.6 ms a read, a table of 4096 buckets 0.14 ms. ssi reads those
/// files of an application's namespace while its incoming traffic is held for a move (its
/// listeners, its handshakes, its connections: 20 ms of its peers' stall went there) and for
/// `ssi streams` every second. 4096 buckets are 32 KiB; a namespace with tens of thousands of
/// connections only has longer chains.
public enum PrivateTCPHash {
    public static let entries = 4096
    private static let lock = NSLock()

    /// Runs `body`, which makes network namespaces (unshare(2), clone(2) CLONE_NEWNET, `ip
    /// netns add`), with the calling thread's namespace's tcp_child_ehash_entries at
    /// `entries`, and puts the setting back after. The kernel reads it from the namespace
    /// the new one is made from, when it is made. A setting not 0 (the administrator's) is
    /// left as it is; a kernel without it (before 6.1) or a refused write changes nothing.
    public static func during<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        // Opened before `body` moves the thread to another namespace: the open fd stays on
        // this namespace's setting (a /proc/sys/net file is the opener's namespace's).
        let fd = open("/proc/sys/net/ipv4/tcp_child_ehash_entries", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return try body() }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = pread(fd, &buf, 31, 0)
        guard n > 0, String(decoding: buf[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "0" else { return try body() }
        let text = Array("\(entries)\n".utf8)
        guard pwrite(fd, text, text.count, 0) == text.count else { return try body() }
        defer { _ = pwrite(fd, "0\n", 2, 0) }
        return try body()
    }
}
