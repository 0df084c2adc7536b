import Foundation
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// The cluster-wide table of connections between applications (`ssi streams`, issue 12).
/// Each node lists the established TCP connections of its applications that have an
/// address of their own, with the bytes each way, in the KDDM set `streams` (object id =
/// node); a reader pairs the two ends of each connection (one end's local address and port
/// are the other's remote ones). The kernel counts a socket's bytes from its creation, so a
/// restored socket would start again from zero: the source of a migration writes each
/// connection's totals at the freeze into `stream-bases` (object id = application), and the
/// target adds them to its own counts.
public struct StreamEnd: Codable, Sendable, Equatable, Hashable {
    public var address: String
    public var port: UInt16
    public init(address: String, port: UInt16) { (self.address, self.port) = (address, port) }
    public var description: String { "\(address):\(port)" }
}

/// One connection as one of its ends sees it.
public struct StreamEntry: Codable, Sendable, Equatable {
    public var app: Int32
    public var node: NodeID
    public var local: StreamEnd
    public var remote: StreamEnd
    /// Bytes sent and acknowledged by the peer (tcpi_bytes_acked), and received
    /// (tcpi_bytes_received), since the connection began, across moves.
    public var sent: UInt64
    public var received: UInt64
    public init(app: Int32, node: NodeID, local: StreamEnd, remote: StreamEnd, sent: UInt64, received: UInt64) {
        (self.app, self.node, self.local, self.remote, self.sent, self.received) = (app, node, local, remote, sent, received)
    }
    /// The connection's key, the same from both ends.
    public var key: String { [local.description, remote.description].sorted().joined(separator: "-") }
}

public struct NodeStreams: Codable, Sendable, Equatable {
    public var node: NodeID
    public var entries: [StreamEntry]
    public init(node: NodeID, entries: [StreamEntry]) { (self.node, self.entries) = (node, entries) }
}

/// The totals of an application's connections at its last migration's freeze, by
/// `StreamEntry.key`.
public struct StreamBases: Codable, Sendable, Equatable {
    /// The node the application was moving to: only that node uses them (a later move
    /// writes new ones).
    public var node: NodeID
    public var bytes: [String: [UInt64]]   // key -> [sent, received]
    public init(node: NodeID, bytes: [String: [UInt64]]) { (self.node, self.bytes) = (node, bytes) }
    public init(node: NodeID, entries: [StreamEntry]) {
        self.node = node
        bytes = Dictionary(entries.map { ($0.key, [$0.sent, $0.received]) }, uniquingKeysWith: { a, _ in a })
    }
}

/// A row of `ssi streams`: both ends when both are applications of the cluster; `b`'s
/// application and node are nil when it is not one (a node's own process, say).
public struct StreamRow: Codable, Sendable, Equatable {
    public struct End: Codable, Sendable, Equatable {
        public var app: Int32?
        public var node: NodeID?
        public var address: String
        public var port: UInt16
    }
    public var a: End
    public var b: End
    public var state: String
    public var bytes_a_to_b: UInt64
    public var bytes_b_to_a: UInt64

    /// Pairs every node's entries. An end listed twice (a migration's source and target for
    /// a moment) counts once: the entry of the node the application is on wins, as `where`
    /// says (application -> node), else the first.
    public static func table(_ published: [NodeStreams], where placed: [Int32: NodeID] = [:]) -> [StreamRow] {
        var ends: [String: StreamEntry] = [:]   // "local-remote" -> entry
        for n in published {
            for e in n.entries {
                let k = "\(e.local.description)>\(e.remote.description)"
                if let had = ends[k], placed[had.app] == had.node { continue }
                ends[k] = e
            }
        }
        var rows: [StreamRow] = []
        var done = Set<String>()
        for k in ends.keys.sorted() {
            let e = ends[k]!
            guard !done.contains(e.key) else { continue }
            done.insert(e.key)
            let other = ends["\(e.remote.description)>\(e.local.description)"]
            let a = End(app: e.app, node: e.node, address: e.local.address, port: e.local.port)
            let b = End(app: other?.app, node: other?.node, address: e.remote.address, port: e.remote.port)
            rows.append(StreamRow(a: a, b: b, state: "established", bytes_a_to_b: e.sent, bytes_b_to_a: e.received))
        }
        return rows.sorted { ($0.a.app ?? 0, $0.a.port) < ($1.a.app ?? 0, $1.a.port) }
    }
}

public enum StreamScan {
    /// The established TCP connections of one application with an address (found from
    /// outside, Connections.established), with the kernel's byte counts read through a copy
    /// of one of each socket's fds (pidfd_getfd(2); TCP_INFO, tcp(7)) plus `bases`.
    public static func of(app: Int32, root: Int32, node: NodeID, address: String, bases: StreamBases?) -> [StreamEntry] {
        var out: [StreamEntry] = []
        for c in Connections.toOutside(root: root) where c.local == address {
            var e = StreamEntry(app: app, node: node, local: StreamEnd(address: c.local, port: c.localPort),
                                remote: StreamEnd(address: c.remote, port: c.remotePort), sent: 0, received: 0)
            if let (sent, received) = counts(c) { (e.sent, e.received) = (sent, received) }
            if let b = bases?.bytes[e.key], b.count == 2 { e.sent &+= b[0]; e.received &+= b[1] }
            out.append(e)
        }
        return out.sorted { ($0.local.port, $0.remote.description) < ($1.local.port, $1.remote.description) }
    }

    /// tcpi_bytes_acked (offset 120) and tcpi_bytes_received (offset 128) of struct
    /// tcp_info (linux/tcp.h, Linux 4.1 and 4.2).
    static func counts(_ c: TCPConnection) -> (UInt64, UInt64)? {
        guard let h = c.holders.first, let fd = try? PidFD.copy(fd: h.fd, of: ProcessID(h.pid)) else { return nil }
        defer { close(fd) }
        var info = [UInt8](repeating: 0, count: 256)
        var len = socklen_t(info.count)
        guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &len) == 0, len >= 136 else { return nil }
        return info.withUnsafeBytes { ($0.loadUnaligned(fromByteOffset: 120, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 128, as: UInt64.self)) }
    }
}
