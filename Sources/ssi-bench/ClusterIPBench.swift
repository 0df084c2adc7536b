import Foundation
import SSILocalCluster
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench cluster-ip`: what the cluster address costs a client outside (issue 13). On
/// `ssi cluster up --nodes 3 --cluster-ip 10.77.1.1`, a line-echo server application
/// (Tests/Fixtures/lineecho.c) runs on node 2; from the hub namespace (the outside world)
/// lineclient keeps one connection and sends numbered lines for SECONDS, once to the
/// cluster address and once to node 2's own address, alternately, ROUNDS times; it prints
/// requests per second, p50/p99 latency and the longest gap, side by side. With
/// `--migrate`, a third run migrates the server 2 -> 3 while a client is connected through
/// the cluster address and reports the longest gap the client saw.
struct ClusterIPBenchmark: RunsSSI {
    static let usage = "cluster-ip [--seconds S] [--rounds N] [--window W] [--migrate]"
    var seconds: Double, rounds: Int, window: Int, migrate: Bool

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        seconds = try o.double("--seconds", default: 3, above: 0)
        rounds = try o.int("--rounds", default: 3, in: 1...1000)
        window = try o.int("--window", default: 1, in: 1...1024)
        migrate = o.flag("--migrate")
        try o.finish()
    }

    struct Result { var rps: Double; var p50: Double; var p99: Double; var gap: Double }

    func run() throws {
        let dir = "/tmp/ssi-bench-cip"
        try BenchArgs.prepare("ssi-bench cluster-ip", directory: dir)
        let server = try BenchProcess.compile("lineecho", into: dir), client = try BenchProcess.compile("lineclient", into: dir)
        let lc = LocalCluster(), ip = LocalCluster.defaultClusterIP
        try ssi(["cluster", "up", "--nodes", "3", "--cluster-ip", ip])
        // SSI_BENCH_KEEP=1 leaves the cluster up afterwards, to look at its logs.
        defer { if ProcessInfo.processInfo.environment["SSI_BENCH_KEEP"] == nil { _ = try? ssi(["cluster", "down"]); Proc.reapAll() } }
        let out = try ssi(["run", "--node", "2", "-b", "--log", "--", server, "7400", "\(dir)/accepts"])
        guard let app = out.split(separator: " ").last.map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }) else { throw SSIError(.system, "no application id in '\(out)'") }
        try waitForPort(7400)
        print("server: lineecho on node 2 (application \(app)); client: lineclient in \(lc.hub), one connection, window \(window), \(seconds) s per run")
        var via: [Result] = [], direct: [Result] = []
        for _ in 0..<rounds {
            via.append(try measure(client, lc.hub, ip))
            direct.append(try measure(client, lc.hub, lc.nodeHost(2, netns: true)))
        }
        func med(_ xs: [Result], _ f: (Result) -> Double) -> Double { xs.map(f).sorted()[xs.count / 2] }
        print("")
        print("path                        req/s     p50 us   p99 us   longest gap ms   (median of \(rounds))")
        for (label, xs) in [("cluster address \(ip)", via), ("node 2 directly", direct)] {
            print(label.padding(toLength: 26, withPad: " ", startingAt: 0)
                  + String(format: " %8.0f  %8.0f %8.0f  %14.1f", med(xs, \.rps), med(xs, \.p50), med(xs, \.p99), med(xs, \.gap)))
        }
        print(String(format: "cluster address / direct throughput: %.2f (target >= 0.9)", med(via, \.rps) / med(direct, \.rps)))
        if migrate { try migrationStall(client, lc.hub, ip, app: app) }
    }

    func migrationStall(_ client: String, _ hub: String, _ ip: String, app: String) throws {
        // The one move measured is ours: the load balancer, which would move a capable
        // application between busy nodes on its own (the client loads its node), is held back.
        for n in 1...3 { _ = try ssi(["sched", "set", "lb.threshold", "100", "--node", "\(n)"]) }
        try ssi(["caps", app, "+CAN_MIGRATE"])
        let log = "/tmp/ssi-bench-cip/client.log"
        unlink(log)
        let pid = try Proc.spawn(["nsenter", "--net=/run/netns/\(hub)", "--", client, ip, "7400", "\(seconds + 4)", "\(window)"], log: log)
        usleep(1_500_000)
        let moved: String
        do { moved = try ssi(["migrate", app, "3"]) } catch { moved = "migration failed: \(error)" }
        _ = try Spawn.wait(pid)
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        print("")
        print("migration 2 -> 3 under a connected client: \(moved.trimmingCharacters(in: .whitespacesAndNewlines))")
        print("client: \(text.trimmingCharacters(in: .whitespacesAndNewlines)) (target: PASS, longest gap <= 100 ms)")
    }

    func measure(_ client: String, _ ns: String, _ host: String) throws -> Result {
        let r = try Proc.run(["nsenter", "--net=/run/netns/\(ns)", "--", client, host, "7400", "\(seconds)", "\(window)"], check: false)
        guard r.0 == 0, r.1.hasPrefix("PASS") else { throw SSIError(.system, "lineclient to \(host): \(r.1)") }
        var v: [String: Double] = [:]
        for f in r.1.split(separator: " ") { let kv = f.split(separator: "="); if kv.count == 2 { v[String(kv[0])] = Double(kv[1].trimmingCharacters(in: .whitespacesAndNewlines)) } }
        return Result(rps: v["rps"] ?? 0, p50: v["p50_us"] ?? 0, p99: v["p99_us"] ?? 0, gap: v["max_gap_ms"] ?? 0)
    }

    func waitForPort(_ port: Int) throws {
        for _ in 0..<100 {
            if (try? ssi(["ports", "--json"]))?.contains("\"port\":\(port)") == true { return }
            usleep(100_000)
        }
        throw SSIError(.system, "the server did not appear in ssi ports within 10 s")
    }

}
