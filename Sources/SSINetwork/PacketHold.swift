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
    private struct Held { var packets: [String: [[UInt8]]] = [:]; var bytes = 0; var holding: Set<String> = [] }
    private let held = Mutex(Held())

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
            // IPv4 only: the destination is bytes 16-19 of the header (RFC 791).
            guard n >= 20, buf[0] >> 4 == 4 else { continue }
            let dst = "\(buf[16]).\(buf[17]).\(buf[18]).\(buf[19])"
            let packet = Array(buf[0..<n])
            held.withLock { h in
                guard h.holding.contains(dst), h.bytes + n <= Self.limit else { return }
                h.packets[dst, default: []].append(packet)
                h.bytes += n
            }
        }
    }

    /// From now on, packets to `address` are routed here and kept.
    public func hold(_ address: String) throws {
        held.withLock { _ = $0.holding.insert(address) }
        do { try Route4.replace(address, interface: Self.interface, proto: AppLink.routeProtocolNumber) } catch {
            held.withLock { _ = $0.holding.remove(address) }
            throw SSIError(.system, "could not route \(address) to \(Self.interface) to hold its packets: \(error)")
        }
    }

    /// Forgets what was held for `address` and its route here: the application it was for
    /// is gone (killed after a checkpoint), and a restart routes its address anew.
    public func discard(_ address: String) {
        held.withLock { h in
            h.holding.remove(address)
            h.bytes -= (h.packets.removeValue(forKey: address) ?? []).reduce(0) { $0 + $1.count }
        }
        _ = try? Proc.run(["ip", "route", "del", "\(address)/32", "dev", Self.interface], check: false)
    }

    /// Routes `address` through `gateway` (the target node) or out of `interface` (back to
    /// the application's link, preferred source `source`) and gives the kernel the packets
    /// held for it, in the order they came. Returns how many.
    @discardableResult
    public func release(_ address: String, gateway: String? = nil, interface: String? = nil, source: String? = nil) -> Int {
        do { try Route4.replace(address, interface: interface, gateway: gateway, source: source, proto: AppLink.routeProtocolNumber) } catch {
            FileHandle.standardError.write(Data("ssid: packet hold: \(error)\n".utf8))
        }
        let packets = held.withLock { h -> [[UInt8]] in
            h.holding.remove(address)
            let p = h.packets.removeValue(forKey: address) ?? []
            h.bytes -= p.reduce(0) { $0 + $1.count }
            return p
        }
        for p in packets { _ = p.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
        return packets.count
    }
}
