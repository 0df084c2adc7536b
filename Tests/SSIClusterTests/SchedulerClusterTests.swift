import Foundation
import SSIControl
import SSIScheduler
import SSISystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The repository's share/scheduler folder.
private let shareDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("share/scheduler").path

private func stop(_ loops: [pid_t]) {
    for p in loops { kill(-p, SIGKILL); kill(p, SIGKILL) }
    for p in loops { var st: Int32 = 0; waitpid(p, &st, 0) }
}

private func schedStatus(_ node: Int) throws -> SchedulerStatus {
    let out = try ssiOK("sched", "status", "--json", "--lines", "200", "--node", "\(node)")
    let dec = JSONDecoder()
    dec.dateDecodingStrategy = .iso8601
    return try dec.decode(SchedulerStatus.self, from: Data(out.utf8))
}

/// Busy loops inside node k's cpu groups, as an application started there would be. Each
/// is a session leader with a timeout child: `stop` kills the whole session.
private func burn(node k: Int, loops: Int, seconds: Int) throws -> [pid_t] {
    let groups = ["cpu", "cpuacct"].map { "/sys/fs/cgroup/\($0)/ssi-\(lc.name.isEmpty ? "" : lc.name + "-")node\(k)/cgroup.procs" }
    let join = groups.map { "echo $$ > \($0)" }.joined(separator: "; ")
    return try (0..<loops).map { _ -> pid_t in
        var o = SpawnOptions()
        o.newSession = true
        return try Spawn.start(["/bin/sh", "-c", "\(join); exec timeout -s KILL \(seconds) sh -c 'while :; do :; done'"], o)
    }
}

@Suite(.serialized) struct SchedulerClusterTests {
    @Test(.enabled(if: canRunCluster && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "\(whyNot), and a cgroup v1 cpu controller"))
    func settingsSelectorsAndStretchingOnRealNodes() throws {
        Proc.becomeSubreaper()
        let out = try ssiOK("cluster", "up", "--nodes", "3", "--cpus", "0.5")
        #expect(out.contains("of 0.5 CPU each"), "\(out)")
        defer { try? down() }
        // Every node starts with the built-in default: balancing by migration.
        for k in 1...3 {
            _ = try waitFor("node \(k)'s first cpu sample", seconds: 10) { try schedStatus(k).items.contains { $0.name == "cpu" && $0.values["cpus"] != nil } }
            let st = try schedStatus(k)
            #expect(st.active == "balance" && st.source.contains("built-in"), "node \(k): \(st.active ?? "-") from \(st.source)")
            #expect(st.items.contains { $0.name == "cpu" && $0.values["cpus"] == 0.5 }, "node \(k) measures its own 0.5 CPU: \(st.items)")
        }
        // A bad file is refused with its line, and changes nothing.
        let bad = NSTemporaryDirectory() + "ssi-sched-bad.xml"
        try "<scheduler>\n<probe name='cpu' type='cpu'/>\n<configuration name='a' selector='otherwise'>\n<policy name='lb' type='balance' input='nothing'/>\n</configuration>\n</scheduler>\n"
            .write(toFile: bad, atomically: true, encoding: .utf8)
        let r = try ssi("sched", "load", bad, "--node", "1")
        #expect(r.code != 0 && r.out.contains("\(bad):4: <policy>") && r.out.contains("'nothing'"), "\(r.out)")
        #expect(try schedStatus(1).active == "balance")

        // low-high: the selector switches to "high" when the node's load rises, and back.
        _ = try ssiOK("sched", "load", "\(shareDir)/low-high.xml", "--node", "1")
        #expect(try schedStatus(1).active == "low")
        let loops = try burn(node: 1, loops: 3, seconds: 30)
        defer { stop(loops) }
        _ = try waitFor("node 1 switches to high", seconds: 15) { try schedStatus(1).active == "high" }
        _ = try waitFor("node 1 stretches its probe periods", seconds: 10) { try schedStatus(1).stretched }
        let cpu = try #require(try schedStatus(1).items.first { $0.name == "cpu" })
        #expect(cpu.effectivePeriodMs == 2000 && cpu.periodMs == 500, "\(cpu)")
        #expect(try schedStatus(2).active == "balance", "node 2 keeps its own settings")
        stop(loops)
        _ = try waitFor("node 1 switches back to low", seconds: 20) { try schedStatus(1).active == "low" }
        _ = try waitFor("periods back to normal", seconds: 10) { try !schedStatus(1).stretched }
        let log = try ssiOK("sched", "log", "--node", "1")
        #expect(log.contains("low -> high") && log.contains("high -> low"), "\(log)")
        // The switches are events too (ssi events, the dashboard), read from another node.
        let events = try ssiOK("events", "-n", "500", "--node", "3")
        #expect(events.contains("sched-switch") && events.contains("node 1: configuration low -> high: its selector holds"), "\(events)")

        // ssi sched set: a parameter of a loaded element; an unknown one is refused.
        _ = try ssiOK("sched", "set", "load.window", "2", "--node", "1")
        #expect(try schedStatus(1).items.first { $0.name == "load" }?.parameters["window"] == "2")
        let unknown = try ssi("sched", "set", "nosuch.threshold", "1", "--node", "1")
        #expect(unknown.code != 0 && unknown.out.contains("no probe, filter or policy named 'nosuch'"), "\(unknown.out)")
        let invalid = try ssi("sched", "set", "load.window", "0", "--node", "1")
        #expect(invalid.code != 0 && invalid.out.contains("window must be"), "\(invalid.out)")
        // Every node sees the others' published values (the aggregate filters and policies read them).
        let view = try ssiOK("kddm", "get", "scheduler", "1", "--node", "3")
        #expect(view.contains("\"node\":1") && view.contains("cpu.load"), "\(view)")
    }

    /// The policies acting on real nodes of 0.5 CPU: placement at launch avoids the loaded
    /// node; the built-in default spreads busy applications launched on one node (each
    /// decision logged with its reason); a consolidating configuration packs light
    /// applications and reports the nodes left empty.
    @Test(.enabled(if: canRunCluster && FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "\(whyNot), and a cgroup v1 cpu controller"))
    func placementBalancingAndConsolidationOnRealNodes() throws {
        Proc.becomeSubreaper()
        _ = try ssiOK("cluster", "up", "--nodes", "3", "--cpus", "0.5")
        defer { try? down() }
        func where_(_ apps: [Int32]) throws -> [Int32: Int] {
            var out: [Int32: Int] = [:]
            for r in try psJSON(node: 1) where apps.contains(r.app) && r.state == .running { out[r.app] = Int(r.node) }
            return out
        }
        // Four busy applications on node 1, not yet allowed to move.
        let busy = try (0..<4).map { _ in
            try #require(appID(try ssiOK("run", "--node", "1", "-b", "--", "/bin/sh", "-c", "while :; do :; done")))
        }
        _ = try waitFor("node 1's load measured high", seconds: 15) {
            (try schedStatus(1).items.first { $0.name == "load" }?.values.values.first ?? 0) > 2
        }
        usleep(1_000_000)  // the other nodes read node 1's published values each round
        // Placement at launch: the least loaded node, not node 1.
        let placed = try #require(appID(try ssiOK("run", "--node", "auto", "-b", "--", "/bin/sleep", "120")))
        let placedOn = try #require(try where_([placed])[placed])
        #expect(placedOn != 1, "ssi run --node auto placed app \(placed) on the loaded node 1")

        // Balancing by migration (the built-in default): once they may move, they spread.
        for a in busy { _ = try ssiOK("caps", "\(a)", "+CAN_MIGRATE") }
        var spread: [Int32: Int] = [:]
        _ = try waitFor("the busy applications spread over the three nodes", seconds: 30) {
            spread = try where_(busy)
            let per = Dictionary(grouping: spread.values, by: { $0 }).mapValues(\.count)
            return spread.count == 4 && (per[1] ?? 0) <= 2 && (per[2] ?? 0) >= 1 && (per[3] ?? 0) >= 1
        }
        let log = try ssiOK("sched", "log", "--node", "1")
        #expect(log.contains("decision: lb: migrate app") && log.contains("here vs"), "every move logged with its reason: \(log)")
        print("sched: four busy applications launched on node 1 ended on nodes \(spread.values.sorted())")

        // Consolidation: the busy ones stop; light applications on every node are packed
        // onto fewer nodes, and the empty ones are reported.
        for a in busy { _ = try ssiOK("kill", "\(a)", "--signal", "KILL") }
        let light = try (1...3).map { k in
            try #require(appID(try ssiOK("run", "--node", "\(k)", "-b", "--", "/bin/sleep", "120")))
        } + [placed]
        for a in light { _ = try ssiOK("caps", "\(a)", "+CAN_MIGRATE") }
        let pack = "/tmp/ssi-sched-pack-\(getpid()).xml"
        try """
        <scheduler>
          <probe name="cpu" type="cpu" period-ms="500"/>
          <probe name="apps" type="apps" period-ms="500"/>
          <filter name="load" type="moving-average" input="cpu.load" window="2"/>
          <configuration name="pack" selector="otherwise">
            <policy name="pack" type="consolidate" input="load" light="0.3" full="0.8" period-ms="500" min-residence-ms="0"/>
          </configuration>
        </scheduler>

        """.write(toFile: pack, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: pack) }
        for k in 1...3 { _ = try ssiOK("sched", "load", pack, "--node", "\(k)") }
        var packed: [Int32: Int] = [:]
        _ = try waitFor("the light applications packed, a node left empty", seconds: 40) {
            packed = try where_(light)
            return packed.count == light.count && Set(packed.values).count < 3
        }
        let empty = Set(1...3).subtracting(packed.values)
        _ = try waitFor("an empty node (of \(empty.sorted())) reported", seconds: 15) {
            let lines = try (1...3).flatMap { try ssiOK("sched", "log", "--node", "\($0)").split(separator: "\n") }
            return lines.contains { l in
                guard let r = l.range(of: "no application runs on node(s) ") else { return false }
                return l[r.upperBound...].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.contains { empty.contains($0) }
            }
        }
        print("sched: light applications packed onto nodes \(Set(packed.values).sorted()), empty: \(empty.sorted())")
    }
}
