import Foundation
import SSICluster
#if canImport(Glibc)
import Glibc
#endif

/// The client of `Bench`: asks node --from to measure against node --to and prints a table.
/// `ssi-bench kddm` and `ssi kddm bench` both call it.
public enum KDDMBenchmark {
    public static func run(args: [String]) throws {
        var from = 1, to = 2, n = 2000
        var i = 0
        while i < args.count {
            let v = i + 1 < args.count ? Int(args[i + 1]) : nil
            switch args[i] {
            case "--from": from = v ?? from
            case "--to": to = v ?? to
            case "-n": n = v ?? n
            default: throw ClusterError.config("usage: ssi-bench kddm [--from NODE] [--to NODE] [-n COUNT]")
            }
            i += 2
        }
        let lc = LocalCluster()
        guard let plan = lc.plan() else { throw ClusterError.config("no local cluster: run ssi cluster up --nodes 3 first") }
        let r = try ControlClient.request(socket: lc.socket(node: from), ["op": "bench", "peer": to, "n": n], timeout: 600) as? [String: Any]
        print("kddm/rpc benchmark: node \(from) -> node \(to) (the owner), \(n) iterations, \(plan.netns ? "network namespaces" : "loopback")")
        print("operation".padding(toLength: 28, withPad: " ", startingAt: 0) + "     p50 us     p99 us      ops/s   RPCs/op")
        for row in (r?["results"] as? [[String: Any]]) ?? [] {
            let name = (row["name"] as? String ?? "").padding(toLength: 28, withPad: " ", startingAt: 0)
            func d(_ k: String) -> Double { (row[k] as? NSNumber)?.doubleValue ?? 0 }
            print(name + String(format: " %10.1f %10.1f %10.0f %9.2f", d("p50_us"), d("p99_us"), d("ops_per_s"), d("rpcs_per_op")))
        }
    }
}

/// Measurements run inside a daemon (so they use its real RPC connections and caches), asked
/// for by `ssi-bench kddm` over the control socket.
enum Bench {
    struct Series {
        var name: String
        var micros: [Double] = []
        var rpcs = 0
        func summary(seconds: Double) -> [String: Any] {
            let s = micros.sorted()
            func pct(_ p: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * p))] }
            return ["name": name, "n": s.count, "p50_us": pct(0.5), "p99_us": pct(0.99),
                    "ops_per_s": seconds > 0 ? Double(s.count) / seconds : 0,
                    "rpcs_per_op": s.isEmpty ? 0 : Double(rpcs) / Double(s.count)]
        }
    }

    static func time(_ body: () async throws -> Void) async rethrows -> Double {
        let t0 = ContinuousClock.now
        try await body()
        let d = ContinuousClock.now - t0
        return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
    }

    static func measure(_ name: String, n: Int, d: NodeDaemon, before: () async throws -> Void = {}, _ op: () async throws -> Void) async throws -> [String: Any] {
        var s = Series(name: name)
        var total = 0.0
        for _ in 0..<n {
            try await before()
            let c0 = d.rpc.callsSent.load(ordering: .relaxed)
            let us = try await time(op)
            s.rpcs += d.rpc.callsSent.load(ordering: .relaxed) - c0
            s.micros.append(us)
            total += us
        }
        return s.summary(seconds: total / 1e6)
    }

    static func run(daemon d: NodeDaemon, peer: NodeID, n: Int) async throws -> [String: Any] {
        guard peer != d.config.node, let p = d.membership.view[peer], p.state == .online else {
            throw ClusterError.config("bench needs another online node as peer (node \(peer) is not)")
        }
        let set = "bench-\(peer)"
        try await d.kddm.createSet(set, rule: .fixed(peer))
        let k = d.kddm
        _ = try await k.grab(set, 1)
        try await k.put(set, 1, Array(repeating: UInt8(ascii: "x"), count: 64))
        _ = try await k.get(set, 1)
        var results: [[String: Any]] = []
        results.append(try await measure("get (cached)", n: n, d: d) { _ = try await k.get(set, 1) })
        results.append(try await measure("get (uncached)", n: n, d: d, before: { await k.flush() }) { _ = try await k.get(set, 1) })
        results.append(try await measure("grab+put", n: min(n, 1000), d: d) {
            _ = try await k.grab(set, 2)
            try await k.put(set, 2, Array(repeating: UInt8(ascii: "y"), count: 64))
        })
        let ping = [UInt8](repeating: 7, count: 64)
        // The daemon's services (KDDM, request handlers) run on the RPC loop, so that is where
        // the round trip is measured; the second row is a caller on the global pool, which
        // pays two thread wake-ups more (loop to write, pool thread to resume).
        results.append(try await withTaskExecutorPreference(d.rpc.taskExecutor) {
            try await measure("rpc round trip (64 B)", n: n, d: d) {
                _ = try await d.rpc.call(peer, service: KDDMService.ping, ping)
            }
        })
        results.append(try await measure("rpc rt, caller on the pool", n: n, d: d) {
            _ = try await d.rpc.call(peer, service: KDDMService.ping, ping)
        })
        results.append(try rawTCP(host: p.host, port: p.port + RawEcho.portOffset, n: n))
        return ["from": Int(d.config.node), "to": Int(peer), "results": results]
    }

    /// 64-byte ping-pong over a plain TCP socket to the peer's raw echo server: the floor the
    /// RPC round trip is compared with.
    static func rawTCP(host: String, port: Int, n: Int) throws -> [String: Any] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &a.sin_addr)
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { throw ClusterError.config("raw echo \(host):\(port): \(String(cString: strerror(errno)))") }
        var s = Series(name: "raw tcp round trip (64 B)")
        var buf = [UInt8](repeating: 7, count: 64)
        var total = 0.0
        for _ in 0..<n {
            let t0 = ContinuousClock.now
            _ = write(fd, buf, 64)
            var got = 0
            while got < 64 {
                let k = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, 64 - got) }
                if k <= 0 { throw ClusterError.config("raw echo closed") }
                got += k
            }
            let dt = ContinuousClock.now - t0
            let us = Double(dt.components.seconds) * 1e6 + Double(dt.components.attoseconds) / 1e12
            s.micros.append(us)
            total += us
        }
        return s.summary(seconds: total / 1e6)
    }
}

/// A plain TCP echo server beside the RPC port (RPC port + 1000), for the benchmark's baseline.
enum RawEcho {
    static let portOffset = 1000

    static func start(host: String, port: Int) {
        let lfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &a.sin_addr)
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(lfd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0, listen(lfd, 8) == 0 else { close(lfd); return }
        Thread {
            while true {
                let c = accept(lfd, nil, nil)
                if c < 0 { if errno == EINTR { continue }; return }
                Thread {
                    var one: Int32 = 1
                    setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
                    var buf = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let n = read(c, &buf, buf.count)
                        if n <= 0 { break }
                        _ = write(c, buf, n)
                    }
                    close(c)
                }.start()
            }
        }.start()
    }
}
