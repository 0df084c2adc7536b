import Foundation
import SSILocalCluster
import SSIProcessTable
import SSISystem
import SSITestSupport
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Cluster applications on the real local cluster (docs/migration.md): KDDM listing, ssi run
// --node, ps, caps, logs, checkpoint with replicas and restart on a survivor.

/// The application id `ssi run` printed.
func appID(_ out: String) -> Int32? {
    out.split(separator: "\n").first { $0.hasPrefix("Running application ") }.flatMap { Int32($0.split(separator: " ").last ?? "") }
}

func psJSON(node: Int) throws -> [AppRecord] {
    let out = try ssiOK("ps", "--json", "--node", "\(node)")
    return try JSONDecoder().decode([AppRecord].self, from: Data(out.utf8))
}

func record(_ app: Int32, node: Int) throws -> AppRecord? { try psJSON(node: node).first { $0.app == app } }

/// Kills node k's daemon and the processes of its applications with SIGKILL.
func killNode(_ k: Int, apps: [Int32]) {
    for p in apps { kill(p, SIGKILL) }
    kill(nodePid(k), SIGKILL)
}

@Suite(.serialized, .enabled(if: canRunCluster, Comment(rawValue: whyNot)))
struct ApplicationTests {
    @Test(.timeLimit(.minutes(1))) func kddmListShowsEverySetObjectFromAnyNode() throws {
        try up()
        defer { try? down() }
        _ = try ssiOK("kddm", "create-set", "listed")
        for id in [7, 3, 300, 12] { _ = try ssiOK("kddm", "put", "listed", "\(id)", "v\(id)", "--node", "\(id % 3 + 1)") }
        for k in 1...3 {
            #expect(try ssiOK("kddm", "list", "listed", "--node", "\(k)") == "3\tv3\n7\tv7\n12\tv12\n300\tv300")
        }
        _ = try ssiOK("kddm", "remove", "listed", "7")
        #expect(try ssiOK("kddm", "list", "listed", "--node", "2") == "3\tv3\n12\tv12\n300\tv300")
        let bad = try ssi("kddm", "list", "nosuchset")
        #expect(bad.code != 0 && bad.out.contains("no set 'nosuchset'"), "\(bad.out)")
    }

    /// An application started on node 2 from node 1's CLI: own PID namespace (the command is
    /// process 2), node 2's network namespace, a child of node 2's ssid; seen by ps from
    /// every node; caps stored in its record; its log read from another node.
    @Test(.timeLimit(.minutes(2))) func runOnAnotherNodePsCapsLogs() throws {
        try up()
        defer { try? down() }
        let out = try ssiOK("run", "-b", "--log", "--node", "2", "--", "/bin/sh", "-c", "echo started as $$; exec sleep 100")
        let app = try #require(appID(out), "no id in \(out)")
        #expect(app > ApplicationID.base)
        let r = try #require(try record(app, node: 3))
        #expect(r.node == 2 && r.state == .running && r.command.first == "/bin/sh")
        let status = try String(contentsOfFile: "/proc/\(r.pid)/status", encoding: .utf8)
        #expect(status.contains(where: { _ in true }) && status.split(separator: "\n").contains { $0.hasPrefix("NSpid:") && $0.hasSuffix("\t1") },
                "ssi-init is not process 1 of its own namespace")
        let net = { (p: Int32) in try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p)/ns/net") }
        #expect(net(r.pid) != nil && net(r.pid) == net(nodePid(2)), "the app is not in node 2's network namespace")
        #expect(ProcStatParent.of(r.pid) == nodePid(2), "the app's init is not a child of node 2's ssid")
        // Read 250 ms after the start (watch), not at the next 2 s refresh.
        let counted = try waitFor("ps shows 2 processes", seconds: 15) { try record(app, node: 1)?.processes == 2 }
        #expect(counted < 1.5, "ssi ps counted the processes only \(counted) s after ssi run returned")
        #expect(try ssiOK("caps", "\(app)", "+CAN_MIGRATE", "--node", "3") == "\(app): CAN_MIGRATE")
        #expect(try record(app, node: 1)?.caps == ["CAN_MIGRATE"])
        let bad = try ssi("caps", "\(app)", "+FLY")
        #expect(bad.code != 0 && bad.out.contains("unknown capability 'FLY'"), "\(bad.out)")
        _ = try waitFor("the log on node 2 read from node 3", seconds: 5) { try ssiOK("logs", "\(app)", "--node", "3") == "started as 2" }
        let missing = try ssi("checkpoint", "\(ApplicationID.base + 99_999)")
        #expect(missing.code != 0 && missing.out.contains("no application"), "\(missing.out)")
        let down = try ssi("run", "--node", "9", "--", "/bin/true")
        #expect(down.code != 0 && down.out.contains("node 9"), "\(down.out)")
        // Its nice value is its caller's (`nice -n 7 ssi run`), not the daemon's (the
        // engine's own reader, getpriority(2) by thread id).
        func nice(_ pid: Int32) -> Int32? { TaskScheduling.policy(pid)?.nice }
        #expect(nice(r.pid) == 0, "the application runs at nice \(nice(r.pid).map(String.init) ?? "?")")
        let niced = try Proc.run(["nice", "-n", "7", binDir + "/ssi", "run", "-b", "--log", "--node", "2", "--", "sleep", "30"], check: false)
        let nicedApp = try #require(appID(niced.1), "no id in \(niced.1)")
        let nicedRec = try #require(try record(nicedApp, node: 2))
        _ = try waitFor("the niced application's sleep", seconds: 5) { processTree(nicedRec.pid).count >= 2 }
        for p in processTree(nicedRec.pid) { #expect(nice(p) == 7, "PID \(p) of the application started under nice -n 7 runs at nice \(nice(p).map(String.init) ?? "?")") }
        kill(nicedRec.pid, SIGTERM)
        // ps shows each application's CPU use (percent of one CPU), from any node.
        let busyOut = try ssiOK("run", "-b", "--log", "--node", "3", "--", "/bin/sh", "-c", "exec timeout 30 sh -c 'while :; do :; done'")
        let busy = try #require(appID(busyOut))
        _ = try waitFor("ps on node 1 shows the busy application's CPU", seconds: 15) { (try record(busy, node: 1)?.cpu ?? 0) > 30 }
        #expect((try record(app, node: 2)?.cpu ?? 100) < 10, "the sleeping application is idle")
        #expect(try ssiOK("ps").contains(" CPU "))
        if let b = try record(busy, node: 3) { kill(b.pid, SIGTERM) }
        kill(r.pid, SIGTERM)
        _ = try waitFor("stopped in ps", seconds: 5) { try record(app, node: 3)?.state == .stopped }
    }

    /// Without --log the caller's stdout reaches the application (SCM_RIGHTS over the control
    /// socket) and ssi run returns its exit status.
    @Test(.timeLimit(.minutes(1))) func runPassesTheCallersFilesAndStatus() throws {
        try up()
        defer { try? down() }
        let r = try ssi("run", "--node", "3", "--", "/bin/sh", "-c", "echo out of $$; exit 3")
        #expect(r.code == 3, "\(r.out)")
        #expect(r.out.contains("out of 2"), "\(r.out)")
        let app = try #require(appID(r.out))
        let rec = try #require(try record(app, node: 1))
        #expect(rec.state == .stopped && rec.exit_status == 3)
        let nf = try ssi("run", "--node", "2", "--", "/no/such/program")
        #expect(nf.code != 0 && nf.out.contains("/no/such/program") && nf.out.contains("node 2"), "\(nf.out)")
    }

    /// checkpoint --replicas 1 from another node; node 3 killed with kill -9 (daemon and
    /// application): every survivor shows the application lost; restart --node 2 brings it
    /// back from the replica (node 2 never saw the snapshot made on node 3).
    @Test(.timeLimit(.minutes(3))) func replicaSurvivesKillNine() throws {
        try up()
        defer { try? down() }
        let out = try ssiOK("run", "-b", "--log", "--node", "3", "--", "/bin/sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")
        let app = try #require(appID(out))
        usleep(600_000)
        let c = try ssiOK("checkpoint", "\(app)", "--replicas", "1", "--node", "1")
        #expect(c.contains("Version: 1") && c.contains("Node: 3 (replicas on 1)"), "\(c)")
        #expect(try ssiOK("snapshots", "\(app)").contains("v1"))
        // A second version (incremental: it adds what changed to node 3's page pool, and its
        // replica on node 1 carries every page it needs).
        let c2 = try ssiOK("checkpoint", "\(app)", "--replicas", "1")
        #expect(c2.contains("Version: 2") && c2.contains("replicas on 1"), "\(c2)")
        let listed = try ssiOK("snapshots", "\(app)")
        #expect(listed.contains("v2") && listed.contains("adds"), "\(listed)")
        let events = try ssiOK("events", "-n", "100", "--node", "2")
        #expect(events.contains("checkpoint-done") && events.contains("application \(app): snapshot v1 on node 3"), "\(events)")
        let busy = try ssi("restart", "\(app)", "--node", "2")
        #expect(busy.code != 0 && busy.out.contains("running on node 3"), "\(busy.out)")
        let rec = try #require(try record(app, node: 1))
        killNode(3, apps: [rec.pid])
        _ = try waitFor("lost on nodes 1 and 2", seconds: 6) {
            try record(app, node: 1)?.state == .lost && record(app, node: 2)?.state == .lost
        }
        let r = try ssiOK("restart", "\(app)", "--node", "2")
        #expect(r.contains("on node 2"), "\(r)")
        let back = try #require(try record(app, node: 1))
        #expect(back.node == 2 && back.state == .running && Proc.alive(back.pid))
        // v2 came to node 2 from node 1's copy (node 3 is gone).
        #expect(try ssiOK("snapshots", "\(app)").contains("nodes 3,1,2"))
        // Deleting v1: node 1 deletes its copy; node 3 is down, so the command says so.
        let d = try ssi("snapshots", "--delete", "\(app)", "1")
        #expect(d.code != 0 && d.out.contains("node 3 (offline)"), "\(d.out)")
        let after = try ssiOK("snapshots", "\(app)")
        #expect(!after.contains("\tv1\t") && after.contains("\tv2\t"), "\(after)")
        let unknown = try ssi("snapshots", "--delete", "\(app)", "7")
        #expect(unknown.code != 0 && unknown.out.contains("no snapshot version 7"), "\(unknown.out)")
        kill(back.pid, SIGTERM)
    }
}

extension ApplicationTests {
    /// A C program in its own PID namespace (process 2, a thread 4, a child 3) checkpointed
    /// with --kill on node 1 and restarted on node 3: the same getpid/getppid/gettid inside,
    /// though the node runs processes with those numbers (1, 2, 3 and 4 are always taken in
    /// the node's namespace: init and kernel threads), /proc/self right, memory intact; it
    /// checks all that itself and exits 0 only if everything held.
    @Test(.timeLimit(.minutes(3))) func pidsSurviveRestartOnAnotherNode() throws {
        let fixture = try TestEnv.fixture("nspids")
        try up()
        defer { try? down() }
        for p: Int32 in [1, 2, 3, 4] { #expect(kill(p, 0) == 0, "PID \(p) is free in the node's namespace") }
        let out = try ssiOK("run", "-b", "--log", "--node", "1", "--", fixture)
        let app = try #require(appID(out))
        _ = try waitFor("READY", seconds: 5) { try ssiOK("logs", "\(app)").contains("READY 2") }
        #expect(try ssiOK("logs", "\(app)").contains("main pid 2 ppid 1 tid 2 thread 4 child 3"))
        let c = try ssiOK("checkpoint", "--kill=KILL", "\(app)")
        #expect(c.contains("Version: 1"), "\(c)")
        _ = try waitFor("stopped", seconds: 5) { try record(app, node: 2)?.state == .stopped }
        let r = try ssiOK("restart", "\(app)", "--node", "3")
        #expect(r.contains("on node 3"), "\(r)")
        let rec = try #require(try record(app, node: 2))
        #expect(rec.node == 3 && rec.state == .running)
        let ns = try String(contentsOfFile: "/proc/\(rec.pid)/status", encoding: .utf8)
        #expect(ns.split(separator: "\n").contains { $0.hasPrefix("NSpid:") && $0.hasSuffix("\t1") }, "the restored init is not process 1 of a new namespace")
        kill(rec.pid, SIGUSR1)
        _ = try waitFor("the program's verdict", seconds: 10) { try record(app, node: 1)?.state == .stopped }
        let log = try ssiOK("logs", "\(app)", "--node", "2")
        #expect(log.contains("PASS child pid 3 ppid 2") && log.hasSuffix("PASS") && !log.contains("FAIL"), "\(log)")
        #expect(try record(app, node: 1)?.exit_status == 0)
    }
}

extension ApplicationTests {
    /// Stop-and-copy migration 1 -> 2 -> 3 -> 1 of a C program that checks its PIDs and its
    /// memory itself at the end; refusals first (no CAN_MIGRATE, same node, unknown node):
    /// the application never stopped for them.
    @Test(.timeLimit(.minutes(4))) func migrateAroundTheCluster() throws {
        try up()
        defer { try? down() }
        let app = try runNspids(node: 1)
        let nocap = try ssi("migrate", "\(app)", "2")
        #expect(nocap.code != 0 && nocap.out.contains("CAN_MIGRATE"), "\(nocap.out)")
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        let same = try ssi("migrate", "\(app)", "1", "--node", "3")
        #expect(same.code != 0 && same.out.contains("already runs on node 1"), "\(same.out)")
        let nowhere = try ssi("migrate", "\(app)", "7")
        #expect(nowhere.code != 0 && nowhere.out.contains("node 7 is not online"), "\(nowhere.out)")
        let first = try #require(try record(app, node: 2))
        #expect(first.node == 1 && first.state == .running && Proc.alive(first.pid))
        // A target that cannot store the snapshot (its snapshot directory is a file): the
        // migration fails after the source stopped, and the source goes on, unchanged.
        let blocked = "\(lc.dir)/node2/chkpt"
        try? FileManager.default.createDirectory(atPath: "\(lc.dir)/node2", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: blocked, contents: Data("not a directory".utf8)))
        let failed = try ssi("migrate", "\(app)", "2")
        #expect(failed.code != 0 && failed.out.contains("goes on on node 1"), "\(failed.out)")
        try FileManager.default.removeItem(atPath: blocked)
        let after = try #require(try record(app, node: 3))
        #expect(after.node == 1 && after.state == .running && after.pid == first.pid)
        for p in NodeTree.of(first.pid) { #expect(Proc.state(p) != "T", "PID \(p) was left stopped") }
        // An application traced by a program of its own (strace) cannot be seized: refused,
        // and left running, not frozen (the freezer froze it before the seize failed).
        if let strace = toolPath("strace") {
            let traced = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", strace, "-f", "-o", "/dev/null", "/bin/sleep", "300")))
            _ = try ssiOK("caps", "\(traced)", "+CAN_MIGRATE")
            _ = try waitFor("the traced sleep", seconds: 10) { try record(traced, node: 1).map { NodeTree.of($0.pid).count >= 3 } ?? false }
            for _ in 0..<2 {
                let refused = try ssi("migrate", "\(traced)", "2")
                #expect(refused.code != 0 && refused.out.contains("cannot trace") && refused.out.contains("goes on on node 1"), "\(refused.out)")
                let state = try record(traced, node: 1)?.state
                #expect(state == .running, "left \(state?.rawValue ?? "no record")")
            }
            _ = try ssi("kill", "\(traced)", "--signal", "KILL")
        } else {
            print("migrateAroundTheCluster: the traced-application case skipped: strace is not installed")
        }
        // A TCP connection to a peer outside the cluster's applications (etcd, in the hub):
        // refused before anything stops, naming the connection, the application untouched.
        let outside = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", "python3", "-c",
            "import socket, time\ns = socket.create_connection(('\(LocalCluster.subnet).254', 2379))\nprint('connected', flush=True)\nwhile True: time.sleep(1)")))
        _ = try ssiOK("caps", "\(outside)", "+CAN_MIGRATE")
        _ = try waitFor("its connection", seconds: 15) { try ssiOK("logs", "\(outside)").contains("connected") }
        let refused = try ssi("migrate", "\(outside)", "2")
        #expect(refused.code != 0 && refused.out.contains("refused: PID") && refused.out.contains("-> \(LocalCluster.subnet).254:2379")
                && refused.out.contains("goes on on node 1") && !refused.out.contains("--tcp-established"), "\(refused.out)")
        #expect(try record(outside, node: 1)?.state == .running)
        _ = try ssi("kill", "\(outside)", "--signal", "KILL")
        var last = first
        // Versions are numbered across the cluster: a checkpoint after each move takes a
        // number above every earlier one, wherever it was made (a target that never held a
        // version once numbered its own from 1 again).
        func version(_ out: String) -> Int? { out.split(separator: "\n").first { $0.hasPrefix("Version: ") }.flatMap { Int($0.dropFirst(9)) } }
        var versions = [try #require(version(try ssiOK("checkpoint", "\(app)")))]
        for (target, via) in [(2, 3), (3, 1), (1, 2)] {
            let out = try ssiOK("migrate", "\(app)", "\(target)", "--node", "\(via)")
            #expect(out.contains("to node \(target)"), "\(out)")
            let now = try #require(try record(app, node: via))
            #expect(now.node == UInt8(target) && now.state == .running && Proc.alive(now.pid))
            // Counted on the target as it landed, not 2 s later.
            #expect(now.processes == NodeTree.of(now.pid).count && now.rss_bytes > 0, "ssi ps right after the move: \(now.processes) processes, \(now.rss_bytes) bytes")
            _ = try waitFor("the old copy gone", seconds: 5) { !Proc.alive(last.pid) }
            for k in 1...3 { #expect(try psJSON(node: k).filter { $0.app == app }.map(\.node) == [UInt8(target)]) }
            last = now
            versions.append(try #require(version(try ssiOK("checkpoint", "\(app)"))))
        }
        #expect(zip(versions, versions.dropFirst()).allSatisfy { $0 < $1 }, "versions \(versions)")
        let listed = try ssiOK("snapshots", "\(app)").split(separator: "\n").compactMap { $0.split(separator: "\t").dropFirst().first.map(String.init) }
        #expect(Set(listed).count == listed.count && listed.count >= versions.count, "\(listed)")
        #expect(last.migrations == 3)
        kill(last.pid, SIGUSR1)
        _ = try waitFor("the program's verdict", seconds: 10) { try record(app, node: 3)?.state == .stopped }
        let log = try ssiOK("logs", "\(app)")
        #expect(log.contains("PASS child pid 3 ppid 2") && log.hasSuffix("PASS") && !log.contains("FAIL"), "\(log)")
        #expect(try record(app, node: 2)?.exit_status == 0)
    }
}

extension ApplicationTests {
    /// Tests/Fixtures/nspids.c as a cluster application on `node`, once it says READY.
    func runNspids(node: Int) throws -> Int32 {
        let app = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "\(node)", "--", try TestEnv.fixture("nspids"))))
        _ = try waitFor("READY", seconds: 5) { try ssiOK("logs", "\(app)").contains("READY 2") }
        return app
    }

    /// Two migrations of one application asked at once (a user's while the scheduler moves
    /// it, or two users'): one moves it, the other is refused cleanly ("is migrating", or it
    /// "now runs on node N") or, coming after, moves it again; never both dumping it at once.
    /// The program checks its own state at the end.
    @Test(.timeLimit(.minutes(3))) func concurrentMigrationsOfOneApplication() throws {
        try up()
        defer { try? down() }
        let app = try runNspids(node: 1)
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        let results = Mutex<[(Int, (code: Int32, out: String))]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let target = i + 2
            if let r = try? ssi("migrate", "\(app)", "\(target)") { results.withLock { $0.append((target, (r.code, r.out))) } }
        }
        let all = results.withLock { $0 }
        #expect(all.count == 2)
        #expect(all.contains { $0.1.code == 0 }, "\(all)")
        for (_, r) in all where r.code != 0 {
            let out: String = r.out
            #expect(out.contains("is migrating") || out.contains("nothing was changed") || out.contains("goes on on node"), "\(out)")
        }
        let rec = try #require(try record(app, node: 1))
        #expect(rec.state == .running && Proc.alive(rec.pid))
        kill(rec.pid, SIGUSR1)
        _ = try waitFor("the program's verdict", seconds: 10) { try record(app, node: 1)?.state == .stopped }
        let log = try ssiOK("logs", "\(app)")
        #expect(log.hasSuffix("PASS") && !log.contains("FAIL"), "\(log)")
    }
}

extension ApplicationTests {
    /// Node 2's daemon killed with kill -9 while two of its applications run; one of them is
    /// killed too. When the daemon comes back it adopts the survivor (still running, and
    /// stopped once it ends) and records the other as stopped.
    @Test(.timeLimit(.minutes(2))) func restartedDaemonAdoptsItsApplications() throws {
        try up()
        defer { try? down() }
        let a = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "2", "--", "/bin/sleep", "300")))
        let b = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "2", "--", "/bin/sleep", "300")))
        let ra = try #require(try record(a, node: 1)), rb = try #require(try record(b, node: 1))
        killNode(2, apps: [rb.pid])
        _ = try waitFor("lost while node 2 is down", seconds: 6) { try record(a, node: 1)?.state == .lost }
        _ = try ssiOK("cluster", "start-node", "2")
        _ = try waitFor("a running again, b stopped", seconds: 10) {
            try record(a, node: 3)?.state == .running && record(b, node: 3)?.state == .stopped
        }
        #expect(Proc.alive(ra.pid))
        kill(ra.pid, SIGTERM)
        _ = try waitFor("a stopped once it ended", seconds: 5) { try record(a, node: 1)?.state == .stopped }
        _ = Proc.reapAll()
    }
}

extension ApplicationTests {
    /// A python3 program (Tests/Fixtures/pyids.py) migrated 1 -> 2 -> 3 -> 1: same pid and
    /// ppid, same data, and its loop went on.
    @Test(.timeLimit(.minutes(3)), .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"), "needs /usr/bin/python3"))
    func migratePython() throws {
        try up()
        defer { try? down() }
        let app = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", "/usr/bin/python3", TestEnv.repoRoot + "/Tests/Fixtures/pyids.py")))
        _ = try waitFor("READY", seconds: 10) { try ssiOK("logs", "\(app)").contains("READY 2 1") }
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        for target in [2, 3, 1] { #expect(try ssiOK("migrate", "\(app)", "\(target)").contains("to node \(target)")) }
        let rec = try #require(try record(app, node: 2))
        #expect(rec.node == 1 && rec.migrations == 3)
        kill(rec.pid, SIGUSR1)
        _ = try waitFor("its verdict", seconds: 10) { try record(app, node: 1)?.state == .stopped }
        let log = try ssiOK("logs", "\(app)")
        #expect(log.contains("PASS pid 2 ppid 1") && !log.contains("FAIL"), "\(log)")
        #expect(try record(app, node: 3)?.exit_status == 0)
    }
}

extension ApplicationTests {
    /// The target's daemon killed with kill -9 while 256 MiB stream to it: the migration
    /// fails, the application goes on on node 1 with the same pid, not stopped, its memory
    /// the same (it checks its checksum itself).
    @Test(.timeLimit(.minutes(3))) func targetKilledMidTransferLeavesTheSourceRunning() throws {
        let fixture = try TestEnv.fixture("bigmem")
        try up()
        defer { try? down() }
        let app = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", fixture, "256")))
        _ = try waitFor("READY", seconds: 20) { try ssiOK("logs", "\(app)").contains("READY") }
        let ready = try ssiOK("logs", "\(app)")
        let sum = try #require(ready.split(separator: "\n").first { $0.hasPrefix("READY") }?.split(separator: " ").last)
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        let before = try #require(try record(app, node: 1))
        let mig = try Proc.spawn([binDir + "/ssi", "migrate", "\(app)", "2"], log: "/tmp/ssi-apps-migrate.log")
        _ = try waitFor("bytes arriving on node 2", seconds: 10) {
            let tmp = (try? FileManager.default.contentsOfDirectory(atPath: "\(lc.dir)/node2/chkpt/\(app)")) ?? []
            return tmp.contains { $0.hasPrefix(".tmp-") }
        }
        kill(nodePid(2), SIGKILL)
        var st: Int32 = 0
        while waitpid(mig, &st, 0) < 0 && errno == EINTR {}
        let out = (try? String(contentsOfFile: "/tmp/ssi-apps-migrate.log", encoding: .utf8)) ?? ""
        #expect(st != 0 && out.contains("goes on on node 1"), "\(out)")
        let after = try #require(try record(app, node: 3))
        #expect(after.node == 1 && after.state == .running && after.pid == before.pid)
        for p in NodeTree.of(before.pid) { #expect(Proc.state(p) != "T", "PID \(p) was left stopped") }
        kill(before.pid, SIGUSR1)
        _ = try waitFor("its checksum again", seconds: 20) { try ssiOK("logs", "\(app)").contains("SUM") }
        #expect(try ssiOK("logs", "\(app)").contains("SUM \(sum)"))
    }
}

extension ApplicationTests {
    /// The image crosses the network: the bytes node 2's interface receives during a
    /// migration to it are at least the application's anonymous resident memory (no shared
    /// directory carries it), and its memory is the same afterwards.
    @Test(.timeLimit(.minutes(3))) func migrationBytesCrossTheTargetsInterface() throws {
        let fixture = try TestEnv.fixture("bigmem")
        try up()
        defer { try? down() }
        func rx() throws -> UInt64 {
            let r = try Proc.run(["ip", "netns", "exec", lc.nodeNamespace(2), "cat", "/sys/class/net/eth0/statistics/rx_bytes"], check: false)
            return UInt64(r.1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }
        let app = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", fixture, "64")))
        _ = try waitFor("READY", seconds: 20) { try ssiOK("logs", "\(app)").contains("READY") }
        let sum = try #require(try ssiOK("logs", "\(app)").split(separator: "\n").first { $0.hasPrefix("READY") }?.split(separator: " ").last)
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        // Its anonymous resident memory (RssAnon, proc(5)): file-backed pages (libc...) are
        // mapped again from the files on the target, not sent.
        let root = try #require(try record(app, node: 1)).pid
        let rss = NodeTree.of(root).reduce(UInt64(0)) { acc, p in
            let s = (try? String(contentsOfFile: "/proc/\(p)/status", encoding: .utf8)) ?? ""
            let kb = s.split(separator: "\n").first { $0.hasPrefix("RssAnon:") }?.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
            return acc + kb * 1024
        }
        #expect(rss >= 64 << 20)
        let before = try rx()
        _ = try ssiOK("migrate", "\(app)", "2")
        let received = try rx() - before
        print("migration of \(rss >> 20) MiB resident: node 2 received \(received >> 20) MiB")
        #expect(received >= rss, "node 2 received \(received) bytes, less than the \(rss) resident")
        let now = try #require(try record(app, node: 3))
        #expect(now.node == 2)
        kill(now.pid, SIGUSR1)
        _ = try waitFor("its checksum again", seconds: 20) { try ssiOK("logs", "\(app)").contains("SUM") }
        #expect(try ssiOK("logs", "\(app)").contains("SUM \(sum)"))
    }
}

extension ApplicationTests {
    /// `ssi run --node 2` in the foreground: SIGTERM sent to it reaches the application on
    /// node 2 (through its init), and ssi run returns its status, 128 + 15.
    @Test(.timeLimit(.minutes(1))) func foregroundRunPassesSignalsOn() throws {
        try up()
        defer { try? down() }
        let log = "/tmp/ssi-apps-fg-\(getpid()).log"
        let cli = try Proc.spawn([binDir + "/ssi", "run", "--log", "--node", "2", "--", "/bin/sleep", "100"], log: log)
        _ = try waitFor("the application", seconds: 10) { try psJSON(node: 1).contains { $0.state == .running && $0.command == ["/bin/sleep", "100"] } }
        let app = try #require(try psJSON(node: 1).first { $0.command == ["/bin/sleep", "100"] })
        kill(cli, SIGTERM)
        var st: Int32 = 0
        while waitpid(cli, &st, 0) < 0 && errno == EINTR {}
        #expect(WaitStatus(raw: st) == .exited(143), "ssi run ended with \(WaitStatus(raw: st)): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        let rec = try #require(try record(app.app, node: 3))
        #expect(rec.state == .stopped && rec.exit_status == 143)
        unlink(log)
    }
}

/// The cgroup v2 mount, if any (/proc/self/mounts).
let cgroup2: String? = {
    let m = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
    for line in m.split(separator: "\n") {
        let f: [Substring] = line.split(separator: " ")
        if f.count > 2 && f[2] == "cgroup2" { return String(f[1]) }
    }
    return nil
}()

extension ApplicationTests {
    /// A group `ssi/app-<id>` still holding a process (of an earlier local cluster that gave
    /// out the same ids): the launch takes the next id rather than share the group.
    @Test(.timeLimit(.minutes(1)), .enabled(if: cgroup2 != nil, "needs a cgroup v2 hierarchy"))
    func launchSkipsAnIdWhoseGroupIsBusy() throws {
        try up()
        defer { try? down() }
        let group = "\(cgroup2!)/ssi/app-\(ApplicationID.base + 1)"
        try FileManager.default.createDirectory(atPath: group, withIntermediateDirectories: true)
        let stray = try Proc.spawn(["/bin/sleep", "60"], log: "/dev/null")
        defer { kill(stray, SIGKILL); var st: Int32 = 0; waitpid(stray, &st, 0); rmdir(group) }
        try "\(stray)".write(toFile: "\(group)/cgroup.procs", atomically: false, encoding: .utf8)
        let app = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", "/bin/sleep", "60")))
        // Other local clusters on this machine may hold later ids' groups too: any id but the
        // busy one, and a group that holds the application alone.
        #expect(app > ApplicationID.base + 1)
        let rec = try #require(try record(app, node: 1))
        let procs = try String(contentsOfFile: "\(cgroup2!)/ssi/app-\(app)/cgroup.procs", encoding: .utf8)
        #expect(Set(procs.split(separator: "\n").compactMap { Int32($0) }) == Set(NodeTree.of(rec.pid)), "group: \(procs)")
        kill(rec.pid, SIGKILL)
    }
}

enum NodeTree {
    /// `root` and its descendants (/proc/PID/task/TID/children).
    static func of(_ root: Int32) -> [Int32] {
        var out: [Int32] = [], todo = [root]
        while let p = todo.popLast() {
            out.append(p)
            for t in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p)/task")) ?? [] {
                let kids = (try? String(contentsOfFile: "/proc/\(p)/task/\(t)/children", encoding: .utf8)) ?? ""
                todo += kids.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            }
        }
        return out
    }
}

enum ProcStatParent {
    /// The parent of `pid` (field 4 of /proc/PID/stat).
    static func of(_ pid: Int32) -> Int32 {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = s.lastIndex(of: ")") else { return 0 }
        let f = s[s.index(after: close)...].split(separator: " ")
        return f.count > 1 ? Int32(f[1]) ?? 0 : 0
    }
}

extension ApplicationTests {
    /// ssi-init, process 1 of every application, moves as its state alone while its command
    /// runs (FreshInit): after a migration, a new ssi-init (its environment says
    /// SSI_INIT_RESUME) shows the same command line and environment, is still process 1
    /// with the command as its child, passes a user's SIGTERM on and ends with the
    /// command's status. Once the command has ended with an orphan left, the init holds
    /// the command's exit status: it is then saved whole, and the status survives the move.
    @Test(.timeLimit(.minutes(2))) func initMovesAsItsStateAlone() throws {
        try up()
        defer { try? down() }
        func strings(_ path: String) -> [String] {
            ((try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        }
        func children(_ pid: Int32) -> [Int32] {
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "").split(separator: " ").compactMap { Int32($0) }
        }
        let app = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", "/bin/sleep", "300")))
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        let before = try #require(try record(app, node: 1))
        let (argv, env) = (strings("/proc/\(before.pid)/cmdline"), strings("/proc/\(before.pid)/environ"))
        // Signals it was started with ignored (this test's runner ignores SIGPIPE) stay so.
        func ignored(_ pid: Int32) -> String? {
            (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n").first { $0.hasPrefix("SigIgn:") }.map(String.init)
        }
        let ignoredBefore = ignored(before.pid)
        #expect(argv.contains("--") && argv.last == "300", "\(argv)")
        _ = try ssiOK("migrate", "\(app)", "2")
        let moved = try #require(try record(app, node: 3))
        #expect(moved.node == 2 && moved.state == .running)
        #expect(strings("/proc/\(moved.pid)/cmdline") == argv)
        let movedEnv = strings("/proc/\(moved.pid)/environ")
        #expect(movedEnv.contains("SSI_INIT_RESUME=2"), "the init was not started again from its state: \(movedEnv)")
        #expect(movedEnv.filter { !$0.hasPrefix("SSI_INIT_RESUME=") } == env.filter { !$0.hasPrefix("SSI_INIT_RESUME=") })
        #expect(ignored(moved.pid) == ignoredBefore && ignoredBefore != nil)
        let ids = try String(contentsOfFile: "/proc/\(moved.pid)/status", encoding: .utf8)
        #expect(ids.split(separator: "\n").contains { $0.hasPrefix("NSpid:") && $0.hasSuffix("\t1") })
        #expect(children(moved.pid).count == 1, "the command is not the new init's child")
        // Moved again, from a new init: still its state alone.
        _ = try ssiOK("migrate", "\(app)", "3")
        let again = try #require(try record(app, node: 1))
        #expect(again.node == 3 && strings("/proc/\(again.pid)/environ").contains("SSI_INIT_RESUME=2"))
        kill(again.pid, SIGTERM)
        _ = try waitFor("the application's end", seconds: 10) { try record(app, node: 2)?.state == .stopped }
        #expect(try record(app, node: 2)?.exit_status == 128 + SIGTERM)

        // The command exits with 7, its child left to the init: saved whole.
        let orphaned = try #require(appID(try ssiOK("run", "-b", "--log", "--node", "1", "--", "/bin/sh", "-c", "/bin/sleep 300 & exit 7")))
        _ = try ssiOK("caps", "\(orphaned)", "+CAN_MIGRATE")
        let first = try #require(try record(orphaned, node: 1))
        _ = try waitFor("the command's end", seconds: 10) { children(first.pid).count == 1 && (try? String(contentsOfFile: "/proc/\(children(first.pid)[0])/cmdline", encoding: .utf8))?.hasPrefix("/bin/sleep") == true }
        // Its name says it holds the status (a later PID 2 would not be its command).
        let comm = { (pid: Int32) in (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines) }
        #expect(comm(first.pid) == "ssi-init-ended")
        _ = try ssiOK("migrate", "\(orphaned)", "2")
        let there = try #require(try record(orphaned, node: 1))
        #expect(comm(there.pid) == "ssi-init-ended")
        #expect(there.node == 2 && !strings("/proc/\(there.pid)/environ").contains("SSI_INIT_RESUME=2"), "an init holding its command's status was started again from nothing")
        let orphan = try #require(children(there.pid).first)
        kill(orphan, SIGKILL)
        _ = try waitFor("the application's end", seconds: 10) { try record(orphaned, node: 3)?.state == .stopped }
        #expect(try record(orphaned, node: 3)?.exit_status == 7)

        // SSI_INIT_RESUME in a user's environment does not keep a normal launch from
        // starting its command (the init has no such child).
        let withVariable = try Proc.run(["env", "SSI_INIT_RESUME=2", binDir + "/ssi", "run", "-b", "--log", "--node", "1", "--", "/bin/sleep", "300"], check: false)
        let plain = try #require(appID(withVariable.1), "\(withVariable.1)")
        let plainRec = try #require(try record(plain, node: 1))
        _ = try waitFor("its command", seconds: 5) { children(plainRec.pid).count == 1 }
        #expect(try record(plain, node: 2)?.state == .running)
        kill(plainRec.pid, SIGTERM)
    }
}
