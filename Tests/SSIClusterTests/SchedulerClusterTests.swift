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
}
