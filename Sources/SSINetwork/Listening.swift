import Foundation
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// The listening sockets of an application, found from outside without stopping it: the
/// socket inodes of every fd of every process of its tree (/proc/PID/fd links read
/// `socket:[INODE]`, proc(5)), matched with the sockets its network namespace lists in
/// /proc/PID/net/{tcp,tcp6,udp,udp6}. Those tables are per network namespace (they show the
/// namespace of the process whose /proc entry is read), so each namespace is read once.
public enum ListeningSockets {
    /// TCP sockets in LISTEN (state 0x0A, include/net/tcp_states.h) and UDP sockets with no
    /// peer (remote address and port zero): the ones a client of the cluster address reaches.
    public static func of(app: Int32, root: Int32, node: NodeID, clusterIP: String?) -> [PortEntry] {
        var inodes = Set<UInt64>()
        var namespaces: [String: Int32] = [:]
        for pid in processTree(root) {
            for fd in (try? openFDs(of: pid)) ?? [] {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                      target.hasPrefix("socket:["), let n = UInt64(target.dropFirst(8).dropLast()) else { continue }
                inodes.insert(n)
            }
            if let ns = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net"), namespaces[ns] == nil {
                namespaces[ns] = pid
            }
        }
        guard !inodes.isEmpty else { return [] }
        var out: [PortEntry] = []
        // Only a socket of the node's own namespace receives what comes to the node; one in
        // a namespace of the application's (its own address, AppNetwork.swift) does not.
        let nodeNamespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        for (ns, pid) in namespaces {
            for (file, proto, v6) in [("tcp", PortProtocol.tcp, false), ("tcp6", .tcp, true), ("udp", .udp, false), ("udp6", .udp, true)] {
                guard let text = try? ProcFS.read("/proc/\(pid)/net/\(file)") else { continue }
                for row in parse(text, proto: proto, v6: v6) where inodes.contains(row.inode) {
                    let exposed = ns == nodeNamespace && (row.address == "0.0.0.0" || row.address == "::" || row.address == clusterIP)
                    out.append(PortEntry(port: row.port, proto: proto, app: app, node: node, address: row.address, exposed: exposed))
                }
            }
        }
        return out
    }

    public struct Row: Equatable, Sendable {
        public var address: String
        public var port: UInt16
        public var inode: UInt64
    }

    /// The listening rows of one /proc/net table. Columns (proc(5)): sl, local_address
    /// (address:port in hex, the address as the kernel's 32-bit words in host byte order),
    /// rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode.
    public static func parse(_ text: String, proto: PortProtocol, v6: Bool) -> [Row] {
        var rows: [Row] = []
        for line in text.split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 10, let st = UInt8(f[3], radix: 16), let inode = UInt64(f[9]), inode != 0 else { continue }
            let local = f[1].split(separator: ":"), remote = f[2].split(separator: ":")
            guard local.count == 2, remote.count == 2, let port = UInt16(local[1], radix: 16) else { continue }
            switch proto {
            case .tcp: guard st == 0x0A else { continue }
            case .udp: guard UInt16(remote[1], radix: 16) == 0 else { continue }
            }
            guard let addr = address(String(local[0]), v6: v6) else { continue }
            rows.append(Row(address: addr, port: port, inode: inode))
        }
        return rows
    }

    /// The kernel prints each 32-bit word of the address with %08X of its value in host
    /// order: on a little-endian machine the bytes of each word come out reversed.
    static func address(_ hex: String, v6: Bool) -> String? {
        let chars = Array(hex)
        guard chars.count == (v6 ? 32 : 8) else { return nil }
        var bytes: [UInt8] = []
        for w in stride(from: 0, to: chars.count, by: 8) {
            guard let word = UInt32(String(chars[w..<w + 8]), radix: 16) else { return nil }
            withUnsafeBytes(of: word) { bytes += $0 }
        }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let ok = bytes.withUnsafeBytes { inet_ntop(v6 ? AF_INET6 : AF_INET, $0.baseAddress, &buf, socklen_t(buf.count)) }
        guard ok != nil else { return nil }
        let s = String(cString: buf)
        // An IPv4 address on a dual-stack socket is listed as ::ffff:a.b.c.d in tcp6.
        return s.hasPrefix("::ffff:") && s.contains(".") ? String(s.dropFirst(7)) : s
    }
}
