import Foundation
import SSIControl
import SSILocalCluster
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .enabled(if: canRunCluster, Comment(rawValue: whyNot)),
       .enabled(if: Postgres.bin != nil && Postgres.user != nil, Comment(rawValue: Postgres.whyNot)))
struct RealProgramClusterTests {
    /// PostgreSQL (a postmaster and six workers sharing anonymous, SysV and POSIX shared
    /// memory, talking to clients on a unix socket in a directory every node sees) moved
    /// 1 -> 2 -> 3 -> 1 while it runs: after each move it has every row and takes a write,
    /// and every node's `ssi ps` says where it is.
    @Test(.timeLimit(.minutes(3))) func postgresMovesAroundTheCluster() throws {
        let bin = try #require(Postgres.bin), user = try #require(Postgres.user)
        let home = try TestEnv.makeTempDir("pgcluster")
        defer { try? FileManager.default.removeItem(atPath: home) }
        chmod(home, 0o755)
        chown(home, user.uid, user.gid)
        let asPostgres = Postgres.asUser
        let initdb = try Proc.run(asPostgres + ["\(bin)/initdb", "-D", "\(home)/data", "--no-sync"], check: false)
        try #require(initdb.0 == 0, "initdb: \(initdb.1)")
        try up()
        defer { try? down() }
        let port = "\(Int.random(in: 20000...29999))"
        let app = try #require(appID(try ssiOK(["run", "--node", "1", "-b", "--log", "--"] + asPostgres
            + ["\(bin)/postgres", "-D", "\(home)/data", "-k", home, "-p", port, "-c", "listen_addresses=", "-c", "fsync=off"])))
        defer { _ = try? ssi("kill", "\(app)", "--signal", "INT"); usleep(1_500_000) }
        func sql(_ text: String) throws -> String {
            var last = ""
            for _ in 0..<50 {
                let r = try Proc.run(asPostgres + ["psql", "-h", home, "-p", port, "-d", "postgres", "-Atc", text], check: false)
                if r.0 == 0 { return r.1.split(separator: "\n").last.map(String.init) ?? "" }
                last = r.1
                usleep(200_000)
            }
            return "psql failed: \(last)"
        }
        #expect(try sql("create table t (x int); insert into t select generate_series(1, 1000); select sum(x) from t") == "500500")
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        var sum = 500500
        for (k, target) in [2, 3, 1].enumerated() {
            let out = try ssiOK("migrate", "\(app)", "\(target)")
            #expect(out.contains("to node \(target)"), "\(out)")
            sum += target
            #expect(try sql("insert into t values (\(target)); select sum(x), count(*) from t") == "\(sum)|\(1001 + k)", "after the move to node \(target)")
            for n in 1...3 { #expect(try psJSON(node: n).filter { $0.app == app }.map(\.node) == [UInt8(target)], "node \(n)'s ssi ps") }
        }
    }
}

/// Debian's own daemons, as users run them, moved around the cluster together.
enum Services {
    static let nginx = toolPath("nginx"), memcached = toolPath("memcached"), tmux = toolPath("tmux")
    static let whyNot = "needs nginx, memcached and tmux (scripts/setup.sh installs them)"
}

@Suite(.serialized, .enabled(if: canRunCluster, Comment(rawValue: whyNot)),
       .enabled(if: Services.nginx != nil && Services.memcached != nil && Services.tmux != nil, Comment(rawValue: Services.whyNot)))
struct ServicesClusterTests {
    /// nginx (a master and two workers sharing its listening socket) and memcached (its
    /// worker threads, its listener, an item stored), both with addresses of their own, and a
    /// tmux server (its unix socket in a directory every node sees, a window running a shell
    /// loop on a pseudo-terminal), moved 1 -> 2 -> 3 -> 1 together: after each move nginx
    /// serves its page with its master and workers all there, memcached still has the item
    /// and takes another, a tmux client reaches its server and the window's loop goes on.
    @Test(.timeLimit(.minutes(3))) func nginxMemcachedAndTmuxMoveAroundTheCluster() throws {
        let dir = try TestEnv.makeTempDir("services")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: "\(dir)/www", withIntermediateDirectories: true)
        let page = "served by nginx \(getpid())"
        try "\(page)\n".write(toFile: "\(dir)/www/index.html", atomically: true, encoding: .utf8)
        try """
        daemon off; worker_processes 2; pid \(dir)/nginx.pid; error_log \(dir)/nginx.err;
        events { worker_connections 64; }
        http { access_log off; server { listen 8080; root \(dir)/www; } }
        """.write(toFile: "\(dir)/nginx.conf", atomically: true, encoding: .utf8)
        try up()
        defer { try? down() }
        let web = try #require(appID(try ssiOK("run", "--node", "1", "-b", "--log", "--net", "app", "--", Services.nginx!, "-c", "\(dir)/nginx.conf")))
        let cache = try #require(appID(try ssiOK("run", "--node", "1", "-b", "--log", "--net", "app", "--", Services.memcached!, "-u", "root", "-p", "11211", "-U", "0", "-t", "4")))
        let sock = "\(dir)/tmux.sock", count = "\(dir)/loop.count"
        let term = try #require(appID(try ssiOK("run", "--node", "1", "-b", "--log", "--", Services.tmux!, "-D", "-S", sock)))
        let apps = [web, cache, term]
        defer { for a in apps { _ = try? ssi("kill", "\(a)", "--signal", "KILL") } }
        _ = try waitFor("the tmux server's socket", seconds: 10) { access(sock, F_OK) == 0 }
        let tmuxNew = try Proc.run([Services.tmux!, "-S", sock, "new-session", "-d", "-s", "w",
                                    "n=0; while true; do n=$((n+1)); echo $n > \(count); sleep 0.05; done"], check: false)
        try #require(tmuxNew.0 == 0, "tmux new-session: \(tmuxNew.1)")
        let address = { (app: Int32) in try #require(try record(app, node: 1)?.address) }
        let webAt = try address(web), cacheAt = try address(cache)
        // From node 2's namespace, where neither server ever runs after the first move.
        func fromNode(_ k: Int, _ argv: [String]) -> String {
            (try? Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--"] + argv, check: false).1) ?? ""
        }
        func get(_ k: Int) -> String {
            for _ in 0..<20 {
                let out = fromNode(k, ["curl", "-s", "-m", "3", "http://\(webAt):8080/"])
                if out.contains(page) { return out }
                usleep(100_000)
            }
            return "no page"
        }
        let memcache = """
        import socket,sys
        s=socket.create_connection((sys.argv[1],11211),timeout=3)
        def ask(c, end):
            s.sendall(c.encode()); d=b""
            while not d.endswith(end): d+=s.recv(4096)
            return d.decode()
        print(ask("set k%s 0 0 2\\r\\nv%s\\r\\n"%(sys.argv[2],sys.argv[2]), b"\\r\\n").strip(), ask("get k0\\r\\n", b"END\\r\\n").split("\\r\\n")[1], ask("get k%s\\r\\n"%sys.argv[2], b"END\\r\\n").split("\\r\\n")[1])
        """
        try memcache.write(toFile: "\(dir)/mc.py", atomically: true, encoding: .utf8)
        func loops() -> Int { Int(((try? String(contentsOfFile: count, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 }
        #expect(get(2).contains(page))
        #expect(fromNode(2, ["python3", "\(dir)/mc.py", cacheAt, "0"]).contains("STORED v0 v0"))
        _ = try waitFor("the tmux window's loop", seconds: 10) { loops() > 0 }
        // Under its root (ssi-init, process 1 of its namespace): the master and two workers.
        let workers = processTree(try #require(try record(web, node: 1)?.pid)).count - 1
        #expect(workers == 3, "nginx's master and two workers under its root, found \(workers)")
        for a in apps { _ = try ssiOK("caps", "\(a)", "+CAN_MIGRATE") }
        for target in [2, 3, 1] {
            for a in apps { #expect(try ssiOK("migrate", "\(a)", "\(target)").contains("to node \(target)")) }
            for _ in 0..<4 { #expect(get(target == 2 ? 3 : 2).contains(page), "nginx after the move to node \(target)") }
            #expect(fromNode(2, ["python3", "\(dir)/mc.py", cacheAt, "\(target)"]).contains("STORED v0 v\(target)"), "memcached after the move to node \(target)")
            let before = loops()
            let sessions = try Proc.run([Services.tmux!, "-S", sock, "list-sessions"], check: false)
            #expect(sessions.0 == 0 && sessions.1.hasPrefix("w: 1 windows"), "tmux after the move to node \(target): \(sessions.1)")
            _ = try waitFor("the tmux window's loop after the move to node \(target)", seconds: 5) { loops() > before }
            for a in apps {
                for n in 1...3 { #expect(try psJSON(node: n).filter { $0.app == a }.map(\.node) == [UInt8(target)], "node \(n)'s ssi ps, application \(a)") }
            }
            #expect(processTree(try #require(try record(web, node: target)?.pid)).count - 1 == workers, "nginx keeps its master and workers")
        }
    }
}
