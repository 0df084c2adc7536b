import Foundation
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Packets to a moving application, held on its migration's source node instead of being
/// dropped (docs/streams.md, "Migration"). From the lock on, the address is routed to a
/// tun interface of the daemon (`ssihold`), which keeps what comes (packets of its peers,
/// entering the node from the LAN or from another application's link); once the target's
/// copy runs and the route points there, they are written back to the tun interface, so
/// that the kernel receives and routes them again, to the target. The peers' TCP sees a
/// delay, not a loss: no retransmission timeout, which would add up to twice the freeze.
/// Whatever cannot be held (the tun device missing, the limit reached) is dropped and the
/// peers send it again.
public final class PacketHold: @unchecked Sendable {
    public static let interface = "ssihold"
    /// At most this many bytes held in all (a window's worth of many connections).
    public static let limit = 64 << 20

    private let fd: Int32
    /// What is held, by key (an address, or `cluster-<app>`), and what each key takes.
    private struct Held {
        var packets: [String: [[UInt8]]] = [:]
        var bytes = 0
        var holding: [String: @Sendable (UnsafeRawBufferPointer) -> Bool] = [:]
        /// When a packet last came under each key (uptime ns).
        var last: [String: UInt64] = [:]
    }
    private let held = Mutex(Held())
    private let markRouted = Mutex(false)
    /// The addresses whose new connections this daemon holds (holdNew), until endHoldNew.
    private let newHolds = Mutex(Set<String>())

    /// The packet mark that routes a packet to the hold (policy routing, ip-rule(8)):
    /// outside the steering marks (0x55 in the top byte, Steering.mark).
    public static let mark: UInt32 = 0x5600_0000
    public static let markTable = 7099
    static let markRulePreference = 40

    /// The node's hold: its tun interface made and brought up, its reader started.
    public init() throws {
        fd = try TunDevice.open(Self.interface)
        // A packet written back comes in on ssihold from a peer whose route is elsewhere:
        // the reverse-path filter must not drop it (ip-sysctl.txt rp_filter).
        try? ProcFS.write("/proc/sys/net/ipv4/conf/\(Self.interface)/rp_filter", "0")
        let (code, out) = try Proc.run(["ip", "link", "set", Self.interface, "up"], check: false)
        if code != 0 {
            close(fd)
            throw SSIError(.system, "could not bring \(Self.interface) up: \(out.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let t = Thread { [self] in readLoop() }
        t.name = "ssi packet hold"
        t.start()
    }

    private func readLoop() {
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return }
            // IPv4 only (RFC 791: the version in the first nibble).
            guard n >= 20, buf[0] >> 4 == 4 else { continue }
            held.withLock { h in
                let key = buf.withUnsafeBytes { b in h.holding.first { $0.value(UnsafeRawBufferPointer(rebasing: b[0..<n])) }?.key }
                guard let key, h.bytes + n <= Self.limit else { return }
                h.packets[key, default: []].append(Array(buf[0..<n]))
                h.last[key] = DispatchTime.now().uptimeNanoseconds
                h.bytes += n
            }
        }
    }

    /// An IPv4 packet's destination, bytes 16-19 of its header (RFC 791), as text.
    static func destination(_ p: UnsafeRawBufferPointer) -> String { "\(p[16]).\(p[17]).\(p[18]).\(p[19])" }

    /// From now on, packets to `address` are routed here and kept.
    public func hold(_ address: String) throws {
        held.withLock { $0.holding[address] = { Self.destination($0) == address } }
        do { try Route4.replace(address, interface: Self.interface, proto: AppLink.routeProtocolNumber) } catch {
            held.withLock { _ = $0.holding.removeValue(forKey: address) }
            throw SSIError(.system, "could not route \(address) to \(Self.interface) to hold its packets: \(error)")
        }
    }

    /// The nft table of `holdNew(_:)` for `address`.
    static func newConnectionsTable(_ address: String) -> String { "ssi-holdsyn-" + address.replacingOccurrences(of: ".", with: "-") }

    /// The rules of `holdNew(_:)`: at prerouting (priority mangle + 10, as the cluster
    /// address's hold, Connections.lockRuleset), a TCP segment to `address` with SYN and
    /// without ACK is marked `mark`, unless it comes in on the hold's own interface (given
    /// back by `release`).
    public static func newConnectionsRuleset(_ address: String) -> String {
        let table = newConnectionsTable(address), mark = "0x" + String(Self.mark, radix: 16)
        return """
        add table ip \(table)
        delete table ip \(table)
        table ip \(table) {
            chain syn { type filter hook prerouting priority mangle + 10; policy accept; iifname != "\(Self.interface)" ip daddr \(address) tcp flags & (syn | ack) == syn counter meta mark set \(mark); }
        }

        """
    }

    /// From now on, new connections to `address` wait here: the TCP segments that open one
    /// (SYN without ACK, RFC 793) are marked at prerouting (priority mangle + 10, as the
    /// cluster address's hold) and policy routing sends them to this hold, under the key
    /// `address`, while every other packet to the address still reaches it. A migration's
    /// first step for an application with listeners: the handshakes already under way end
    /// and are accepted while its streams go on, so that the full hold (`hold(_:)`) that
    /// follows needs no wait of its own for a handshake's last ACK on its way. Packets
    /// written back by `release` come in on the hold's interface and are not marked again.
    /// Undone by `endHoldNew(_:)`, which every path of the migration calls: left behind, the
    /// rule would keep sending the address's SYNs here.
    public func holdNew(_ address: String) throws {
        try routeMark()
        held.withLock { $0.holding[address] = { Self.destination($0) == address } }
        newHolds.withLock { _ = $0.insert(address) }
        let code: Int32, out: String
        do { (code, out) = try NFTables.apply(Self.newConnectionsRuleset(address), tag: Self.newConnectionsTable(address)) } catch {
            held.withLock { _ = $0.holding.removeValue(forKey: address) }
            newHolds.withLock { _ = $0.remove(address) }
            throw error
        }
        if code != 0 {
            held.withLock { _ = $0.holding.removeValue(forKey: address) }
            newHolds.withLock { _ = $0.remove(address) }
            throw SSIError(.system, "nft refused to hold the new connections to \(address): \(out)",
                           hint: "the migration holds them with the rest instead; is nftables installed (scripts/setup-cluster.sh)?")
        }
    }

    /// New connections to `address` are no longer sent here by their mark (what was held
    /// stays held, under `address`, for `release`). Harmless when there was no such hold.
    /// The address counts as held (newConnectionsHeld) until nft has removed the table (or
    /// found none): a removal still under way, or one that failed, is done again by the next
    /// call, and a caller that finds it ended saves an nft run (10-30 ms on a busy machine).
    public func endHoldNew(_ address: String) {
        guard let (code, out) = try? Proc.run(["nft", "delete", "table", "ip", Self.newConnectionsTable(address)], check: false) else { return }
        // nft says "No such file or directory" for a table that is not there (any more).
        if code == 0 || out.contains("No such file or directory") { newHolds.withLock { _ = $0.remove(address) } }
    }

    /// Whether the rule of holdNew may still send new connections to `address` here.
    public func newConnectionsHeld(_ address: String) -> Bool { newHolds.withLock { $0.contains(address) } }

    /// From now on, the TCP packets to `address` (the cluster address) for one of `ports`
    /// that reach here are kept under `key`. They come by the mark `PacketHold.mark`, which
    /// a firewall rule of the caller's sets (Connections.lockRuleset): the address itself
    /// stays local, and its other ports are not held.
    public func hold(key: String, address: String, tcpPorts ports: Set<UInt16>) throws {
        try routeMark()
        held.withLock {
            $0.holding[key] = { p in
                // Protocol at byte 9 (6: TCP); the TCP header after the IP header's IHL words,
                // its destination port in its bytes 2-3 (RFC 793).
                let ihl = Int(p[0] & 0x0f) * 4
                guard p[9] == 6, p.count >= ihl + 4, Self.destination(p) == address else { return false }
                return ports.contains(UInt16(p[ihl + 2]) << 8 | UInt16(p[ihl + 3]))
            }
        }
    }

    /// Waits until nothing has come under `key` for `quiet` (or `limit` has passed): the
    /// peers' answers to what a just-stopped application sent last are still on their way
    /// (a round trip, longer behind a queue), and they belong in its snapshot.
    public func settle(key: String, quiet: Duration = .milliseconds(1), limit: Duration = .milliseconds(5)) {
        let start = DispatchTime.now().uptimeNanoseconds
        let q = UInt64(quiet.components.attoseconds / 1_000_000_000) + UInt64(quiet.components.seconds) * 1_000_000_000
        let l = UInt64(limit.components.attoseconds / 1_000_000_000) + UInt64(limit.components.seconds) * 1_000_000_000
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            let last = max(start, held.withLock { $0.last[key] } ?? 0)
            if now - last >= q || now - start >= l { return }
            usleep(200)
        }
    }

    /// Takes out of the hold the packets held under `key` that `match` chooses, in the order
    /// they came (the others stay held).
    public func take(key: String, where match: (UnsafeRawBufferPointer) -> Bool) -> [[UInt8]] {
        held.withLock { h in
            guard let all = h.packets[key] else { return [] }
            var taken: [[UInt8]] = [], kept: [[UInt8]] = []
            for p in all { if p.withUnsafeBytes(match) { taken.append(p) } else { kept.append(p) } }
            h.packets[key] = kept
            h.bytes -= taken.reduce(0) { $0 + $1.count }
            return taken
        }
    }

    /// The key of a held IPv4 TCP packet's flow, as Connections.Flow.key spells it, nil for
    /// another packet.
    public static func flowKey(_ p: UnsafeRawBufferPointer) -> String? {
        tcpFlow(p).map { "\($0.source):\($0.sourcePort)>\($0.destinationPort)" }
    }

    /// Whether a held IPv4 TCP packet has the SYN flag (RFC 793: flags in byte 13 of the
    /// TCP header, SYN = 0x02).
    public static func isSYN(_ p: UnsafeRawBufferPointer) -> Bool {
        guard p.count >= 20, p[0] >> 4 == 4, p[9] == 6 else { return false }
        let ihl = Int(p[0] & 0x0f) * 4
        return p.count > ihl + 13 && p[ihl + 13] & 0x02 != 0
    }

    /// The bytes of data a held IPv4 TCP packet carries: its total length (bytes 2-3 of the
    /// IP header, RFC 791) less the IP header and the TCP header (data offset, the high
    /// nibble of the TCP header's byte 12, RFC 793); nil for another packet.
    public static func tcpPayload(_ p: UnsafeRawBufferPointer) -> Int? {
        guard p.count >= 20, p[0] >> 4 == 4, p[9] == 6 else { return nil }
        let ihl = Int(p[0] & 0x0f) * 4
        guard p.count > ihl + 12 else { return nil }
        let total = Int(p[2]) << 8 | Int(p[3])
        return max(0, total - ihl - Int(p[ihl + 12] >> 4) * 4)
    }

    /// Whether a held IPv4 TCP packet is a bare acknowledgement: no data and none of SYN,
    /// FIN, RST (RFC 793: flags in byte 13 of the TCP header, FIN 0x01, SYN 0x02, RST 0x04).
    public static func isBareAck(_ p: UnsafeRawBufferPointer) -> Bool {
        guard let n = tcpPayload(p), n == 0 else { return false }
        let ihl = Int(p[0] & 0x0f) * 4
        return p.count > ihl + 13 && p[ihl + 13] & 0x07 == 0
    }

    /// A held IPv4 TCP packet's source address and ports (RFC 791, RFC 793), nil for another.
    public static func tcpFlow(_ p: UnsafeRawBufferPointer) -> (source: String, sourcePort: UInt16, destinationPort: UInt16)? {
        guard p.count >= 20, p[0] >> 4 == 4, p[9] == 6 else { return nil }
        let ihl = Int(p[0] & 0x0f) * 4
        guard p.count >= ihl + 4 else { return nil }
        return ("\(p[12]).\(p[13]).\(p[14]).\(p[15])", UInt16(p[ihl]) << 8 | UInt16(p[ihl + 1]), UInt16(p[ihl + 2]) << 8 | UInt16(p[ihl + 3]))
    }

    /// Gives the kernel the packets held under `key` again, in the order they came (they
    /// come in on ssihold and are routed as if they had just arrived), and holds no more
    /// under it. Returns how many.
    @discardableResult
    public func release(key: String) -> Int {
        let packets = held.withLock { h -> [[UInt8]] in
            h.holding.removeValue(forKey: key)
            let p = h.packets.removeValue(forKey: key) ?? []
            h.bytes -= p.reduce(0) { $0 + $1.count }
            return p
        }
        for p in packets { _ = p.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        return packets.count
    }

    /// A packet marked `PacketHold.mark` is routed to ssihold (rule at preference 40, before
    /// the steering's 50 and the local table's 100: Steering.swift), made once.
    private func routeMark() throws {
        try markRouted.withLock { done in
            guard !done else { return }
            let mark = "0x" + String(Self.mark, radix: 16), table = "\(Self.markTable)", pref = "\(Self.markRulePreference)"
            _ = try? Proc.run(["ip", "rule", "del", "pref", pref], check: false)
            for cmd in [["ip", "route", "replace", "default", "dev", Self.interface, "table", table],
                        ["ip", "rule", "add", "pref", pref, "fwmark", mark, "lookup", table]] {
                let (code, out) = try Proc.run(cmd, check: false)
                if code != 0 {
                    throw SSIError(.system, "could not route packets marked \(mark) to \(Self.interface) (\(cmd.joined(separator: " "))): \(out.trimmingCharacters(in: .whitespacesAndNewlines))")
                }
            }
            done = true
        }
    }

    /// Forgets what was held for `address` and its route here: the application it was for
    /// is gone (killed after a checkpoint), and a restart routes its address anew.
    public func discard(_ address: String) {
        forget(key: address)
        _ = try? Proc.run(["ip", "route", "del", "\(address)/32", "dev", Self.interface], check: false)
    }

    /// The furthest acknowledgement number (`acknowledgement`) of the packets held under
    /// `key`, by flow (flowKey: the peer's address and port, and the local port).
    public func latestAcks(key: String) -> [String: UInt32] {
        Self.furthestAcks(held.withLock { $0.packets[key] ?? [] })
    }

    /// The same over `packets` (IPv4).
    public static func furthestAcks(_ packets: [[UInt8]]) -> [String: UInt32] {
        var acks: [String: UInt32] = [:]
        for p in packets {
            p.withUnsafeBytes { b in
                guard let flow = flowKey(b), let ack = acknowledgement(b) else { return }
                // The furthest in sequence space (RFC 1982 arithmetic: a packet reordered
                // on the way may come after a later one).
                if let old = acks[flow], Int32(bitPattern: ack &- old) <= 0 { return }
                acks[flow] = ack
            }
        }
        return acks
    }

    /// An IPv4 TCP packet's acknowledgement number, nil without the ACK flag (RFC 793:
    /// bytes 8-11 of the TCP header, ACK 0x10 in byte 13).
    public static func acknowledgement(_ p: UnsafeRawBufferPointer) -> UInt32? {
        guard p.count >= 20, p[0] >> 4 == 4, p[9] == 6 else { return nil }
        let ihl = Int(p[0] & 0x0f) * 4
        guard p.count >= ihl + 14, p[ihl + 13] & 0x10 != 0 else { return nil }
        return UInt32(p[ihl + 8]) << 24 | UInt32(p[ihl + 9]) << 16 | UInt32(p[ihl + 10]) << 8 | UInt32(p[ihl + 11])
    }

    /// Routes `address` through `gateway` (the target node) or out of `interface` (back to
    /// the application's link, preferred source `source`) and gives the kernel the packets
    /// held for it, in the order they came. Returns how many.
    @discardableResult
    public func release(_ address: String, gateway: String? = nil, interface: String? = nil, source: String? = nil) -> Int {
        do { try Route4.replace(address, interface: interface, gateway: gateway, source: source, proto: AppLink.routeProtocolNumber) } catch {
            FileHandle.standardError.write(Data("ssid: packet hold: \(error)\n".utf8))
        }
        return release(key: address)
    }

    /// Drops what was held under `key`, and holds no more under it.
    public func forget(key: String) {
        held.withLock { h in
            h.holding.removeValue(forKey: key)
            h.bytes -= (h.packets.removeValue(forKey: key) ?? []).reduce(0) { $0 + $1.count }
        }
    }
}
