import Foundation
import SSILocalCluster
import SSIObserve
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

func which(_ name: String) -> String? {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

let canRunCluster = TestEnv.isRoot && which("etcd") != nil && which("ip") != nil && which("curl") != nil
let whyNoCluster = !TestEnv.isRoot ? "needs root: network namespaces" : which("etcd") == nil ? "needs etcd: run scripts/setup-cluster.sh" : "needs ip and curl"
let chromium = which("chromium")

/// A 3-node local cluster in network namespaces, and requests to its nodes' dashboards from
/// inside each node's namespace (where 127.0.0.1:718K is the dashboard).
struct ObservedCluster {
    let lc = LocalCluster()
    let dir: String
    let env: [String: String]

    init() throws {
        TestEnv.becomeSubreaper()
        dir = try TestEnv.makeTempDir("observe")
        env = ["SSI_CHKPT_DIR": "\(dir)/chkpt"]
        let r = try run([TestEnv.ssi, "cluster", "up", "--nodes", "3"])
        guard r.status == 0 else { throw TestFailure("ssi cluster up: \(r.output)") }
    }

    func down() {
        _ = try? run([TestEnv.ssi, "cluster", "down"])
        _ = Proc.reapAll()
    }

    func ssi(_ args: String...) throws -> CommandResult { try run([TestEnv.ssi] + args, env: env) }

    /// `curl` inside node k's namespace; returns (HTTP status, body, seconds taken).
    func get(_ k: Int, _ path: String, _ extra: [String] = []) throws -> (status: Int, body: String, seconds: Double) {
        let marker = "\n@@status="
        let argv = lc.inNode(k, netns: true) + ["curl", "-s", "--max-time", "10", "-w", marker + "%{http_code} %{time_total}"] + extra
            + ["http://127.0.0.1:\(lc.dashboardPort(k))\(path)"]
        let r = try run(argv)
        guard let m = r.stdout.range(of: marker, options: .backwards) else { throw TestFailure("curl \(path) on node \(k): \(r.output)") }
        let tail = r.stdout[m.upperBound...].split(separator: " ")
        return (Int(tail[0]) ?? 0, String(r.stdout[..<m.lowerBound]), Double(tail.count > 1 ? tail[1] : "0") ?? 0)
    }

    func json<T: Decodable>(_ k: Int, _ path: String, as: T.Type) throws -> T {
        let r = try get(k, path)
        guard r.status == 200 else { throw TestFailure("GET \(path) on node \(k): \(r.status) \(r.body)") }
        return try JSONDecoder().decode(T.self, from: Data(r.body.utf8))
    }

    func nodePid(_ k: Int) -> pid_t {
        pid_t((try? String(contentsOfFile: "\(lc.dir)/pids/node\(k)", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    }
}

/// The id in ssi run's "Running application N" line.
func appID(_ out: String) -> Int32? {
    out.split(separator: "\n").first { $0.hasPrefix("Running application ") }.flatMap { Int32($0.dropFirst("Running application ".count)) }
}

func waitUntil(_ seconds: Double, _ cond: () throws -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if (try? cond()) == true { return true }
        usleep(100_000)
    }
    return false
}

@Suite(.serialized, .enabled(if: canRunCluster, Comment(rawValue: whyNoCluster)))
struct ObserveClusterTests {
    /// Every endpoint on every node; the merged views agree with `ssi nodes status`; an
    /// application, its checkpoint and the metrics seen from other nodes than the one told;
    /// a killed node is shown down within seconds and the page still answers.
    @Test(.timeLimit(.minutes(3))) func everyNodeShowsTheWholeCluster() throws {
        let c = try ObservedCluster()
        defer { c.down() }
        let started = try c.ssi("run", "-b", "--", try TestEnv.fixture("bigmem"), "4")
        let app = try #require(appID(started.stdout), "\(started.output)")
        defer { kill(app, SIGKILL) }
        let ck = try c.ssi("checkpoint", "\(app)")
        #expect(ck.status == 0, "\(ck.output)")
        let status = try c.ssi("nodes", "status").stdout.split(separator: "\n").map(String.init)
        for k in 1...3 {
            for path in ["/", "/metrics", "/api/cluster", "/api/nodes", "/api/node", "/api/applications", "/api/events"] {
                #expect(try c.get(k, path).status == 200, "GET \(path) on node \(k)")
            }
            let nodes = try c.json(k, "/api/nodes", as: [NodeRow].self)
            #expect(nodes.map { "\($0.id):\($0.state)" } == status, "node \(k)'s /api/nodes against ssi nodes status")
            #expect(nodes.allSatisfy { $0.reachable && $0.dashboard == "127.0.0.1:\(c.lc.dashboardPort(Int($0.id)))" })
            let apps = try c.json(k, "/api/applications", as: [ApplicationRow].self)
            #expect(apps.contains { $0.app == app && $0.node == 1 && $0.state == "running" && $0.checkpoints == 1 && $0.lastVersion == 1 })
            let events = try c.json(k, "/api/events", as: [ObserveEvent].self)
            #expect(events.contains { $0.kind == .checkpointDone && $0.app == app && $0.version == 1 })
            #expect(events.filter { $0.kind == .nodeJoined }.count == 3, "each join said once")
            #expect(events == events.sorted { $0.time < $1.time || ($0.time == $1.time && $0.node <= $1.node) })
        }
        let metrics = try PromText(try c.get(1, "/metrics").body)
        #expect(metrics.value("ssi_checkpoints_total", ["node": "1", "result": "ok"]) == 1)
        #expect(metrics.value("ssi_applications", ["state": "running"]) == 1)
        #expect((metrics.value("ssi_rpc_requests_total") ?? 0) > 0)
        #expect(metrics.value("ssi_nodes", ["state": "online"]) == 3)
        let cli = try c.ssi("events", "--json", "-n", "1000")
        #expect(try JSONDecoder().decode([ObserveEvent].self, from: Data(cli.stdout.utf8)) == (try c.json(2, "/api/events?limit=1000", as: [ObserveEvent].self)))
        let st = try JSONSerialization.jsonObject(with: Data(try c.ssi("cluster", "status", "--json").stdout.utf8)) as? [String: Any]
        #expect(st?["dashboard"] as? String == "http://127.0.0.1:7181/")

        // No change without the token; with it, the note is in every node's merged history.
        let note = ["-X", "POST", "-d", #"{"message":"maintenance window"}"#]
        #expect(try c.get(2, "/api/events", note).status == 401)
        #expect(try c.get(2, "/api/events", note + ["-H", "Authorization: Bearer wrong"]).status == 401)
        #expect(try !c.json(1, "/api/events", as: [ObserveEvent].self).contains { $0.kind == .note })
        let token = try c.ssi("dashboard", "token").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try c.get(2, "/api/events", note + ["-H", "Authorization: Bearer \(token)"]).status == 201)
        #expect(try c.json(3, "/api/events", as: [ObserveEvent].self).contains { $0.kind == .note && $0.node == 2 })

        // kill -9 node 3: shown down within a few seconds, and the page never waits long.
        kill(c.nodePid(3), SIGKILL)
        let t0 = Date()
        let seen = waitUntil(8) {
            let n = try c.json(1, "/api/nodes", as: [NodeRow].self)
            return n.first { $0.id == 3 }.map { !$0.reachable || $0.state != "online" } ?? false
        }
        #expect(seen, "node 3 still shown up 8 s after kill -9")
        print("killed node 3 shown down after \(String(format: "%.2f", Date().timeIntervalSince(t0))) s")
        for _ in 0..<3 {
            let page = try c.get(1, "/api/cluster")
            #expect(page.status == 200 && page.seconds < 3, "the page took \(page.seconds) s")
            #expect(try c.get(2, "/").status == 200)
        }
        #expect(waitUntil(8) { try c.json(2, "/api/events", as: [ObserveEvent].self).contains { $0.kind == .nodeFailed } })
    }

    /// A daemon killed while `ssi` waits on it: ssi says which daemon stopped answering and
    /// that the operation may have been done, and does not die of SIGPIPE (exit 141).
    @Test(.timeLimit(.minutes(2))) func daemonKilledMidRequest() throws {
        let c = try ObservedCluster()
        defer { c.down() }
        var o = SpawnOptions()
        o.standardOutput = .file("\(c.dir)/incr.out", append: false)
        o.standardError = .file("\(c.dir)/incr.err", append: false)
        let pid = try Spawn.start([TestEnv.ssi, "kddm", "incr", "counters", "5", "--count", "100000", "--node", "2"], o)
        usleep(700_000)
        kill(c.nodePid(2), SIGKILL)
        let st = try Spawn.wait(pid)
        let err = (try? String(contentsOfFile: "\(c.dir)/incr.err", encoding: .utf8)) ?? ""
        #expect(st.exitCode == 1, "ssi exited \(st.exitCode): \(err)")
        #expect(err.contains("node2.sock") && (err.contains("may have been done") || err.contains("may or may not have been done")), "\(err)")
        // The survivors' pages do not wait on the dead one either.
        let page = try c.get(1, "/api/cluster")
        #expect(page.status == 200 && page.seconds < 3)
        // A dashboard request cut by the daemon's death: curl sees an error, node 1 goes on.
        kill(c.nodePid(3), SIGSTOP)
        let slow = try c.get(1, "/api/nodes")
        #expect(slow.status == 200 && slow.seconds < 3, "a stopped node cost \(slow.seconds) s")
        let rows = try JSONDecoder().decode([NodeRow].self, from: Data(slow.body.utf8))
        #expect(rows.first { $0.id == 3 }?.reachable == false)
        kill(c.nodePid(3), SIGCONT)
    }

    /// Debian's chromium, headless, loads node 1's page and renders the three nodes, the
    /// application and the checkpoint event.
    @Test(.timeLimit(.minutes(3)), .enabled(if: chromium != nil, "needs chromium: scripts/setup.sh installs it (apt-get install chromium)"))
    func browserRendersTheDashboard() throws {
        let c = try ObservedCluster()
        defer { c.down() }
        let started = try c.ssi("run", "-b", "--", try TestEnv.fixture("bigmem"), "4")
        let app = try #require(appID(started.stdout))
        defer { kill(app, SIGKILL) }
        #expect(try c.ssi("checkpoint", "\(app)").status == 0)
        let shot = ProcessInfo.processInfo.environment["SSI_DASHBOARD_SCREENSHOT"]
        let argv = c.lc.inNode(1, netns: true) + [chromium!, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                   "--user-data-dir=\(c.dir)/chromium", "--virtual-time-budget=8000"]
        let r = try run(argv + ["--dump-dom", "http://127.0.0.1:\(c.lc.dashboardPort(1))/"])
        let dom = r.stdout
        for k in 1...3 { #expect(dom.contains(#"data-node="\#(k)""#), "node \(k) not rendered: \(r.stderr.suffix(500))") }
        #expect(dom.contains(#"data-app="\#(app)""#), "application not rendered")
        #expect(dom.contains(#"class="event checkpoint-done""#), "checkpoint event not rendered")
        #expect(dom.contains("3 of 3 nodes up"))
        if let shot {
            _ = try run(argv + ["--window-size=1280,820", "--screenshot=\(shot)", "http://127.0.0.1:\(c.lc.dashboardPort(1))/"])
        }
    }
}
