import Foundation
import SSILocalCluster
import SSIMembership
import SSINetwork
import SSIProcessTable
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Application addresses and the connections between applications (issue 12, docs/streams.md)
// on the real local cluster: each application started with --net app has a network
// namespace and an address of its own, which go with it when it moves.

private let canStream = canRunCluster && toolPath("nft") != nil && toolPath("nsenter") != nil
private let whyNotStream = !canRunCluster ? whyNot : "needs nft and nsenter: run scripts/setup.sh"

/// Packets node k has forwarded so far (Ip: ForwDatagrams of /proc/net/snmp in its namespace).
private func forwarded(node k: Int) throws -> Int {
    let r = try Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--", "cat", "/proc/net/snmp"], check: false)
    let ip = r.1.split(separator: "\n").filter { $0.hasPrefix("Ip:") }
    guard ip.count == 2 else { return -1 }
    let names = ip[0].split(separator: " "), values = ip[1].split(separator: " ")
    guard let i = names.firstIndex(of: "ForwDatagrams"), i < values.count else { return -1 }
    return Int(values[i]) ?? -1
}

private func address(of app: Int32, node: Int = 1) throws -> String {
    try #require(try record(app, node: node)?.address, "application \(app) has an address")
}

/// Moves `app` to node `to` with CAN_MIGRATE given for that move only (the scheduler would
/// balance busy applications too).
private func move(_ app: Int32, to: Int) throws {
    // Right after a node was cut off and came back, the record's holder may drop a first
    // call ("failed or closed the connection", seen once in CI): the capability is asked
    // again, as a user would, before the move that the test is about.
    var caps = try ssi("caps", "\(app)", "+CAN_MIGRATE")
    for _ in 0..<3 where caps.code != 0 && caps.out.contains("closed the connection") {
        usleep(500_000)
        caps = try ssi("caps", "\(app)", "+CAN_MIGRATE")
    }
    #expect(caps.code == 0, "ssi caps \(app) +CAN_MIGRATE: \(caps.out)")
    var r = try ssi("migrate", "\(app)", "\(to)")
    // The scheduler may start a migration of its own in that window (the one-at-a-time
    // guard then refuses ours): wait for it to end, and ask again.
    for _ in 0..<3 where r.code != 0 && r.out.contains("is migrating") {
        _ = try waitFor("application \(app) settles", seconds: 10) { try record(app, node: 1)?.state == .running }
        r = try ssi("migrate", "\(app)", "\(to)")
    }
    _ = try ssiOK("caps", "\(app)", "-CAN_MIGRATE")
    #expect((r.code == 0 && r.out.contains("to node \(to)")) || r.out.contains("already runs on node \(to)"), "\(r.out)")
}


/// What a stalled stream test needs to be understood after the fact (a CI run cannot be
/// looked at): each application's record, its sockets as TCP sees them (ss -tinm in its
/// namespace), where its threads wait, its log's end; every node's routes to applications.
private func diagnose(_ apps: [Int32]) -> String {
    var out = ""
    for app in apps {
        guard let r = try? record(app, node: 1) else { out += "application \(app): no record\n"; continue }
        out += "application \(app): node \(r.node) \(r.state) pid \(r.pid) address \(r.address ?? "-") migrations \(r.migrations)\n"
        if let ss = try? Proc.run(["nsenter", "-t", "\(r.pid)", "-n", "--", "ss", "-tinmo"], check: false) { out += ss.1 }
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(r.pid)/task")) ?? []
        out += "ssi-init threads: \(tasks.count)\n"
        if let kids = try? String(contentsOfFile: "/proc/\(r.pid)/task/\(r.pid)/children", encoding: .utf8) {
            for k in kids.split(separator: " ") {
                for t in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(k)/task")) ?? [] {
                    let w = (try? String(contentsOfFile: "/proc/\(k)/task/\(t)/wchan", encoding: .utf8)) ?? "?"
                    let st = (try? String(contentsOfFile: "/proc/\(k)/task/\(t)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first ?? "?"
                    out += "  task \(k)/\(t): \(st) \(w)\n"
                }
            }
        }
        if let log = try? ssi("logs", "\(app)") { out += "log end: \(log.out.suffix(400).replacingOccurrences(of: "\r", with: "\n"))\n" }
    }
    for k in 1...3 {
        let r = try? Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--", "ip", "route", "show", "proto", "77"], check: false)
        let l = try? Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--", "ip", "-br", "link"], check: false)
        out += "node \(k) routes:\n\(r?.1 ?? "?")links:\n\(l?.1 ?? "?")"
    }
    if let s = try? ssi("streams") { out += s.out }
    return out
}

@Suite(.serialized, .enabled(if: canStream, Comment(rawValue: whyNotStream)))
struct StreamsClusterTests {
    /// A client and a server application on two nodes exchange numbered lines over one TCP
    /// connection while the server moves 1 -> 3, the client 2 -> 1, the server 3 -> 2: every
    /// line answered in order, one accept in all; after each move the old node forwards
    /// none of their packets and is then cut off for a second without effect; `ssi ps` on
    /// every node says where each is, with its address.
    @Test(.timeLimit(.minutes(3))) func connectionFollowsBothEndsWithNoForwarding() throws {
        try up()
        defer { try? down() }
        let dir = "/tmp/ssi-streams-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (echo, client) = (try TestEnv.fixture("lineecho"), try TestEnv.fixture("lineclient"))
        let server = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", echo, "7000", "\(dir)/accepts")))
        let a = try address(of: server)
        #expect(a.hasPrefix("10.78."), "the server's address is in the local cluster's application subnet: \(a)")
        let c = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", client, a, "7000", "until:\(dir)/stop")))
        #expect(try address(of: c) != a, "every application has an address of its own")
        usleep(800_000)
        for (app, to, old) in [(server, 3, 1), (c, 1, 2), (server, 2, 3)] {
            try move(app, to: to)
            for k in 1...3 {
                let r = try record(app, node: k)
                #expect(r?.node == UInt8(to) && r?.address == (app == server ? a : r?.address), "node \(k) sees application \(app) on node \(to) with its address: \(String(describing: r))")
            }
            // `ssi streams` on every node: the one connection, both ends where they are.
            let placed = [server: try record(server, node: 1)?.node, c: try record(c, node: 1)?.node]
            var seen = ""
            let waited = try waitFor("ssi streams right on every node after moving \(app) to node \(to)", seconds: 10) {
                try (1...3).allSatisfy { k in
                    let out = try ssiOK("streams", "--json", "--node", "\(k)")
                    seen = "node \(k): \(out)"
                    let rows = try JSONDecoder().decode([StreamRow].self, from: Data(out.utf8))
                    guard rows.count == 1, let r = rows.first, let x = r.a.app, let y = r.b.app else { return false }
                    return Set([x, y]) == Set([server, c]) && r.a.node == placed[x] ?? nil && r.b.node == placed[y] ?? nil
                        && r.bytes_a_to_b > 0 && r.bytes_b_to_a > 0
                }
            }
            if waited >= 10 {
                print("streams: last seen: \(seen); expected \(placed)")
                print("streams: ssi ps:\n\((try? ssi("ps").out) ?? "?")")
                for k in 1...3 {
                    print("streams: node \(k) says: \((try? ssi("streams", "--json", "--node", "\(k)").out) ?? "?")")
                    let log = String(decoding: FileManager.default.contents(atPath: lc.log(node: k)) ?? Data(), as: UTF8.self)
                    let tail = log.split(separator: "\n").filter { $0.contains("network") || $0.contains("kddm") || $0.contains("warning") || $0.contains("error") }.suffix(15)
                    print("streams: node \(k) log:\n" + tail.joined(separator: "\n"))
                }
            }
            // Nothing of theirs goes through the old node: it forwards no packet...
            usleep(300_000)
            let before = try forwarded(node: old)
            usleep(1_000_000)
            let after = try forwarded(node: old)
            #expect(before >= 0 && after - before < 3, "node \(old) forwarded \(after - before) packets in a second after application \(app) left it")
            // ...and cut off, the stream goes on.
            _ = try ssiOK("cluster", "link", "\(old)", "down")
            usleep(1_000_000)
            _ = try ssiOK("cluster", "link", "\(old)", "up")
            // Whether the cut-off node's lease (2 s) outlived the second is only known once
            // that time has passed: before it, every view may still say online and then see
            // the node fail and come back (seen in CI: the next move's call was dropped by a
            // node that learned of the failure during it). Then every node must see it online.
            usleep(UInt32(Membership.leaseTTL) * 1_000_000)
            _ = try waitFor("node \(old) online again, in every node's view", seconds: 20) {
                try (1...3).allSatisfy { try nodeStates(via: $0)[old] == "online" } && ssi("ps", "--node", "\(old)").code == 0
            }
        }
        // The client sends until told to stop: how long the three moves take depends on how
        // soon each node cut off comes back (seen: 3 to 12 s), and a client that ended on a
        // clock of its own before the last check left no connection to see.
        FileManager.default.createFile(atPath: "\(dir)/stop", contents: nil)
        if try waitFor("the client ends", seconds: 20, { try record(c, node: 1)?.state == .stopped }) >= 20 {
            print("streams: the client did not end:\n\(diagnose([server, c]))")
        }
        let verdict = try ssiOK("logs", "\(c)")
        #expect(verdict.hasPrefix("PASS"), "the client's one connection went on through the three moves: \(verdict)")
        #expect((try? String(contentsOfFile: "\(dir)/accepts", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "1",
                "the server accepted one connection in all")
        print("streams: lineclient across three moves: \(verdict)")
    }

    /// UDP between two applications across a move of each: the bound and the connected
    /// socket keep their addresses and ports, datagrams flow both ways after each move.
    @Test(.timeLimit(.minutes(2))) func datagramsFollowTheirApplications() throws {
        try up()
        defer { try? down() }
        let ping = try TestEnv.fixture("udpping")
        let server = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", ping, "server", "7100")))
        let c = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", ping, "client", try address(of: server), "7100", "5")))
        usleep(1_000_000)
        try move(server, to: 3)
        usleep(800_000)
        try move(c, to: 1)
        if try waitFor("the client ends", seconds: 20, { try record(c, node: 2)?.state == .stopped }) >= 20 {
            print("streams: the client did not end:\n\(diagnose([server, c]))")
        }
        let verdict = try ssiOK("logs", "\(c)")
        #expect(verdict.hasPrefix("PASS"), "datagrams answered after both moves: \(verdict)")
        print("streams: udpping across two moves: \(verdict)")
    }

    /// A bulk sender (streamer source) moving while it streams to a receiver on another node,
    /// megabytes in flight: its connection goes on to the end with every byte checked. The
    /// peer's acknowledgements held while the sender drained are given to its frozen copy
    /// before its sockets are read (AppNetworkSide.deliverHeld); without that the rebuilt
    /// copy dropped them as acknowledging data it had not sent and stalled for good. The
    /// rebuilt socket keeps its segment size (no 524-byte segments after a move).
    @Test(.timeLimit(.minutes(2))) func bulkSenderMovesWhileItStreams() throws {
        try up()
        defer { try? down() }
        let streamer = try TestEnv.fixture("streamer")
        let sink = try #require(appID(try ssiOK("run", "--node", "3", "--net", "app", "-b", "--log", "--", streamer, "sink", "7600")))
        usleep(500_000)
        let sender = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", streamer, "source", try address(of: sink), "7600", "5")))
        _ = try ssiOK("caps", "\(sender)", "+CAN_MIGRATE")
        usleep(1_500_000)
        try move(sender, to: 1)
        let rec = try #require(try record(sender, node: 1))
        let ss = try Proc.run(["nsenter", "-t", "\(rec.pid)", "-n", "--", "ss", "-tni"], check: false).1
        let mss = ss.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first { $0.hasPrefix("mss:") }.flatMap { Int($0.dropFirst(4)) } ?? 0
        #expect(mss > 1000, "the moved sender's segment size: \(ss)")
        if try waitFor("the sender ends", seconds: 25, { try record(sender, node: 2)?.state == .stopped }) >= 25 {
            print("streams: the sender did not end:\n\(diagnose([sink, sender]))")
        }
        let verdict = try ssiOK("logs", "\(sender)")
        #expect(verdict.hasPrefix("PASS"), "the moved sender's verdict: \(verdict)")
        print("streams: bulk sender moved 2 -> 1 while streaming: \(verdict), mss \(mss)")
    }

    /// A migration that fails after the freeze (a listening socket with a connection waiting
    /// to be accepted is refused by the engine) leaves the application on its node with its
    /// address: its link up again, its route back, new connections reach it.
    @Test(.timeLimit(.minutes(1))) func failedMoveLeavesTheAddressWhereItWas() throws {
        try up()
        defer { try? down() }
        let listener = "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',7200))\ns.listen(8)\ntime.sleep(600)\n"
        let server = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", "python3", "-c", listener)))
        let a = try address(of: server)
        func connects(from k: Int) -> Bool {
            let probe = "import socket\nsocket.create_connection(('\(a)',7200),timeout=3)\nprint('connected')\n"
            return (try? Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--", "python3", "-c", probe], check: false))?.1.contains("connected") == true
        }
        _ = try waitFor("a connection waits in the server's queue", seconds: 10) { connects(from: 2) }
        _ = try ssiOK("caps", "\(server)", "+CAN_MIGRATE")
        let r = try ssi("migrate", "\(server)", "3")
        #expect(r.code != 0 && r.out.contains("waiting to be accepted") && r.out.contains("node 1"), "\(r.out)")
        _ = try ssiOK("caps", "\(server)", "-CAN_MIGRATE")
        let rec = try #require(try record(server, node: 2))
        #expect(rec.node == 1 && rec.state == .running && rec.address == a, "\(rec)")
        let link = try Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(1))", "--", "ip", "-o", "link", "show", AppSubnet.hostInterface(server)], check: false)
        #expect(link.1.contains("state UP") || link.1.contains(",UP"), "its link is up again: \(link.1)")
        #expect(connects(from: 3), "a new connection from node 3 reaches it on node 1")
    }

    /// A busy listener moves: a server that accepts one connection every 3 ms while four
    /// clients connect, ask, read the answer and the close, and connect again (so that some
    /// connections are nearly always waiting to be accepted) migrates 1 -> 3 -> 1. Held
    /// before its freeze, it accepts what waits (Connections.drain): no move is refused for a
    /// connection waiting to be accepted, and no client's request fails.
    @Test(.timeLimit(.minutes(2))) func busyListenerMoves() throws {
        try up()
        defer { try? down() }
        let server = """
        import socket,time
        s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',7300)); s.listen(64)
        while True:
            c,_=s.accept(); d=c.recv(64); c.sendall(d); c.close(); time.sleep(0.003)
        """
        let app = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", "python3", "-c", server)))
        let a = try address(of: app)
        let clients = """
        import socket,threading,time,sys
        ok=[0]; bad=[]; end=time.time()+float(sys.argv[1])
        def run(k):
            n=0
            while time.time()<end:
                n+=1; msg=('%d-%d\\n'%(k,n)).encode()
                try:
                    c=socket.create_connection(('\(a)',7300),timeout=5); c.sendall(msg)
                    got=b''
                    while True:
                        d=c.recv(64)
                        if not d: break
                        got+=d
                    c.close()
                    if got==msg: ok[0]+=1
                    else: bad.append('%r'%got)
                except Exception as e: bad.append(str(e))
        ts=[threading.Thread(target=run,args=(k,)) for k in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(('PASS' if not bad and ok[0]>100 else 'FAIL')+' answered=%d failed=%d %s'%(ok[0],len(bad),bad[:3]))
        """
        let c = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", "python3", "-c", clients, "9")))
        usleep(1_500_000)
        for to in [3, 1] {
            _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
            let r = try ssi("migrate", "\(app)", "\(to)")
            _ = try ssiOK("caps", "\(app)", "-CAN_MIGRATE")
            #expect(r.code == 0 && r.out.contains("to node \(to)"), "the busy listener moved to node \(to): \(r.out)")
            usleep(1_000_000)
        }
        _ = try waitFor("the clients end", seconds: 30) { try record(c, node: 1)?.state == .stopped }
        let verdict = try ssiOK("logs", "\(c)")
        print("streams: busy listener across two moves: \(verdict.trimmingCharacters(in: .whitespacesAndNewlines))")
        // Each source held its new connections apart first (PacketHold.holdNew), and no node
        // keeps the nft table that did it: left behind, it would send the address's SYNs to
        // a hold nobody empties.
        for source in [1, 3] {
            let log = (try? String(contentsOfFile: lc.log(node: source), encoding: .utf8)) ?? ""
            #expect(log.contains("application \(app): address \(a) held for the move") && log.contains("its new connections held first"),
                    "node \(source) held application \(app)'s new connections apart before the rest")
        }
        for k in 1...3 {
            let tables = try Proc.run(["ip", "netns", "exec", lc.nodeNamespace(k), "nft", "list", "tables"], check: false).1
            #expect(!tables.contains("ssi-holdsyn"), "node \(k) still has the hold of new connections: \(tables)")
        }
        // A connection whose handshake the source answered just before its address was held
        // gets its held ACK inside the source (AppNetworkSide.completeHandshakes), but one
        // whose ACK comes after the drain is reset by the target (seen once on CI in about
        // 2,600 connections, before that fix): a known issue (docs/streams.md); anything
        // else fails.
        let failed = verdict.split(separator: " ").first { $0.hasPrefix("failed=") }.flatMap { Int($0.dropFirst(7)) } ?? -1
        if verdict.hasPrefix("FAIL") && failed == 1 && verdict.contains("Connection reset by peer") && verdict.contains("answered=") {
            withKnownIssue("a handshake under way when the address was held is reset by the target") { Issue.record("\(verdict)") }
        } else {
            #expect(verdict.hasPrefix("PASS"), "every client request was answered across the moves: \(verdict)")
        }
    }

    /// `checkpoint --kill` of an application with an address, `restart --node 3`: it comes
    /// back with the same address, its bound UDP socket on it, and peers reach it there.
    @Test(.timeLimit(.minutes(2))) func restartElsewhereKeepsTheAddress() throws {
        try up()
        defer { try? down() }
        let ping = try TestEnv.fixture("udpping")
        let server = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", ping, "server", "7300")))
        let a = try address(of: server)
        usleep(300_000)
        let c = try ssiOK("checkpoint", "--kill=KILL", "\(server)")
        #expect(c.contains("Version: 1"), "\(c)")
        _ = try waitFor("stopped", seconds: 5) { try record(server, node: 2)?.state == .stopped }
        let r = try ssiOK("restart", "\(server)", "--node", "3")
        #expect(r.contains("on node 3"), "\(r)")
        let rec = try #require(try record(server, node: 2))
        #expect(rec.node == 3 && rec.state == .running && rec.address == a, "\(rec)")
        let client = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", ping, "client", a, "7300", "1")))
        _ = try waitFor("the client ends", seconds: 15) { try record(client, node: 1)?.state == .stopped }
        let verdict = try ssiOK("logs", "\(client)")
        #expect(verdict.hasPrefix("PASS"), "the restarted server answers on its address: \(verdict)")
    }

    /// A real program: redis-server and redis-benchmark (10 connections) as two applications
    /// with addresses, moved while the benchmark runs: redis 1 -> 3, the benchmark 2 -> 3 (to
    /// its peer's node), redis 3 -> 1 (leaving its peer on the node it leaves), redis 1 -> 3
    /// (to its peer's node again), the benchmark 3 -> 2: every request answered (the
    /// benchmark reports both tests and no error). Moves to the peer's node once reset every
    /// connection: the peer's packets reached the target's namespace before its sockets
    /// were rebuilt, and the source's link, set up again, delivered the dead copy's packets.
    @Test(.enabled(if: toolPath("redis-server") != nil && toolPath("redis-benchmark") != nil, "needs redis-server and redis-benchmark (scripts/setup.sh installs them)"),
          .timeLimit(.minutes(3)))
    func redisAndItsBenchmarkBothMove() throws {
        try up()
        defer { try? down() }
        try holdBalancer()
        let redis = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", "redis-server", "--port", "6379",
                                                 "--save", "", "--appendonly", "no", "--protected-mode", "no")))
        let a = try address(of: redis)
        usleep(500_000)
        let bench = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", "redis-benchmark", "-h", a, "-p", "6379",
                                                 "-n", "400000", "-c", "10", "-t", "set,get", "-q")))
        usleep(1_500_000)
        for (app, to) in [(redis, 3), (bench, 3), (redis, 1), (redis, 3), (bench, 2)] {
            try move(app, to: to)
            usleep(700_000)
        }
        if try waitFor("the benchmark ends", seconds: 90, { try record(bench, node: 3)?.state == .stopped }) >= 90 {
            print("streams: the benchmark did not end:\n\(diagnose([redis, bench]))")
        }
        let out = try ssiOK("logs", "\(bench)").replacingOccurrences(of: "\r", with: "\n")
        let results = out.split(separator: "\n").filter { $0.contains("requests per second") }
        #expect(results.contains { $0.hasPrefix("SET:") } && results.contains { $0.hasPrefix("GET:") } && !out.contains("rror"),
                "redis-benchmark finished both tests with no error: \(results)")
        #expect(try record(bench, node: 3)?.exit_status == 0)
        print("streams: redis-benchmark across five moves: \(results.joined(separator: "; "))")
    }

    /// Checkpoint and restart of one end: restarted from the snapshot of its kill, a server's
    /// connection comes back intact (the client had nothing acknowledged since); restarted
    /// from an older snapshot the client has moved past, it is reset on both sides at once:
    /// the client reads ECONNRESET, the server goes on and takes new connections.
    @Test(.timeLimit(.minutes(2))) func restartedEndKeepsOrResetsItsConnection() throws {
        try up()
        defer { try? down() }
        let (echo, client) = (try TestEnv.fixture("lineecho"), try TestEnv.fixture("lineclient"))
        let server = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", echo, "7000")))
        let a = try address(of: server)
        // Intact: checkpoint --kill, restart the latest on node 3; the client goes on.
        let c1 = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", client, a, "7000", "6")))
        usleep(1_500_000)
        #expect(try ssiOK("checkpoint", "--kill=KILL", "\(server)").contains("Version: 1"))
        _ = try waitFor("the server stopped", seconds: 5) { try record(server, node: 2)?.state == .stopped }
        _ = try ssiOK("restart", "\(server)", "--node", "3")
        _ = try waitFor("the first client ends", seconds: 30) { try record(c1, node: 1)?.state == .stopped }
        let v1 = try ssiOK("logs", "\(c1)")
        #expect(v1.hasPrefix("PASS"), "restarted from the snapshot of its kill, the connection went on: \(v1)")
        // Reset: a snapshot (v2) while a second client talks, the talk goes on, then the
        // server is killed (v3) and restarted from v2, which the client has moved past.
        let c2 = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", client, a, "7000", "60")))
        usleep(1_000_000)
        #expect(try ssiOK("checkpoint", "\(server)").contains("Version: 2"))
        usleep(1_000_000)
        #expect(try ssiOK("checkpoint", "--kill=KILL", "\(server)").contains("Version: 3"))
        _ = try waitFor("the server stopped", seconds: 5) { try record(server, node: 2)?.state == .stopped }
        _ = try ssiOK("restart", "\(server)", "2", "--node", "1")
        let ended = try waitFor("the second client sees its connection reset", seconds: 10) { try record(c2, node: 1)?.state == .stopped }
        let v2 = try ssiOK("logs", "\(c2)")
        #expect(v2.hasPrefix("FAIL") && v2.contains("reset"), "the client read a reset: \(v2)")
        #expect(ended < 10, "at once, not after its 60 s")
        let c3 = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", client, a, "7000", "1")))
        _ = try waitFor("a new client ends", seconds: 15) { try record(c3, node: 1)?.state == .stopped }
        let v3 = try ssiOK("logs", "\(c3)")
        let serverLog = (try? ssiOK("logs", "\(server)")) ?? ""
        #expect(v3.hasPrefix("PASS"), "the restarted server takes new connections: \(v3); server: \(serverLog)")
    }

    /// Snapshots taken together: `ssi checkpoint -f/-c/-u` work on a cluster application;
    /// `ssi checkpoint SERVER CLIENT` freezes both (their traffic held) before dumping
    /// either, and `ssi restart SERVER CLIENT --node 3`, after a later checkpoint of the
    /// server alone, takes the versions taken together and brings their one connection back
    /// as it was: the client's every line answered in order, one accept in all. From
    /// snapshots taken a second apart, the same restarts reset it at once (no hang).
    @Test(.timeLimit(.minutes(2))) func checkpointTakenTogetherRestoresTheirConnection() throws {
        try up()
        defer { try? down() }
        let dir = "/tmp/ssi-together-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (echo, client) = (try TestEnv.fixture("lineecho"), try TestEnv.fixture("lineclient"))
        let server = try #require(appID(try ssiOK("run", "--node", "1", "--net", "app", "-b", "--log", "--", echo, "7400", "\(dir)/accepts")))
        let a = try address(of: server)
        let c = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", client, a, "7400", "8")))
        usleep(800_000)
        // Freeze, dump frozen, unfreeze: one application, through any node.
        #expect(try ssiOK("checkpoint", "-f", "\(server)", "--node", "3").contains("frozen on node 1"))
        _ = try waitFor("node 2 sees it frozen", seconds: 5) { try record(server, node: 2)?.state == .frozen }
        #expect(try ssiOK("checkpoint", "-c", "\(server)").contains("Version: 1"))
        #expect(try record(server, node: 3)?.state == .frozen, "-c leaves it frozen")
        #expect(try ssiOK("checkpoint", "-u", "\(server)").contains("unfrozen on node 1"))
        _ = try waitFor("it runs again", seconds: 5) { try record(server, node: 2)?.state == .running }
        usleep(500_000)
        // Both together; then the server alone, killed, a moment of talk later, and the
        // client killed: `ssi restart SERVER CLIENT` takes the versions taken together.
        let both = try ssiOK("checkpoint", "\(server)", "\(c)")
        #expect(both.contains("Identifier: \(server)\nVersion: 2") && both.contains("Identifier: \(c)\nVersion: 1"), "\(both)")
        usleep(300_000)
        #expect(try ssiOK("checkpoint", "--kill=KILL", "\(server)").contains("Version: 3"))
        _ = try ssiOK("kill", "\(c)", "--signal", "KILL")
        _ = try waitFor("both stopped", seconds: 5) { try record(server, node: 3)?.state == .stopped && record(c, node: 3)?.state == .stopped }
        // The killed client's sockets outlive it in its namespace (FIN_WAIT, a FIN sent
        // again), which must not reach its copy restarted elsewhere: its link on node 2 goes
        // with it.
        let link = AppSubnet.hostInterface(c)
        _ = try waitFor("the killed client's link on node 2 goes", seconds: 5) {
            let out = try Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(2))", "--", "ip", "-o", "link", "show"], check: false).1
            return !out.contains(" \(link)@")
        }
        let listed = try ssiOK("snapshots", "\(server)")
        #expect(listed.contains("v2\t") && listed.contains("taken together with \(c) v1"), "\(listed)")
        let r = try ssiOK("restart", "\(server)", "\(c)", "--node", "3")
        #expect(r.contains("From the snapshots taken together: \(server) v2, \(c) v1"), "\(r)")
        #expect(r.components(separatedBy: "on node 3").count == 3, "\(r)")
        if try waitFor("the client ends", seconds: 30, { try record(c, node: 1)?.state == .stopped }) >= 30 {
            print("streams: the client did not end (restart: \(r)):\n\(diagnose([server, c]))")
        }
        let verdict = try ssiOK("logs", "\(c)")
        #expect(verdict.contains("PASS"), "the connection came back with both ends: \(verdict)")
        #expect((try? String(contentsOfFile: "\(dir)/accepts", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) == "1",
                "the server accepted one connection in all")
        // A group with an application that is not running changes nothing.
        let refused = try ssi("checkpoint", "\(server)", "\(c)")
        #expect(refused.code != 0 && refused.out.contains("application \(c) is stopped") && refused.out.contains("nothing was changed"), "\(refused.out)")
        #expect(try record(server, node: 1)?.state == .running)
        // Snapshots taken apart, a second of talk between them: restarted one after the
        // other, the second finds the first's side not fitting and resets the connection.
        let c2 = try #require(appID(try ssiOK("run", "--node", "2", "--net", "app", "-b", "--log", "--", client, a, "7400", "60")))
        usleep(1_000_000)
        #expect(try ssiOK("checkpoint", "\(server)").contains("Version: 4"))
        usleep(1_000_000)
        #expect(try ssiOK("checkpoint", "--kill=KILL", "\(c2)").contains("Version: 1"))
        _ = try ssiOK("kill", "\(server)", "--signal", "KILL")
        _ = try waitFor("both stopped", seconds: 5) { try record(server, node: 1)?.state == .stopped && record(c2, node: 1)?.state == .stopped }
        _ = try ssiOK("restart", "\(server)", "4", "--node", "1")
        _ = try ssiOK("restart", "\(c2)", "1", "--node", "2")
        let ended = try waitFor("the client reads a reset", seconds: 10) { try record(c2, node: 3)?.state == .stopped }
        if ended >= 10 { print("streams: \(String(describing: try record(c2, node: 3))) \(diagnose([server, c2]))") }
        let v2 = try ssiOK("logs", "\(c2)")
        #expect(v2.contains("FAIL") && (v2.contains("reset") || v2.contains("Broken pipe")) && ended < 10, "snapshots taken apart: reset at once, not a hang: \(v2)")
    }

    /// Refusals: --net app without the cluster (--local) is refused, naming why; and an
    /// application in its node's network keeps no address.
    @Test(.timeLimit(.minutes(1))) func nodeNetworkApplicationsHaveNoAddress() throws {
        try up()
        defer { try? down() }
        let plain = try #require(appID(try ssiOK("run", "--node", "2", "-b", "--log", "--", "sleep", "30")))
        #expect(try record(plain, node: 3)?.address == nil)
        let ps = try ssiOK("ps", "--node", "1")
        #expect(!ps.contains("ADDRESS"), "no address column when no application has one: \(ps)")
        let own = try #require(appID(try ssiOK("run", "--node", "3", "--net", "app", "-b", "--log", "--", "sleep", "30")))
        let a = try address(of: own)
        #expect(try ssiOK("ps", "--node", "2").contains(a), "ssi ps shows the address")
        // Its namespace is its own: the node's eth0 is not there, its eth0 has the address.
        let pid = try #require(try record(own, node: 3)?.pid)
        let r = try Proc.run(["nsenter", "--target", "\(pid)", "--net", "--", "ip", "-4", "-o", "addr"], check: false)
        #expect(r.1.contains("eth0") && r.1.contains("\(a)/32") && !r.1.contains("10.77.0.3"), "\(r.1)")
        // Its TCP table is its own (PrivateTCPHash: /proc/net/tcp there is read in a move's
        // hold), as is each node's; the setting they were made with is put back.
        func sysctl(_ ns: [String], _ name: String = "tcp_ehash_entries") throws -> String {
            try Proc.run(["nsenter"] + ns + ["--", "cat", "/proc/sys/net/ipv4/\(name)"], check: false).1.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // The node's namespace was made from the host's, whose setting (the administrator's
        // when it is not 0) it got; the application's from the node's, which is 0.
        let hostSetting = try String(contentsOfFile: "/proc/sys/net/ipv4/tcp_child_ehash_entries", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let node3 = ["--net=/run/netns/\(lc.nodeNamespace(3))"]
        #expect(try sysctl(["--target", "\(pid)", "--net"]) == "\(PrivateTCPHash.entries)", "the application's namespace has a TCP table of its own")
        #expect(try sysctl(node3) == (hostSetting == "0" ? "\(PrivateTCPHash.entries)" : hostSetting), "node 3's namespace has a TCP table of its own")
        #expect(try sysctl(node3, "tcp_child_ehash_entries") == "0", "node 3's setting is put back after its daemon made the namespace")
        #expect(try JSONDecoder().decode([StreamRow].self, from: Data(try ssiOK("streams", "--json").utf8)).isEmpty, "no connection, no stream")
        let local = try ssi("run", "--local", "--net", "app", "--", "true")
        #expect(local.code != 0 && local.out.contains("--net needs a cluster"), "\(local.out)")
    }
}
