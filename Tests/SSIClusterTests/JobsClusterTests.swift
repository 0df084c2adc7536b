import Foundation
import SSIControl
import SSIScheduler
import SSISystem
import Testing

private func jobs() throws -> [JobRecord] {
    try JSONDecoder().decode([JobRecord].self, from: Data(try ssiOK("jobs", "--json").utf8))
}

private func job(_ n: Int) throws -> JobRecord? { try jobs().first { $0.job == n } }

private func submitted(_ out: String) -> Int? {
    out.split(separator: " ").dropFirst().first.flatMap { Int($0) }
}

@Suite(.serialized) struct JobsClusterTests {
    /// Jobs through their states on the real cluster: queued, started where asked or where
    /// the placement policy says, held and released, suspended (frozen) and resumed,
    /// terminated, done and failed with their exit status; every bad request refused.
    @Test(.enabled(if: canRunCluster, "\(whyNot)")) func jobsThroughTheirStates() throws {
        try up()
        defer { try? down() }
        let fail = try #require(submitted(try ssiOK("submit", "--", "/bin/sh", "-c", "exit 3")))
        let long = try #require(submitted(try ssiOK("submit", "--node", "3", "--", "/bin/sleep", "60")))
        let held = try #require(submitted(try ssiOK("submit", "--hold", "--name", "later", "--", "/bin/sh", "-c", "exit 0")))
        #expect(try job(held)?.state == .held && job(held)?.name == "later")

        // ssi wait exits with the job's status.
        let w = try ssi("wait", "\(fail)", "--timeout", "30")
        #expect(w.code == 3 && w.out.contains("failed") && w.out.contains("exit status 3"), "\(w.out)")

        _ = try waitFor("the long job runs on node 3", seconds: 10) { try job(long)?.state == .running && job(long)?.startedOn == 3 }
        let app = try #require(try job(long)?.app)
        // Suspend freezes its application on node 3 (asked from node 1); resume thaws it.
        #expect(try ssiOK("suspend", "\(long)", "--node", "1").contains("suspended"))
        let freeze = try String(contentsOfFile: "/sys/fs/cgroup/unified/ssi/app-\(app)/cgroup.freeze", encoding: .utf8)
        #expect(freeze.hasPrefix("1"), "the application's cgroup is frozen")
        #expect(try ssiOK("resume", "\(long)", "--node", "2").contains("running"))
        #expect(try String(contentsOfFile: "/sys/fs/cgroup/unified/ssi/app-\(app)/cgroup.freeze", encoding: .utf8).hasPrefix("0"))

        // A held job starts only once released, placed by the scheduler.
        usleep(500_000)
        #expect(try job(held)?.state == .held)
        _ = try ssiOK("release", "\(held)")
        let r = try ssi("wait", "\(held)", "--timeout", "30")
        #expect(r.code == 0 && r.out.contains("done"), "\(r.out)")
        #expect(try job(held)?.startedOn != nil)

        // Terminate ends the long job; its application stops.
        #expect(try ssiOK("terminate", "\(long)").contains("terminated"))
        _ = try waitFor("its application stops", seconds: 15) {
            let rec = try ssiOK("ps", "--json")
            return rec.contains("\"app\":\(app)") && rec.range(of: "\"app\":\(app)[^}]*\"state\":\"stopped\"", options: .regularExpression) != nil
        }
        #expect(try job(long)?.state == .terminated)

        // A job starts at its submitter's nice value (`nice -n 6 ssi submit`), as `ssi run`
        // passes it on.
        let niced = try Proc.run(["nice", "-n", "6", binDir + "/ssi", "submit", "--node", "2", "--", "/bin/sleep", "60"], check: false)
        let nicedJob = try #require(submitted(niced.1), "\(niced.1)")
        _ = try waitFor("the niced job runs", seconds: 10) { try job(nicedJob)?.state == .running }
        let nicedApp = try #require(try job(nicedJob)?.app)
        let nicedRec = try #require(try record(nicedApp, node: 1))
        _ = try waitFor("the niced job's sleep", seconds: 5) { processTree(nicedRec.pid).count >= 2 }
        for p in processTree(nicedRec.pid) {
            let n = TaskScheduling.policy(p)?.nice
            #expect(n == 6, "PID \(p) of a job submitted under nice -n 6 runs at nice \(n.map(String.init) ?? "?")")
        }
        _ = try ssiOK("terminate", "\(nicedJob)")

        // Refusals name the job and what to do.
        let bad = try ssi("hold", "\(long)")
        #expect(bad.code != 0 && bad.out.contains("job \(long) is terminated: only a queued job can be held"), "\(bad.out)")
        let none = try ssi("suspend", "999")
        #expect(none.code != 0 && none.out.contains("no job 999"), "\(none.out)")
        let node = try ssi("submit", "--node", "9", "--", "/bin/true")
        #expect(node.code != 0 && node.out.contains("node 9 is not online"), "\(node.out)")
        let empty = try ssi("submit")
        #expect(empty.code != 0 && empty.out.contains("give the command after --"), "\(empty.out)")
        let auto = try ssi("submit", "--node", "two", "--", "/bin/true")
        #expect(auto.code != 0 && auto.out.contains("a node number (1..255) or auto, not 'two'"), "\(auto.out)")
        try limitOnRunningJobs()
    }

    /// The cluster-wide limit (`ssi jobs --max-running`): beyond it a job stays queued,
    /// saying why, until a running one ends. Run on the cluster of the test above.
    func limitOnRunningJobs() throws {
        let neg = try ssi("jobs", "--max-running=-1")
        #expect(neg.code != 0 && neg.out.contains("at least 0"), "\(neg.out)")
        _ = try ssiOK("jobs", "--max-running", "1")
        let first = try #require(submitted(try ssiOK("submit", "--", "/bin/sleep", "2")))
        let second = try #require(submitted(try ssiOK("submit", "--node", "2", "--", "/bin/true")))
        _ = try waitFor("the first job runs", seconds: 10) { try job(first)?.state == .running }
        usleep(700_000)
        let waiting = try #require(try job(second))
        #expect(waiting.state == .queued && waiting.waiting == "1 of at most 1 jobs running", "\(waiting)")
        #expect(try ssiOK("jobs").contains("(waiting: 1 of at most 1 jobs running)"))
        let r = try ssi("wait", "\(second)", "--timeout", "30")
        #expect(r.code == 0, "\(r.out)")
        let (a, b) = (try #require(try job(first)), try #require(try job(second)))
        #expect(a.state == .done && (b.started ?? 0) >= (a.ended ?? .infinity) - 0.5, "the second started before the first ended: \(a) \(b)")
        _ = try ssiOK("jobs", "--max-running", "0")
    }
}
