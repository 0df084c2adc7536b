// `ssi-bench kddm`: KDDM and RPC figures on the local cluster (ssi cluster up --nodes 3 first).
//   ssi-bench kddm [--from 1] [--to 2] [-n 2000]
// Node `from`'s daemon measures KDDM and RPC against node `to` (the owner); the raw TCP
// baseline is a 64-byte ping-pong between the same two network namespaces, from an echo
// server this program starts in node `to`'s namespace (`ssi-bench kddm echo-server`) to a
// client it starts in node `from`'s (`ssi-bench kddm echo-client`).
import Foundation
import SSIControl
import SSILocalCluster
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

func runKDDMBenchmark(args: [String]) async throws {
    switch args.first {
    case "echo-server":
        guard args.count == 3, let port = Int(args[2]) else { throw KDDMBenchmark.usage }
        try RawEcho.serve(host: args[1], port: port)
    case "echo-client":
        guard args.count == 4, let port = Int(args[2]), let n = Int(args[3]) else { throw KDDMBenchmark.usage }
        let s = try RawEcho.pingPong(host: args[1], port: port, n: n)
        print(String(decoding: try JSONEncoder().encode(s), as: UTF8.self))
    default:
        try KDDMBenchmark.run(args: args)
    }
}

enum KDDMBenchmark {
    static let usage = SSIError(.invalidArgument, "usage: ssi-bench kddm [--from NODE] [--to NODE] [-n COUNT]")
    /// The echo server listens beside the node's RPC port (7100), as the daemon's own once did.
    static let echoPort = 8100

    static func run(args: [String]) throws {
        var from = 1, to = 2, n = 2000
        var i = 0
        while i < args.count {
            let v = i + 1 < args.count ? Int(args[i + 1]) : nil
            switch args[i] {
            case "--from": from = v ?? from
            case "--to": to = v ?? to
            case "-n": n = v ?? n
            default: throw usage
            }
            i += 2
        }
        let lc = LocalCluster()
        guard let plan = lc.plan() else { throw SSIError(.notFound, "no local cluster", hint: "run ssi cluster up --nodes 3 first") }
        guard let peer = NodeID(exactly: to) else { throw usage }
        let report = try ControlClient.request(socket: lc.socket(node: from), .bench(BenchRequest(peer: peer, iterations: n)), timeout: 600).bench()
        let raw = try rawTCP(lc, plan, from: from, to: to, n: n)
        print("kddm/rpc benchmark: node \(from) -> node \(to) (the owner), \(n) iterations, \(plan.netns ? "network namespaces" : "loopback")")
        print("operation".padding(toLength: 28, withPad: " ", startingAt: 0) + "     p50 us     p99 us      ops/s   RPCs/op")
        for row in report.results + [raw] {
            let name = row.name.padding(toLength: 28, withPad: " ", startingAt: 0)
            print(name + String(format: " %10.1f %10.1f %10.0f %9.2f", row.p50us, row.p99us, row.opsPerSecond, row.rpcsPerOp))
        }
    }

    /// The raw TCP row: an echo server in node `to`'s namespace, a client in node `from`'s.
    static func rawTCP(_ lc: LocalCluster, _ plan: LocalCluster.Plan, from: Int, to: Int, n: Int) throws -> BenchReport.Series {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        func inNode(_ k: Int, _ argv: [String]) -> [String] { lc.inNode(k, netns: plan.netns) + argv }
        let host = lc.nodeHost(to, netns: plan.netns)
        let server = try Proc.spawn(inNode(to, [me, "kddm", "echo-server", host, "\(echoPort)"]), log: "\(lc.dir)/bench-echo.log")
        defer {
            kill(server, SIGTERM)
            var st: Int32 = 0
            while waitpid(server, &st, 0) < 0 && errno == EINTR {}
        }
        let (_, out) = try Proc.run(inNode(from, [me, "kddm", "echo-client", host, "\(echoPort)", "\(n)"]))
        guard let line = out.split(separator: "\n").last,
              let s = try? JSONDecoder().decode(BenchReport.Series.self, from: Data(line.utf8)) else {
            throw SSIError(.system, "the raw TCP client in node \(from)'s namespace printed no result: \(out)", hint: "see \(lc.dir)/bench-echo.log")
        }
        return s
    }
}

/// A plain TCP echo and its client: the floor the RPC round trip is compared with.
enum RawEcho {
    static func address(_ host: String, _ port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &a.sin_addr)
        return a
    }

    /// Echoes every connection, one thread each, until killed.
    static func serve(host: String, port: Int) throws -> Never {
        let lfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        var a = address(host, port)
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(lfd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0, listen(lfd, 8) == 0 else { throw SSIError.sys("echo server on \(host):\(port)", errno: errno) }
        while true {
            let c = accept(lfd, nil, nil)
            if c < 0 { if errno == EINTR { continue }; throw SSIError.sys("accept on \(host):\(port)", errno: errno) }
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
    }

    /// A connected TCP socket (TCP_NODELAY), trying for 5 s while nothing listens yet.
    static func connectRetrying(host: String, port: Int) throws -> Int32 {
        var a = address(host, port)
        let deadline = ContinuousClock.now + .seconds(5)
        while true {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
            let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            if r == 0 { return fd }
            let e = errno
            close(fd)
            guard e == ECONNREFUSED || e == EINTR, ContinuousClock.now < deadline else {
                throw SSIError.sys("connect to the echo server \(host):\(port)", errno: e)
            }
            usleep(20_000)
        }
    }

    /// `n` 64-byte round trips to the echo server, which may take a moment to listen.
    static func pingPong(host: String, port: Int, n: Int) throws -> BenchReport.Series {
        let fd = try connectRetrying(host: host, port: port)
        defer { close(fd) }
        var micros: [Double] = []
        var buf = [UInt8](repeating: 7, count: 64)
        for _ in 0..<n {
            let t0 = ContinuousClock.now
            _ = write(fd, buf, 64)
            var got = 0
            while got < 64 {
                let k = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, 64 - got) }
                if k <= 0 { throw SSIError(.disconnected, "the echo server \(host):\(port) closed the connection") }
                got += k
            }
            let dt = ContinuousClock.now - t0
            micros.append(Double(dt.components.seconds) * 1e6 + Double(dt.components.attoseconds) / 1e12)
        }
        return BenchReport.Series(name: "raw tcp round trip (64 B)", micros: micros, rpcs: 0)
    }
}
