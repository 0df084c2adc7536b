import Foundation
import SSILocalCluster
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench balance`: what load balancing by migration gives on the local cluster. A
/// skewed set of CPU-bound jobs (Tests/Fixtures/cpuwork.c, heavy-tailed lengths) is started
/// on node 1 of `ssi cluster up --nodes N --cpus C`, once with the scheduler's policy `none`
/// on every node and once with the built-in default settings (balancing by migration).
/// Prints makespan, mean slowdown (time in system / CPU time), migrations, and the ideal
/// makespan (total work / total CPUs).
struct BalanceBenchmark: RunsSSI {
    static let usage = "balance [--jobs 12] [--nodes 3] [--cpus 0.5] [--min 0.5] [--max 6] (CPU-seconds per job) [--timeline] [--settings FILE] [--no-baseline]"
    var jobs: Int, nodes: Int
    var cpus: Double, minLength: Double, maxLength: Double
    /// Print where each job ran and when it ended.
    var timeline: Bool
    /// Settings to balance with instead of the built-in default (every node loads them).
    var settings: String?
    /// Skip the run without balancing (its figures do not change with the settings).
    var noBaseline: Bool

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        jobs = try o.int("--jobs", default: 12, in: 2...1000)
        nodes = try o.int("--nodes", default: 3, in: 2...20)
        cpus = try o.double("--cpus", default: 0.5, above: 0)
        minLength = try o.double("--min", default: 0.5, above: 0)
        maxLength = try o.double("--max", default: 6, above: 0)
        timeline = o.flag("--timeline")
        settings = try o.text("--settings")
        noBaseline = o.flag("--no-baseline")
        try o.finish()
        guard maxLength >= minLength else { throw SSIError(.invalidArgument, "--max \(maxLength) is below --min \(minLength)", hint: "ssi-bench \(Self.usage)") }
    }

    /// Job lengths in CPU-seconds, geometric from min to max: a few long jobs, many short.
    var lengths: [Double] { (0..<jobs).map { minLength * pow(maxLength / minLength, Double($0) / Double(jobs - 1)) } }

    struct Run {
        var label: String; var makespan: Double; var slowdown: Double; var migrations: Int
        /// CPU-seconds the jobs' work took, as each job measured it (cpuwork's DONE line).
        var work: Double?
    }

    func run() throws {
        let dir = "/tmp/ssi-bench-balance"
        try BenchArgs.prepare("ssi-bench balance", directory: dir)
        let work = try BenchProcess.compile("cpuwork", into: dir)
        let perSecond = try calibrate(work)
        let total = lengths.reduce(0, +)
        print("jobs: \(jobs), \(String(format: "%.1f", total)) CPU-s in all (\(lengths.map { String(format: "%.1f", $0) }.joined(separator: " "))); \(nodes) nodes of \(cpus) CPU; \(perSecond) units per CPU-second")
        let none = try noScheduling(in: dir)
        var runs: [Run] = []
        let balanced = ("balance (" + (settings.map { ($0 as NSString).lastPathComponent } ?? "default.xml") + ")", settings)
        for (label, settings) in (noBaseline ? [] : [("none (all on node 1)", none as String?)]) + [balanced] {
            runs.append(try measure(label, settings: settings, work: work, perSecond: perSecond))
        }
        // The ideal of each run from the work its jobs measured: the calibration (a half
        // second on an idle CPU) and the jobs (on CPUs shared by quota) see the same work
        // take up to 10% more or less time on this shared machine, which moved the ratio as
        // much as balancing does. The calibrated figure is printed beside it.
        let nominal = total / (Double(nodes) * cpus)
        func ideal(_ r: Run) -> Double { r.work.map { $0 / (Double(nodes) * cpus) } ?? nominal }
        print("")
        print("policy                      makespan   x ideal   mean slowdown   migrations   ideal (measured work / CPUs)")
        for r in runs {
            print(r.label.padding(toLength: 27, withPad: " ", startingAt: 0)
                  + String(format: " %7.1f s  %7.2f   %13.2f   %10d   %7.1f s", r.makespan, r.makespan / ideal(r), r.slowdown, r.migrations, ideal(r)))
        }
        print(String(format: "ideal as calibrated (%.1f CPU-s / CPUs): %.1f s", total, nominal))
        if runs.count == 2 {
            print(String(format: "balanced: makespan %.3f x ideal (target <= 1.15); mean slowdown %.0f%% below none (target >= 35%%)",
                         runs[1].makespan / ideal(runs[1]), 100 * (1 - runs[1].slowdown / runs[0].slowdown)))
        } else if let r = runs.last {
            print(String(format: "balanced: makespan %.3f x ideal (target <= 1.15)", r.makespan / ideal(r)))
        }
    }

    func calibrate(_ work: String) throws -> Int {
        var xs: [Int] = []
        for _ in 0..<3 { xs.append(Int(try Proc.run([work, "--calibrate"]).1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) }
        guard let m = xs.sorted().dropFirst().first, m > 0 else { throw SSIError(.system, "cpuwork --calibrate failed") }
        return m
    }


    struct Row: Decodable { var app: Int32; var state: String; var migrations: Int; var node: Int }

    func measure(_ label: String, settings: String?, work: String, perSecond: Int) throws -> Run {
        try ssi(["cluster", "up", "--nodes", "\(nodes)", "--cpus", "\(cpus)"])
        defer { _ = try? ssi(["cluster", "down"]); Proc.reapAll() }
        if let settings { for k in 1...nodes { try ssi(["sched", "load", settings, "--node", "\(k)"]) } }
        var submitted: [Int32: (at: Date, cpu: Double)] = [:]
        let t0 = Date()
        for (i, length) in lengths.enumerated().reversed() {
            let idFile = "/tmp/ssi-bench-balance/id-\(i)"
            try ssi(["run", "--node", "1", "-b", "--log", "-o", idFile, "--", work, "\(Int(length * Double(perSecond)))"])
            guard let id = Int32((try String(contentsOfFile: idFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw SSIError(.corrupt, "ssi run wrote no application id to \(idFile)")
            }
            submitted[id] = (Date(), length)
            try ssi(["caps", "\(id)", "+CAN_MIGRATE"])
        }
        var ended: [Int32: Date] = [:]
        var migrations = 0
        // Where each job was seen, from when (seconds since the first submission), for
        // --timeline.
        var places: [Int32: [(node: Int, at: Double)]] = [:]
        let dec = JSONDecoder()
        while ended.count < submitted.count {
            usleep(250_000)
            guard Date().timeIntervalSince(t0) < 600 else { throw SSIError(.timeout, "\(label): jobs still running after 600 s") }
            let rows = (try? dec.decode([Row].self, from: Data(try ssi(["ps", "--json"]).utf8))) ?? []
            for r in rows where submitted[r.app] != nil && r.state == "stopped" && ended[r.app] == nil { ended[r.app] = Date() }
            for r in rows where submitted[r.app] != nil && ended[r.app] == nil && places[r.app]?.last?.node != r.node {
                places[r.app, default: []].append((r.node, Date().timeIntervalSince(t0)))
            }
            migrations = rows.filter { submitted[$0.app] != nil }.map(\.migrations).reduce(0, +)
        }
        let makespan = ended.values.map { $0.timeIntervalSince(t0) }.max() ?? 0
        // Each job's "DONE UNITS CPU-SECONDS", from its log (any node serves it).
        var work: Double? = 0
        for id in submitted.keys {
            let line = (try? ssi(["logs", "\(id)"]))?.split(separator: "\n").last { $0.hasPrefix("DONE ") }
            let f = line?.split(separator: " ") ?? []
            if f.count == 3, let cpu = Double(f[2]) { work? += cpu } else { work = nil }
        }
        if work == nil { print("\(label): a job's log gave no CPU time; x ideal uses the calibrated work") }
        let slowdowns = submitted.map { id, s in ended[id]!.timeIntervalSince(s.at) / s.cpu }
        if timeline {
            for (id, s) in submitted.sorted(by: { $0.value.cpu > $1.value.cpu }) {
                let seen = (places[id] ?? []).map { String(format: "n%d@%.1f", $0.node, $0.at) }.joined(separator: " ")
                print(String(format: "  job %5.1f CPU-s: submitted %5.1f s, ended %5.1f s; ", s.cpu, s.at.timeIntervalSince(t0), ended[id]!.timeIntervalSince(t0)) + seen)
            }
        }
        print(String(format: "%@: makespan %.1f s, mean slowdown %.2f, %d migrations, work %@ CPU-s", label, makespan, slowdowns.reduce(0, +) / Double(slowdowns.count), migrations,
                     work.map { String(format: "%.1f", $0) } ?? "?"))
        return Run(label: label, makespan: makespan, slowdown: slowdowns.reduce(0, +) / Double(slowdowns.count), migrations: migrations, work: work)
    }
}
