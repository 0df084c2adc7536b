import Foundation
import SSILocalCluster
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench streams`: what a stream between two applications costs, and what a migration
/// of one end does to it (issue 12, docs/streams.md). On a fresh 3-node local cluster with
/// load balancing off: bulk throughput (Tests/Fixtures/streamer.c, one connection, 64 KiB
/// writes) and request latency (lineclient, one line outstanding) between two applications
/// with addresses of their own on nodes 1 and 2, side by side with the same programs
/// between the two nodes' own addresses in the same run; then both again while the
/// receiving application migrates 1 -> 3 (the longest stall the receiver sees, the longest
/// gap the client sees), and after the move.
struct StreamsBenchmark: RunsSSI {
    static let usage = "streams [--seconds S] [--rounds N] [--direct]"
    var seconds: Double, rounds: Int
    /// `--direct`: the cluster's applications get direct links (ssi cluster up --app-links direct).
    var direct: Bool

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        seconds = try o.double("--seconds", default: 3, above: 0.999)
        rounds = try o.int("--rounds", default: 3, in: 1...1000)
        direct = o.flag("--direct")
        try o.finish()
    }

    func run() throws {
        let dir = "/tmp/ssi-bench-streams"
        try BenchArgs.prepare("ssi-bench streams", directory: dir)
        let streamer = try BenchProcess.compile("streamer", into: dir)
        let echo = try BenchProcess.compile("lineecho", into: dir), client = try BenchProcess.compile("lineclient", into: dir)
        let lc = LocalCluster()
        try ssi(["cluster", "up", "--nodes", "3"] + (direct ? ["--app-links", "direct"] : []))
        // SSI_BENCH_KEEP=1 leaves the cluster up afterwards, to look at its logs.
        defer { if ProcessInfo.processInfo.environment["SSI_BENCH_KEEP"] == nil { _ = try? ssi(["cluster", "down"]); Proc.reapAll() } }
        let none = try noScheduling(in: dir)
        for k in 1...3 { try ssi(["sched", "load", none, "--node", "\(k)"]) }
        func inNode(_ k: Int, _ argv: [String]) -> [String] { ["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--"] + argv }

        // The raw path: the same programs between node 1's and node 2's own addresses.
        let rawSink = try Proc.spawn(inNode(1, [streamer, "sink", "7600"]), log: "\(dir)/rawsink.log")
        let rawEcho = try Proc.spawn(inNode(1, [echo, "7601"]), log: "\(dir)/rawecho.log")
        defer { for p in [rawSink, rawEcho] { kill(p, SIGKILL) }; Proc.reapAll() }
        // The applications: receivers on node 1, their peers started on node 2 per run.
        let sink = try app(["run", "--node", "1", "--net", "app", "-b", "--log", "--", streamer, "sink", "7600"])
        let server = try app(["run", "--node", "1", "--net", "app", "-b", "--log", "--", echo, "7601"])
        let (sinkAddr, serverAddr) = (try address(sink), try address(server))
        usleep(500_000)
        let node1 = lc.nodeHost(1, netns: true)
        print("streams between applications (addresses \(serverAddr), \(sinkAddr) on node 1; peers on node 2) against raw TCP between node 1's and node 2's own addresses, \(seconds) s per run, median of \(rounds)")

        var raw: [Stream] = [], apps: [Stream] = [], rawLat: [Lines] = [], appLat: [Lines] = []
        for _ in 0..<rounds {
            raw.append(try bulk(inNode(2, [streamer, "source", node1, "7600", "\(seconds)"])))
            apps.append(try bulkFromApp(node: 2, [streamer, "source", sinkAddr, "7600", "\(seconds)"]))
            rawLat.append(try lines(inNode(2, [client, node1, "7601", "\(seconds)"])))
            appLat.append(try linesFromApp(node: 2, [client, serverAddr, "7601", "\(seconds)"]))
        }
        // Across a move: the peers run while the receivers migrate 1 -> 3.
        try ssi(["caps", "\(sink)", "+CAN_MIGRATE"])
        try ssi(["caps", "\(server)", "+CAN_MIGRATE"])
        let long = seconds + 3
        let src = try startApp(node: 2, [streamer, "source", sinkAddr, "7600", "\(long)"])
        let cli = try startApp(node: 2, [client, serverAddr, "7601", "\(long)"])
        usleep(1_500_000)
        let w1a = Self.monotonicMs()
        let moved1 = try ssi(["migrate", "\(sink)", "3"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let w1 = w1a...Self.monotonicMs()
        let moved2 = try ssi(["migrate", "\(server)", "3"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let across = try parseStream(try waitLog(src, seconds: long + 20))
        let acrossLat = try parseLines(try waitLog(cli, seconds: long + 20))
        // A bulk sender moving 2 -> 1 while it streams to the receiver (now on node 3): its
        // send queue (megabytes) moves with it, out of its core file (snapshot format 11).
        let sender = try startApp(node: 2, [streamer, "source", sinkAddr, "7600", "\(long)"])
        try ssi(["caps", "\(sender)", "+CAN_MIGRATE"])
        usleep(1_500_000)
        let w3a = Self.monotonicMs()
        let moved3 = try ssi(["migrate", "\(sender)", "1"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let w3 = w3a...Self.monotonicMs()
        let senderMoved = try parseStream(try waitLog(sender, seconds: long + 20))
        var after: [Stream] = [], afterLat: [Lines] = []
        for _ in 0..<rounds {
            after.append(try bulkFromApp(node: 2, [streamer, "source", sinkAddr, "7600", "\(seconds)"]))
            afterLat.append(try linesFromApp(node: 2, [client, serverAddr, "7601", "\(seconds)"]))
        }

        // The sink logs each gap of over 20 ms with its end (streamer.c): the gap a move
        // makes is the one that overlaps its `ssi migrate`; a row's "longest stall" is the
        // longest of its whole run, which on a busy VM has gaps of its own with nothing moving.
        let gaps = Self.sinkGaps(try ssi(["logs", "\(sink)"]))
        // (0.1 s past its return: what a move's last steps on other nodes do to the stream.)
        func atMove(_ w: ClosedRange<Double>) -> Double { gaps.filter { $0.end > w.lowerBound && $0.end - $0.ms < w.upperBound + 100 }.map(\.ms).max() ?? 0 }
        func med<T>(_ xs: [T], _ f: (T) -> Double) -> Double { xs.map(f).sorted()[xs.count / 2] }
        print("")
        print("path                                   Mbit/s   x raw    p50 us   p99 us   longest stall ms")
        func row(_ label: String, _ mbit: Double, _ p50: Double, _ p99: Double, _ stall: Double) {
            print(label.padding(toLength: 36, withPad: " ", startingAt: 0)
                  + String(format: " %8.0f  %6.2f  %8.0f %8.0f  %10.1f", mbit, mbit / med(raw, \.mbit), p50, p99, stall))
        }
        row("raw TCP node 2 -> node 1", med(raw, \.mbit), med(rawLat, \.p50), med(rawLat, \.p99), max(med(raw, \.gap), med(rawLat, \.gap)))
        row("applications, before the move", med(apps, \.mbit), med(appLat, \.p50), med(appLat, \.p99), max(med(apps, \.gap), med(appLat, \.gap)))
        row("applications, across 1 -> 3", across.mbit, acrossLat.p50, acrossLat.p99, max(across.gap, acrossLat.gap))
        row("applications, after the move", med(after, \.mbit), med(afterLat, \.p50), med(afterLat, \.p99), max(med(after, \.gap), med(afterLat, \.gap)))
        row("applications, the sender 2 -> 1", senderMoved.mbit, 0, 0, senderMoved.gap)
        print("")
        print("moves: \(moved1) / \(moved2) / \(moved3)")
        print(String(format: "the bulk receiver's longest gap overlapping a move: its own move %.1f ms, its sender's move %.1f ms (under 20 ms: none logged)", atMove(w1), atMove(w3)))
        print(String(format: "across the move: the receiver's longest stall %.1f ms (bulk), the client's longest gap %.1f ms (lines); the receiver's longest stall while its sender moved %.1f ms; targets: throughput >= 0.95 x raw before and after, stall <= 50 ms", across.gap, acrossLat.gap, senderMoved.gap))
    }

    struct Stream { var mbit: Double; var gap: Double }
    struct Lines { var p50: Double; var p99: Double; var gap: Double }

    /// CLOCK_MONOTONIC in ms, modulo 10^6 ms: as streamer.c logs a gap's end (and PhaseClock
    /// the daemons' "at"). A window across the wrap (every 1,000 s) finds no gap.
    static func monotonicMs() -> Double { Double(Clock.monotonicNanoseconds() % 1_000_000_000_000) / 1e6 }

    /// "streamer: gap G ms ending at E" lines of a sink's log.
    static func sinkGaps(_ log: String) -> [(ms: Double, end: Double)] {
        log.split(separator: "\n").compactMap { line in
            let w = line.split(separator: " ")
            guard w.count >= 7, w[0] == "streamer:", w[1] == "gap", let g = Double(w[2]), let e = Double(w[6]) else { return nil }
            return (g, e)
        }
    }
    private func fields(_ text: String) -> [String: Double] {
        var v: [String: Double] = [:]
        for f in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let kv = f.split(separator: "=")
            if kv.count == 2 { v[String(kv[0])] = Double(kv[1]) }
        }
        return v
    }

    private func parseStream(_ text: String) throws -> Stream {
        guard text.hasPrefix("PASS") else { throw SSIError(.system, "streamer: \(text)") }
        let v = fields(text)
        return Stream(mbit: v["mbit_s"] ?? 0, gap: v["sink_max_gap_ms"] ?? 0)
    }

    private func parseLines(_ text: String) throws -> Lines {
        guard text.hasPrefix("PASS") else { throw SSIError(.system, "lineclient: \(text)") }
        let v = fields(text)
        return Lines(p50: v["p50_us"] ?? 0, p99: v["p99_us"] ?? 0, gap: v["max_gap_ms"] ?? 0)
    }

    private func bulk(_ argv: [String]) throws -> Stream { try parseStream(try Proc.run(argv, check: false).1) }
    private func lines(_ argv: [String]) throws -> Lines { try parseLines(try Proc.run(argv, check: false).1) }

    private func app(_ args: [String]) throws -> Int32 {
        let out = try ssi(args)
        guard let id = out.split(whereSeparator: { $0 == " " || $0 == "\n" }).last.flatMap({ Int32($0) }) else { throw SSIError(.system, "no application id in '\(out)'") }
        return id
    }

    private func address(_ app: Int32) throws -> String {
        struct Rec: Decodable { var app: Int32; var address: String? }
        let all = try JSONDecoder().decode([Rec].self, from: Data(try ssi(["ps", "--json"]).utf8))
        guard let a = all.first(where: { $0.app == app })?.address else { throw SSIError(.system, "application \(app) has no address") }
        return a
    }

    private func startApp(node: Int, _ argv: [String]) throws -> Int32 {
        try app(["run", "--node", "\(node)", "--net", "app", "-b", "--log", "--"] + argv)
    }

    /// The log of an application once it has stopped.
    private func waitLog(_ app: Int32, seconds: Double) throws -> String {
        struct Rec: Decodable { var app: Int32; var state: String }
        let t0 = Date()
        while Date().timeIntervalSince(t0) < seconds {
            let all = try JSONDecoder().decode([Rec].self, from: Data(try ssi(["ps", "--json"]).utf8))
            if all.first(where: { $0.app == app })?.state == "stopped" { return try ssi(["logs", "\(app)"]).trimmingCharacters(in: .whitespacesAndNewlines) }
            usleep(100_000)
        }
        throw SSIError(.timeout, "application \(app) did not end within \(Int(seconds)) s")
    }

    private func bulkFromApp(node: Int, _ argv: [String]) throws -> Stream {
        try parseStream(try waitLog(try startApp(node: node, argv), seconds: seconds + 20))
    }

    private func linesFromApp(node: Int, _ argv: [String]) throws -> Lines {
        try parseLines(try waitLog(try startApp(node: node, argv), seconds: seconds + 20))
    }
}
