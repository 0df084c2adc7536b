import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Multicast memberships of UDP sockets (ip(7) IP_ADD_MEMBERSHIP, ipv6(7) IPV6_ADD_MEMBERSHIP,
// RFC 3678 MCAST_JOIN_GROUP): service discovery (mDNS, SSDP), market-data and cluster
// heartbeat receivers. No getsockopt lists a socket's groups, but one tells whether it joined
// a given group on a given interface: MCAST_MSFILTER answers with the group's source filter,
// or EADDRNOTAVAIL (ip_mc_gsfget, ip6_mc_msfget). The candidates are the groups joined on the
// socket's namespace's interfaces, from /proc/PID/net/igmp and igmp6. Restart joins them
// again by interface name with MCAST_JOIN_GROUP and sets a source filter back with
// MCAST_MSFILTER.

/// struct group_filter (linux/in.h) on a 64-bit ABI: gf_interface at 0, gf_group (a struct
/// sockaddr_storage, 128 bytes) at 8, gf_fmode at 136, gf_numsrc at 140, gf_slist at 144.
enum GroupFilter {
    static let header = 144, storage = 128
    static let join: Int32 = 42, msfilter: Int32 = 48     // MCAST_JOIN_GROUP, MCAST_MSFILTER
    static let include: UInt32 = 1                        // MCAST_INCLUDE (MCAST_EXCLUDE 0)

    static func level(_ family: Int32) -> Int32 { family == AF_INET6 ? Int32(IPPROTO_IPV6) : Int32(IPPROTO_IP) }

    /// A struct sockaddr_in or sockaddr_in6 with `address` (4 or 16 bytes), no port.
    static func sockaddr(_ address: Data, into buf: inout [UInt8], at offset: Int) {
        if address.count == 4 {
            buf[offset] = UInt8(AF_INET)
            buf.replaceSubrange(offset + 4..<offset + 8, with: address)
        } else {
            buf[offset] = UInt8(AF_INET6)
            buf.replaceSubrange(offset + 8..<offset + 24, with: address)
        }
    }

    static func address(in buf: [UInt8], at offset: Int) -> Data {
        Int32(buf[offset]) == AF_INET ? Data(buf[offset + 4..<offset + 8]) : Data(buf[offset + 8..<offset + 24])
    }

    static func word(_ v: UInt32, into buf: inout [UInt8], at offset: Int) {
        withUnsafeBytes(of: v) { buf.replaceSubrange(offset..<offset + 4, with: $0) }
    }

    static func word(in buf: [UInt8], at offset: Int) -> UInt32 {
        buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
    }
}

enum Multicast {
    /// Groups joined on the interfaces of `pid`'s network namespace: (interface index, name,
    /// group). /proc/net/igmp prints each group as the hex of its address as it lies in memory
    /// (network order read as a host integer, "%08X"); igmp6 as its 16 bytes in order.
    static func candidates(pid: Int32, family: Int32) -> [(index: UInt32, name: String, group: Data)] {
        var out: [(UInt32, String, Data)] = []
        if family == AF_INET {
            guard let text = try? ProcFS.read("/proc/\(pid)/net/igmp") else { return [] }
            var device: (UInt32, String)? = nil
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard let first = f.first else { continue }
                if line.first?.isNumber == true, f.count >= 2, let idx = UInt32(first) {
                    device = (idx, String(f[1]).trimmingCharacters(in: CharacterSet(charactersIn: ":")))
                } else if let d = device, let raw = UInt32(first, radix: 16) {
                    out.append((d.0, d.1, withUnsafeBytes(of: raw) { Data($0) }))
                }
            }
        } else {
            guard let text = try? ProcFS.read("/proc/\(pid)/net/igmp6") else { return [] }
            for line in text.split(separator: "\n") {
                let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard f.count >= 3, let idx = UInt32(f[0]), f[2].count == 32 else { continue }
                let hex = Array(f[2].utf8)
                let bytes = stride(from: 0, to: 32, by: 2).compactMap { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16) }
                if bytes.count == 16 { out.append((idx, String(f[1]), Data(bytes))) }
            }
        }
        return out
    }

    /// The groups socket `sock` joined, with their source filters.
    static func dump(_ sock: Int32, family: Int32, pid: Int32) -> [MulticastMembership]? {
        var out: [MulticastMembership] = []
        var seen = Set<String>()
        for c in candidates(pid: pid, family: family) where seen.insert("\(c.index)/\(c.group.base64EncodedString())").inserted {
            let room = 64
            var buf = [UInt8](repeating: 0, count: GroupFilter.header + GroupFilter.storage * room)
            GroupFilter.word(c.index, into: &buf, at: 0)
            GroupFilter.sockaddr(c.group, into: &buf, at: 8)
            GroupFilter.word(UInt32(room), into: &buf, at: 140)
            var len = socklen_t(buf.count)
            guard getsockopt(sock, GroupFilter.level(family), GroupFilter.msfilter, &buf, &len) == 0 else { continue }
            let mode = GroupFilter.word(in: buf, at: 136), count = min(Int(GroupFilter.word(in: buf, at: 140)), room)
            let sources = (0..<count).map { GroupFilter.address(in: buf, at: GroupFilter.header + $0 * GroupFilter.storage) }
            out.append(MulticastMembership(interface: c.name, group: c.group, exclude: mode != GroupFilter.include, sources: sources.isEmpty ? nil : sources))
        }
        return out.isEmpty ? nil : out
    }

    /// Joins the saved groups again on `fd` (in the namespace the socket was made in: the
    /// interfaces are found by name there). One that cannot be joined is said on stderr.
    static func restore(_ fd: Int32, family: Int32, _ saved: [MulticastMembership]?, who: String) {
        for m in saved ?? [] {
            let index = if_nametoindex(m.interface)
            guard index != 0 else {
                warn("\(who): multicast group \(describe(m.group)) was joined on \(m.interface), which this node does not have: not joined again")
                continue
            }
            var req = [UInt8](repeating: 0, count: 8 + GroupFilter.storage)   // struct group_req
            GroupFilter.word(index, into: &req, at: 0)
            GroupFilter.sockaddr(m.group, into: &req, at: 8)
            if setsockopt(fd, GroupFilter.level(family), GroupFilter.join, req, socklen_t(req.count)) != 0 {
                warn("\(who): multicast group \(describe(m.group)) on \(m.interface) could not be joined again: \(String(cString: strerror(errno)))")
                continue
            }
            let sources = m.sources ?? []
            guard !(m.exclude && sources.isEmpty) else { continue }
            var filter = [UInt8](repeating: 0, count: GroupFilter.header + GroupFilter.storage * max(sources.count, 1))
            GroupFilter.word(index, into: &filter, at: 0)
            GroupFilter.sockaddr(m.group, into: &filter, at: 8)
            GroupFilter.word(m.exclude ? 0 : GroupFilter.include, into: &filter, at: 136)
            GroupFilter.word(UInt32(sources.count), into: &filter, at: 140)
            for (i, s) in sources.enumerated() { GroupFilter.sockaddr(s, into: &filter, at: GroupFilter.header + i * GroupFilter.storage) }
            if setsockopt(fd, GroupFilter.level(family), GroupFilter.msfilter, filter, socklen_t(filter.count)) != 0 {
                warn("\(who): the source filter of multicast group \(describe(m.group)) could not be set again: \(String(cString: strerror(errno)))")
            }
        }
    }

    static func describe(_ group: Data) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let family = group.count == 4 ? AF_INET : AF_INET6
        _ = group.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return String(cString: buf)
    }
}
