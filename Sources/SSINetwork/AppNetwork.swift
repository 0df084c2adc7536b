import Foundation
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// Application addresses (issue 12, docs/streams.md): an application started with
/// `ssi run --net app` lives in a network namespace of its own, the way a pod does, with one
/// address of the cluster's application subnet that it keeps wherever it goes. Its
/// namespace is joined to its node by a veth pair: `eth0` inside (the address, a /32, and a
/// default route through 169.254.1.1), `ssia<N>` on the node (169.254.1.1, and the route
/// to the address). Every other node routes the address to the node the application is
/// on (AppRoutes): so two applications talk straight from node to node with the kernel's
/// own TCP, and when one moves, only routes change; no node forwards its traffic after
/// it has left.
public struct AppSubnet: Sendable, Equatable, CustomStringConvertible {
    public let base: UInt32
    public let prefix: Int

    /// The application ids' base (ProcessTable: 10,000,000 + a counter); the counter is the
    /// host part of the address, so every node computes the same address with no table.
    public static let firstApp: Int32 = 10_000_000
    /// The node's side of every application's link, the application's default gateway.
    /// Link-local (RFC 3927): it is never routed, so every node can use the same one.
    public static let gateway = "169.254.1.1"

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let p = Int(parts[1]), (8...30).contains(p), let a = IPv4.parse(String(parts[0])) else {
            throw SSIError(.invalidArgument, "network.app-subnet \(text) is not an IPv4 subnet such as 10.78.0.0/16 (prefix 8 to 30)")
        }
        let mask: UInt32 = p == 0 ? 0 : ~UInt32(0) << UInt32(32 - p)
        guard a & ~mask == 0 else {
            throw SSIError(.invalidArgument, "network.app-subnet \(text) has host bits set", hint: "give the subnet's first address, e.g. \(IPv4.text(a & mask))/\(p)")
        }
        (base, prefix) = (a, p)
    }

    public var description: String { "\(IPv4.text(base))/\(prefix)" }

    /// How many applications can have an address at once (the subnet's hosts).
    public var capacity: Int { (1 << (32 - prefix)) - 2 }

    /// The address of application `app`: the subnet's host number (app - 10,000,000).
    public func address(of app: Int32) throws -> String {
        let host = Int(app) - Int(Self.firstApp)
        guard host >= 1, host <= capacity else {
            throw SSIError(.busy, "application \(app) has no address in \(self): the subnet holds applications 1 to \(capacity) of the counter",
                           hint: "give network.app-subnet a larger subnet (a shorter prefix)")
        }
        return IPv4.text(base + UInt32(host))
    }

    /// The application whose address `address` is (the inverse of `address(of:)`).
    public func app(of address: String) -> Int32? {
        guard let a = IPv4.parse(address), contains(address), a > base else { return nil }
        return Self.firstApp + Int32(a - base)
    }

    public func contains(_ address: String) -> Bool {
        guard let a = IPv4.parse(address) else { return false }
        let mask: UInt32 = ~UInt32(0) << UInt32(32 - prefix)
        return a & mask == base
    }

    /// The node's side of application `app`'s link (an interface name has at most 15
    /// characters, IFNAMSIZ - 1: "ssia" and the counter fit).
    public static func hostInterface(_ app: Int32) -> String { "ssia\(Int(app) - Int(firstApp))" }
}

public enum IPv4 {
    public static func parse(_ s: String) -> UInt32? {
        let p = s.split(separator: ".", omittingEmptySubsequences: false).map { UInt32($0) }
        guard p.count == 4, p.allSatisfy({ $0 != nil && $0! <= 255 }) else { return nil }
        return p.reduce(0) { $0 << 8 | $1! }
    }

    public static func text(_ a: UInt32) -> String { "\(a >> 24).\(a >> 16 & 255).\(a >> 8 & 255).\(a & 255)" }
}

/// Making an application's namespace on this node and joining it to the node.
public enum AppLink {
    /// The routes this daemon adds carry this protocol number (ip-route(8) `proto`), so
    /// that it finds its own again after a restart and touches no other.
    public static let routeProtocol = "77"
    static let routeProtocolNumber: UInt8 = 77
    /// TCP's minimum retransmission timeout inside an application's namespace.
    public static let rtoMinMicroseconds = 10_000

    /// Makes a network namespace for application `app` with `address`, joined to this node:
    /// returns an fd on it, which the caller holds until a process is inside (the namespace
    /// lives as long as a process or an fd holds it, network_namespaces(7)). `nodeAddress`:
    /// the node's own address, the source of the node's packets to the application (else
    /// the kernel would take 169.254.1.1, which every node has).
    /// `route`: also route the address to the new link here; false for a namespace made
    /// ahead of a migration, whose address is still the source's until the restore
    /// (`routeHere` then).
    /// `direct`: also give it a link of its own on the node's LAN (AppDirectLink), the
    /// uplink being the node's interface that carries `nodeAddress`.
    public static func make(app: Int32, address: String, nodeAddress: String?, route: Bool = true,
                            direct: (uplink: String, subnet: AppSubnet)? = nil) throws -> Int32 {
        let host = AppSubnet.hostInterface(app)
        // A namespace of the same application that is still being torn down (a restart
        // right after `checkpoint --kill`, a migration back) may still hold the name: the
        // kernel frees a dead namespace's devices a little later (cleanup_net).
        // A direct link's temporary name left by a make that failed half-way.
        if interfaceExists(AppDirectLink.temporary(app)) { _ = try? Proc.run(["ip", "link", "del", AppDirectLink.temporary(app)], check: false) }
        for attempt in 0..<50 {
            guard interfaceExists(host) else { break }
            _ = try? Proc.run(["ip", "link", "del", host], check: false)
            if attempt > 0 { usleep(20_000) }
        }
        let fd: Int32
        do { fd = try ThreadFS.makeNetworkNamespace(privateTCPHash: true) } catch {
            throw SSIError(.permission, "could not make a network namespace for application \(app): \(error)", hint: "application addresses need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
        }
        do {
            let nsPath = "/proc/\(getpid())/fd/\(fd)"
            try batch([
                "link add \(host) type veth peer name eth0 netns \(nsPath)",
                "addr add \(AppSubnet.gateway)/32 dev \(host) scope link",
                "link set \(host) up",
            ] + (direct.map { AppDirectLink.makeLines(app: app, uplink: $0.uplink, namespace: nsPath) } ?? [])
              + (route ? [routeLine(app: app, address: address, nodeAddress: nodeAddress)] : []), what: "join application \(app)'s namespace to this node")
            // Inside: the address as a /32, the gateway reached on the link, and through it
            // everything else (the node, other applications).
            try batch((direct != nil ? [AppDirectLink.renameLine(app: app)] : []) + [
                "link set lo up",
                "link set eth0 up",
                "addr add \(address)/32 dev eth0",
                "route add \(AppSubnet.gateway) dev eth0 scope link",
                "route add default via \(AppSubnet.gateway) dev eth0 src \(address)",
            ], inside: nsPath, what: "give application \(app) its address \(address)")
            // Its peers are other applications of the cluster, a LAN away: a lost segment is
            // sent again after 10 ms rather than Linux's default 200 ms (tcp_rto_min_us,
            // Linux 6.11, per namespace, taken by each socket when it is made). A migration
            // drops the packets that arrive during the move (AppAddressLock), and the
            // stall the peers see is how soon they send them again.
            _ = try? Spawn.inNetwork(fd) { try ProcFS.write("/proc/sys/net/ipv4/tcp_rto_min_us", "\(AppLink.rtoMinMicroseconds)") }
            // Its direct link goes up now only if its address is routed here now; a
            // namespace made ahead of a migration waits for the restore (routeHere).
            if route, let direct { try AppDirectLink.bringUp(namespace: fd, app: app, address: address, subnet: direct.subnet) }
            // proxy_arp is not needed (the gateway is a real address of the node's side);
            // forwarding is: a node passes packets between its applications and the others.
            try? ProcFS.write("/proc/sys/net/ipv4/conf/\(host)/rp_filter", "0")
            return fd
        } catch {
            close(fd)
            _ = try? Proc.run(["ip", "link", "del", host], check: false)
            if interfaceExists(AppDirectLink.temporary(app)) { _ = try? Proc.run(["ip", "link", "del", AppDirectLink.temporary(app)], check: false) }
            throw error
        }
    }

    static func routeLine(app: Int32, address: String, nodeAddress: String?) -> String {
        "route replace \(address)/32 dev \(AppSubnet.hostInterface(app)) scope link proto \(routeProtocol)" + (nodeAddress.map { " src \($0)" } ?? "")
    }

    /// Routes the address to the application's link on this node (made ahead, `route: false`).
    public static func routeHere(app: Int32, address: String, nodeAddress: String?) throws {
        try Route4.replace(address, interface: AppSubnet.hostInterface(app), source: nodeAddress, proto: routeProtocolNumber)
    }

    /// Whether interface `name` exists in this node's network namespace: asked of the
    /// kernel (if_nametoindex(3), an ioctl on a socket of the calling thread's namespace),
    /// not read from /sys, which shows the namespace that mounted it (`ip netns exec`
    /// mounts one of its own, not always the daemon's).
    public static func interfaceExists(_ name: String) -> Bool { if_nametoindex(name) != 0 }

    /// Runs `ip -batch` with `lines`, inside the namespace of file `inside` if given;
    /// `force`: a line ip refuses does not stop the others (`ip -force`).
    static func batch(_ lines: [String], inside: String? = nil, force: Bool = false, what: String) throws {
        let file = "/tmp/ssi-ip-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).batch"
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: false, encoding: .utf8)
        defer { unlink(file) }
        let argv = (inside.map { ["nsenter", "--net=\($0)", "--"] } ?? []) + ["ip"] + (force ? ["-force"] : []) + ["-batch", file]
        let (code, out) = try Proc.run(argv, check: false)
        if code != 0 {
            throw SSIError(.system, "could not \(what): ip said: \(out.trimmingCharacters(in: .whitespacesAndNewlines))",
                           hint: "needs root and iproute2 (scripts/setup.sh installs it)")
        }
    }
}

/// An application's direct link (docs/streams.md, "Direct links"): besides its veth pair to
/// its node, its namespace has `eth1`, a macvlan (bridge mode) of the node's own LAN
/// interface with a MAC of its own, the same on every node (derived from its id), and routes
/// the application subnet there. Two applications then talk over the LAN as two hosts do,
/// with no forwarding by either node and no veth hop: the frame leaves through the node's
/// interface (macvlan's transmit hands it to the lower device) and comes in through the
/// peer node's, whose macvlan handler gives it to the namespace whose MAC it is. Everything
/// else (the node itself, other nodes, the outside world) still goes through the veth pair
/// and the node: a macvlan cannot talk to its own lower device, and the node's routes and
/// filters stay in that path. When the application moves, its MAC moves with it: the
/// target brings its eth1 up and announces the address (ARP), from which the LAN's switches
/// learn the new port; the peers' neighbour entries stay right (same MAC).
/// While a migration or a locked checkpoint holds its packets, the node takes the MAC over
/// (`divert`): a stand-in macvlan on the node takes it and eth1 a placeholder, so that what
/// the peers send directly enters the node and meets its hold (PacketHold) or its drops
/// (AppAddressLock), as with the veth path; at the freeze eth1 goes down (`silence`).
public enum AppDirectLink {
    /// The link's name in the application's namespace.
    public static let name = "eth1"

    /// The application's MAC: locally administered, unicast (IEEE 802: bit 1 of the first
    /// octet set, bit 0 clear), 02:53:53 and the 24 bits of its host number.
    public static func mac(_ app: Int32) -> [UInt8] {
        let h = UInt32(truncatingIfNeeded: Int(app) - Int(AppSubnet.firstApp))
        return [0x02, 0x53, 0x53, UInt8(h >> 16 & 255), UInt8(h >> 8 & 255), UInt8(h & 255)]
    }

    public static func macText(_ app: Int32) -> String { text(mac(app)) }

    static func text(_ mac: [UInt8]) -> String { mac.map { String(format: "%02x", $0) }.joined(separator: ":") }

    /// Runs `body` with an fd on the network namespace of application `app`'s process `root`.
    static func withNamespace<T>(of root: Int32, app: Int32, _ body: (Int32) throws -> T) throws -> T {
        let fd = open("/proc/\(root)/ns/net", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw SSIError.sys("open the network namespace of application \(app) (PID \(root))", errno: errno,
                               hint: "the application's root process is gone: ssi ps shows its state")
        }
        defer { close(fd) }
        return try body(fd)
    }

    /// The node's stand-in for the application's MAC while its packets are held.
    public static func standIn(_ app: Int32) -> String { "ssim\(Int(app) - Int(AppSubnet.firstApp))" }

    /// Made on the node and moved into the namespace under a temporary name, since its
    /// name there (eth1) may exist on the node.
    static func temporary(_ app: Int32) -> String { "ssiv\(Int(app) - Int(AppSubnet.firstApp))" }

    /// The node's `ip -batch` lines that make the link (down) in the namespace at `namespace`.
    static func makeLines(app: Int32, uplink: String, namespace: String) -> [String] {
        let t = temporary(app)
        return ["link add \(t) link \(uplink) address \(macText(app)) type macvlan mode bridge", "link set \(t) netns \(namespace)"]
    }

    /// The namespace's line that names it.
    static func renameLine(app: Int32) -> String { "link set \(temporary(app)) name \(name)" }

    /// Brings the link up in the namespace of `fd`, routes the subnet there and announces the
    /// address. Nothing if the namespace has no direct link.
    public static func bringUp(namespace fd: Int32, app: Int32, address: String, subnet: AppSubnet) throws {
        try Spawn.inNetwork(fd) {
            guard let flags = ThreadFS.interfaceFlags(name) else { return }
            // Its own MAC again if it was diverted (a migration given up).
            _ = ThreadFS.setInterfaceMAC(name, mac(app))
            // The same MAC on a namespace of this application that is still being torn down
            // on this node (a restart right after a kill): macvlan refuses a second one up
            // on the same lower device (EADDRINUSE) until the kernel frees the old one.
            var e: Int32 = 0
            for attempt in 0..<100 {
                e = ThreadFS.setInterfaceFlags(name, flags | 1)
                if e != EADDRINUSE && e != EBUSY { break }
                if attempt < 99 { usleep(20_000) }
            }
            if e != 0 { throw SSIError.sys("bring up application \(app)'s direct link (\(name), MAC \(macText(app)))", errno: e) }
            // Taking the interface down removed its routes (a route needs its device up).
            try Route4.replace(IPv4.text(subnet.base), prefix: subnet.prefix, interface: name, source: address, proto: AppLink.routeProtocolNumber)
            _ = ARP.announce(interface: name, mac: mac(app), address: address)
        }
    }

    /// The same, for the namespace of process `root`.
    public static func bringUp(root: Int32, app: Int32, address: String, subnet: AppSubnet) throws {
        try withNamespace(of: root, app: app) { try bringUp(namespace: $0, app: app, address: address, subnet: subnet) }
    }

    /// Hands the application's MAC to this node: the stand-in on the node takes it, the
    /// application's link (in the namespace of process `root`) a placeholder and stays up
    /// (the stand-in has no address: arp_ignore 8 answers no ARP from it, and with
    /// addrgenmode none and IPv6 off it never sends a frame of its own with the MAC).
    /// Nothing if it has no direct link; a second call (the lock after the hold) changes
    /// nothing (an address set to what it is is no change, netdevice(7)).
    public static func divert(app: Int32, root: Int32, uplink: String) throws {
        try withNamespace(of: root, app: app) { try divert(app: app, namespace: $0, uplink: uplink) }
    }

    private static func divert(app: Int32, namespace fd: Int32, uplink: String) throws {
        let standIn = standIn(app)
        guard (try Spawn.inNetwork(fd) { ThreadFS.interfaceFlags(name) != nil }) else { return }
        if !AppLink.interfaceExists(standIn) {
            // Made first, up, with an address of its own: macvlan has one device per MAC
            // on a lower device, and seen here, while a second one with the application's
            // MAC merely existed, frames for it reached neither.
            try AppLink.batch(["link add \(standIn) link \(uplink) address \(Self.text(placeholder(app, 0x54))) type macvlan mode bridge",
                               "link set \(standIn) addrgenmode none"], what: "make the stand-in for application \(app)'s MAC")
            try? ProcFS.write("/proc/sys/net/ipv4/conf/\(standIn)/arp_ignore", "8")
            // No IPv6 on it either: even with no address (addrgenmode none), an interface
            // that comes up sends MLD reports (RFC 3810, repeated for a second or so), and
            // one sent after the application's move would turn the LAN's switches back to
            // this node for its MAC.
            try? ProcFS.write("/proc/sys/net/ipv6/conf/\(standIn)/disable_ipv6", "1")
            // What comes in on it is for the application, routed on from here (to the hold).
            try? ProcFS.write("/proc/sys/net/ipv4/conf/\(standIn)/rp_filter", "0")
            let e = ThreadFS.setInterfaceFlags(standIn, (ThreadFS.interfaceFlags(standIn) ?? 0) | 1)
            if e != 0 {
                removeStandIn(app: app)
                throw SSIError.sys("bring up the stand-in for application \(app)'s MAC", errno: e)
            }
        }
        // Then the MAC moves with two ioctls back to back: the application's link stays up
        // under another MAC (it still sends, and its peers' frames, addressed to the MAC,
        // now enter the node). Taking it down and the stand-in up instead lost the peers'
        // acknowledgements in between (milliseconds at 40 Gbit/s are megabytes): the frozen
        // copy was saved behind what the peer had received, and a restored sender takes
        // such an acknowledgement for one of data it has not sent (it sends its whole queue
        // again, tcp(7) repair) and stalls.
        let e = try ThreadFS.swapMAC(namespace: fd, from: name, placeholder: placeholder(app, 0x55), to: standIn, mac: mac(app))
        if e != 0 { throw SSIError.sys("move application \(app)'s MAC \(macText(app)) to this node", errno: e) }
    }

    /// A MAC of the stand-in's or the diverted link's, never an application's (third octet).
    static func placeholder(_ app: Int32, _ third: UInt8) -> [UInt8] {
        var m = mac(app)
        m[2] = third
        return m
    }

    /// Nothing leaves the diverted application any more (its lock, at the freeze): its
    /// link goes down in its namespace.
    public static func silence(app: Int32, root: Int32) throws {
        try withNamespace(of: root, app: app) { fd in try Spawn.inNetwork(fd) {
            guard let flags = ThreadFS.interfaceFlags(name), flags & 1 != 0 else { return }
            let e = ThreadFS.setInterfaceFlags(name, flags & ~1)
            if e != 0 { throw SSIError.sys("set application \(app)'s direct link down", errno: e) }
        } }
    }

    /// The stand-in gone, if there is one.
    public static func removeStandIn(app: Int32) {
        let s = standIn(app)
        if AppLink.interfaceExists(s) { _ = try? Proc.run(["ip", "link", "del", s], check: false) }
    }

    /// The MAC back to the application (it goes on here): the stand-in gone, its link up.
    public static func restore(app: Int32, root: Int32, address: String, subnet: AppSubnet) throws {
        guard AppLink.interfaceExists(standIn(app)) else { return }
        removeStandIn(app: app)
        try bringUp(root: root, app: app, address: address, subnet: subnet)
    }

    /// The node's interface that carries `address` (its LAN interface), by getifaddrs(3).
    public static func interface(carrying address: String) -> String? {
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var p = list
        while let a = p {
            defer { p = a.pointee.ifa_next }
            guard let sa = a.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            let ok = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin -> Bool in
                var inAddr = sin.pointee.sin_addr
                return inet_ntop(AF_INET, &inAddr, &text, socklen_t(INET_ADDRSTRLEN)) != nil
            }
            if ok, String(cString: text) == address { return String(cString: a.pointee.ifa_name) }
        }
        return nil
    }
}

/// Where each application address is: the routes of one node. An address of an application
/// on another online node goes to that node's address; the node's own applications have
/// their link routes (AppLink.make); the addresses of stopped applications, or of nodes not
/// online, have none.
public struct AppRoutes: Sendable, Equatable {
    /// address -> the next hop (another node's address).
    public var via: [String: String]

    public init(via: [String: String]) { self.via = via }

    /// `apps`: (address, node) of every application that has an address and has not stopped.
    public init(me: NodeID, apps: [(address: String, node: NodeID)], nodes: [NodeID: String]) {
        var v: [String: String] = [:]
        for a in apps where a.node != me { if let hop = nodes[a.node] { v[a.address] = hop } }
        via = v
    }

    /// The `ip -batch` lines that turn `old` into `self`; `local`: addresses whose
    /// application has its link on this node (their route is AppLink's or a migration's,
    /// never the round's: a round that read the table just before a restart or a move here
    /// must not replace or delete it). A deletion names the hop it was added with, so that
    /// it can only remove a route of ours.
    public func changes(from old: AppRoutes, local: Set<String>) -> [String] {
        var lines: [String] = []
        for (a, hop) in via.sorted(by: { $0.key < $1.key }) where old.via[a] != hop && !local.contains(a) {
            lines.append("route replace \(a)/32 via \(hop) proto \(AppLink.routeProtocol)")
        }
        for (a, hop) in old.via.sorted(by: { $0.key < $1.key }) where via[a] == nil && !local.contains(a) {
            lines.append("route del \(a)/32 via \(hop) proto \(AppLink.routeProtocol)")
        }
        return lines
    }

    /// The routes to other nodes that a daemon of this node left (after a restart).
    public static func installed() -> AppRoutes {
        let out = (try? Proc.run(["ip", "-4", "-o", "route", "show", "proto", AppLink.routeProtocol], check: false))?.1 ?? ""
        var v: [String: String] = [:]
        for line in out.split(separator: "\n") {
            let w = line.split(separator: " ").map(String.init)
            guard let dst = w.first, let i = w.firstIndex(of: "via"), i + 1 < w.count else { continue }
            v[dst.hasSuffix("/32") ? String(dst.dropLast(3)) : dst] = w[i + 1]
        }
        return AppRoutes(via: v)
    }

    /// Applies the changes; a line ip refuses (a route that went with its interface) is
    /// not fatal to the others (`ip -force`).
    public static func apply(_ lines: [String]) throws {
        guard !lines.isEmpty else { return }
        try AppLink.batch(lines, force: true, what: "update the routes to other nodes' applications")
    }
}

/// The lock of an application address on its migration's source node, from the freeze on:
/// the copy about to go must acknowledge nothing a peer sends after the snapshot, nor send
/// anything. With a packet hold (PacketHold), what comes to it is routed to the hold and
/// what it sends stays in its namespace: the node's side of its link is set down
/// (SIOCSIFFLAGS, netdevice(7); both ends of a veth lose their carrier), with no program
/// to run while the application is frozen. Without one, an nft table drops both ways and
/// the peers send again what was dropped.
public enum AppAddressLock {
    public static func table(_ app: Int32) -> String { "ssi-applock-\(Int(app) - Int(AppSubnet.firstApp))" }

    public static func ruleset(table: String, address: String) -> String {
        """
        add table ip \(table)
        delete table ip \(table)
        table ip \(table) {
            chain forwarded { type filter hook forward priority -310; policy accept; ip saddr \(address) drop; ip daddr \(address) drop; }
            chain received { type filter hook input priority -310; policy accept; ip saddr \(address) drop; }
            chain sent { type filter hook output priority -310; policy accept; ip daddr \(address) drop; }
        }

        """
    }

    public static func lock(app: Int32, address: String, holding: Bool) throws {
        if holding {
            let host = AppSubnet.hostInterface(app)
            guard let flags = ThreadFS.interfaceFlags(host) else { throw SSIError(.notFound, "application \(app)'s link \(host) is not on this node") }
            let e = ThreadFS.setInterfaceFlags(host, flags & ~1 /* IFF_UP */)
            if e != 0 { throw SSIError.sys("set \(host) down to lock application \(app)'s address \(address)", errno: e) }
            return
        }
        let t = table(app)
        let (code, out) = try NFTables.apply(ruleset(table: t, address: address), tag: t)
        if code != 0 { throw SSIError(.system, "nft refused the lock of application \(app)'s address \(address): \(out)") }
    }

    /// After a committed migration: the source copy's link deleted if it is still there,
    /// never brought up. Its namespace outlives the killed processes for a while (the
    /// kernel tears a network namespace down asynchronously, after its last reference), and
    /// what the dying copy's kernel sent meanwhile (the acknowledgement that leaving TCP
    /// repair mode sends, tcp(7)) waits in its eth0's queue for a carrier: set up again, the
    /// link would deliver it, a second late, to the peers, which take its timestamps, newer
    /// than the restored copy's (PAWS, RFC 7323), and drop the restored copy's segments, or
    /// a reset that ends the connection (seen: redis-benchmark's ten connections reset
    /// after a move to redis's node).
    public static func discard(app: Int32) {
        let host = AppSubnet.hostInterface(app)
        if ThreadFS.interfaceFlags(host) != nil { _ = try? Proc.run(["ip", "link", "del", host], check: false) }
        AppDirectLink.removeStandIn(app: app)
        _ = try? Proc.run(["nft", "delete", "table", "ip", table(app)], check: false)
    }

    /// The lock gone after a failed migration: the link up again, the nft table removed.
    public static func unlock(app: Int32) {
        let host = AppSubnet.hostInterface(app)
        if let flags = ThreadFS.interfaceFlags(host), flags & 1 == 0 { _ = ThreadFS.setInterfaceFlags(host, flags | 1) }
        _ = try? Proc.run(["nft", "delete", "table", "ip", table(app)], check: false)
    }
}
