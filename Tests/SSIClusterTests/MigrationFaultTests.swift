import Foundation
import SSIProcessTable
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

// "Exactly one copy, never zero" (docs/migration.md): every fault at every phase of a
// migration, on the real 3-node cluster. The daemons stop at a phase when the test file
// named by SSI_TEST_MIGRATION_FAULT says so (MigrationFaults.swift); the test then kills a
// daemon, cuts the target's link or kills the `ssi migrate` client, or makes the phase fail.
// After each case exactly one copy of the application exists and runs, on the node `ssi ps`
// names from every node, and its memory is what it was (bigmem checks its own checksum).

let faultFile = "/tmp/ssi-test-migration-fault"

@Suite(.serialized, .enabled(if: canRunCluster, Comment(rawValue: whyNot)))
struct MigrationFaultTests {
    enum Fault: String, CaseIterable {
        case targetDaemonKilled = "target daemon killed"
        case sourceDaemonKilled = "source daemon killed"
        case targetLinkDown = "target's link down"
        case clientKilled = "ssi migrate killed"
        case injectedError = "the phase fails"
    }

    enum Phase: String, CaseIterable { case transfer, freeze, restore }

    /// The cmdline (argv) of a process, empty when it is gone.
    static func argv(_ pid: Int32) -> [String] {
        let b = (try? ProcFS.readBytes("/proc/\(pid)/cmdline")) ?? []
        return b.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Every process of the machine running bigmem with `tag` MiB (ssi-init, whose argv
    /// holds the same words after `--`, is not one).
    static func copies(_ fixture: String, _ tag: String) -> [Int32] {
        let all = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        return all.filter { let a = argv($0); return a.count >= 2 && a[0] == fixture && a[1] == tag }
    }

    /// The node whose network namespace process `pid` is in (every application here uses
    /// its node's network).
    static func node(of pid: Int32) -> Int? {
        guard let mine = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net") else { return nil }
        for k in 1...3 {
            var st = stat()
            guard stat("/run/netns/\(lc.nodeNamespace(k))", &st) == 0 else { continue }
            if mine == "net:[\(st.st_ino)]" { return k }
        }
        return nil
    }

    /// The record as node `via` shows it, nil while that node cannot say (a node just
    /// started again, or its link just restored): no issue recorded, the caller waits.
    static func quietRecord(_ app: Int32, via: Int) -> AppRecord? {
        guard let r = try? ssi("ps", "--json", "--node", "\(via)"), r.code == 0,
              let all = try? JSONDecoder().decode([AppRecord].self, from: Data(r.out.utf8)) else { return nil }
        return all.first { $0.app == app }
    }

    /// Whether another process holds an flock(2) and a POSIX write lock on `path`, asked
    /// from here with LOCK_NB and F_GETLK (which never take anything that is held).
    static func locksHeld(_ path: String) -> String {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return "cannot open \(path)" }
        defer { close(fd) }
        var words: [String] = []
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            words.append("flock free")
        } else {
            words.append(errno == EWOULDBLOCK ? "flock held" : "flock: \(String(cString: strerror(errno)))")
        }
        var f = flock()
        f.l_type = Int16(F_WRLCK)
        f.l_whence = Int16(SEEK_SET)
        words.append(fcntl(fd, F_GETLK, &f) != 0 ? "F_GETLK: \(String(cString: strerror(errno)))" : f.l_type == Int16(F_WRLCK) ? "POSIX lock held" : "POSIX lock free")
        return words.joined(separator: " and ")
    }

    func logCount(_ node: Int, _ text: String) -> Int {
        ((try? String(contentsOfFile: lc.log(node: node), encoding: .utf8)) ?? "").components(separatedBy: text).count - 1
    }

    /// The 3-node cluster, its daemons reading the fault file, and bigmem's path.
    func withFaultCluster(_ body: (String) throws -> Void) throws {
        let fixture = try TestEnv.fixture("bigmem")
        unlink(faultFile)
        setenv("SSI_TEST_MIGRATION_FAULT", faultFile, 1)
        defer { unsetenv("SSI_TEST_MIGRATION_FAULT"); unlink(faultFile) }
        try up()
        defer { try? down() }
        try body(fixture)
    }

    @Test(.timeLimit(.minutes(15))) func everyFaultAtEveryPhaseLeavesExactlyOneCopy() throws {
        try withFaultCluster { fixture in
            var results: [String] = []
            // 80 MiB: above the pre-copy threshold (64 MiB), so the image streams while it runs.
            for (i, phase) in Phase.allCases.enumerated() {
                for (j, fault) in Fault.allCases.enumerated() {
                    let tag = "\(80 + i * 8 + j)"
                    let ended = try runCase(fault, phase, fixture: fixture, tag: tag)
                    results.append("\(phase.rawValue) / \(fault.rawValue): on node \(ended.map(String.init) ?? "?")")
                }
            }
            print("migration faults:\n  " + results.joined(separator: "\n  "))
        }
    }

    /// Without a file lock to hand over, the source queues its copy's SIGSTOP before the
    /// commit and the commit carries the request to restore (the target starts at once):
    /// the faults of the phases around that commit, and a move with none.
    @Test(.timeLimit(.minutes(10))) func withoutLocksTheCommitStartsTheRestore() throws {
        try withFaultCluster { fixture in
            var results: [String] = []
            let cases: [(Fault?, Phase)] = Fault.allCases.map { ($0, .freeze) } + [(.targetDaemonKilled, .restore), (.sourceDaemonKilled, .restore), (nil, .freeze)]
            for (i, c) in cases.enumerated() {
                let ended = try runCase(c.0, c.1, fixture: fixture, tag: "\(120 + i)", locks: false)
                results.append("\(c.1.rawValue) / \(c.0?.rawValue ?? "no fault"), no lock: on node \(ended.map(String.init) ?? "?")")
            }
            // The restore was started by the commit (the target says so), in the move without
            // a fault at least.
            #expect(logCount(2, "restoring it at once") > 0, "node 2 never restored an image on its commit")
            print("migration faults without locks:\n  " + results.joined(separator: "\n  "))
        }
    }

    /// One case; returns the node the application ends on. No fault: a move that must end
    /// on node 2.
    func runCase(_ fault: Fault?, _ phase: Phase, fixture: String, tag: String, locks: Bool = true) throws -> Int? {
        let what = "\(phase.rawValue) / \(fault?.rawValue ?? "no fault")\(locks ? "" : ", no lock")"
        // Its file locks (an flock and a POSIX lock on one file) go with it, or stay with it.
        let lockFile = "/tmp/ssi-fault-locks-\(getpid())-\(tag)"
        defer { unlink(lockFile) }
        let app = try #require(appID(try ssiOK(["run", "-b", "--log", "--node", "1", "--", fixture, tag] + (locks ? [lockFile] : []))), "\(what)")
        _ = try waitFor("READY (\(what))", seconds: 20) { try ssiOK("logs", "\(app)").contains("READY") }
        let sum = try #require(try ssiOK("logs", "\(app)").split(separator: "\n").first { $0.hasPrefix("READY") }?.split(separator: " ").last)
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        let before = Self.copies(fixture, tag)
        #expect(before.count == 1, "\(what): one copy before: \(before)")

        if let fault {
            try (fault == .injectedError ? "\(phase.rawValue) fail\n" : "\(phase.rawValue) pause 6\n").write(toFile: faultFile, atomically: true, encoding: .utf8)
        }
        // The phase's daemon: the source stops at transfer and freeze, the target at restore.
        let pausing = phase == .restore ? 2 : 1
        let marker = "migration of application \(app): paused at \(phase.rawValue)"
        let log = "/tmp/ssi-fault-migrate-\(tag).log"
        unlink(log)
        let mig = try Proc.spawn([binDir + "/ssi", "migrate", "\(app)", "2"], log: log)
        var restartNode: Int? = nil, linkDown = false
        if let fault, fault != .injectedError {
            _ = try waitFor("\(marker) in node \(pausing)'s log", seconds: 20) { logCount(pausing, marker) > 0 }
            switch fault {
            case .targetDaemonKilled: kill(nodePid(2), SIGKILL); restartNode = 2
            case .sourceDaemonKilled: kill(nodePid(1), SIGKILL); restartNode = 1
            case .targetLinkDown: _ = try ssiOK("cluster", "link", "2", "down"); linkDown = true
            case .clientKilled: kill(mig, SIGKILL)
            case .injectedError: break
            }
        }
        // An injected failure stays asked for until the client ends: the phase may come later.
        if fault != .injectedError { unlink(faultFile) }
        // The client ends (killed, or with the migration's outcome); a daemon killed is
        // started again, a link cut is restored once the source has given up on node 2.
        var st: Int32 = 0
        let t0 = Date()
        while waitpid(mig, &st, WNOHANG) == 0 {
            if Date().timeIntervalSince(t0) > 90 { kill(mig, SIGKILL) }
            usleep(100_000)
        }
        unlink(faultFile)
        let said = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if let k = restartNode { _ = try ssiOK("cluster", "start-node", "\(k)") }
        if linkDown { _ = try ssiOK("cluster", "link", "2", "up") }

        // Exactly one copy, running, where every node's `ssi ps` says.
        var node: Int? = nil
        _ = try waitFor("exactly one running copy of \(app), recorded where it runs, from every node (\(what))", seconds: 45) {
            let now = Self.copies(fixture, tag)
            guard now.count == 1, let p = now.first, let state = Proc.state(p), state != "T", state != "Z",
                  let k = Self.node(of: p) else { return false }
            for via in 1...3 {
                guard let r = Self.quietRecord(app, via: via), r.node == k, r.state == .running, r.migration == nil,
                      NodeTree.of(r.pid).contains(p) else { return false }
            }
            node = k
            return true
        }
        let now = Self.copies(fixture, tag)
        #expect(now.count == 1, "\(what): copies after: \(now); ssi migrate said: \(said)")
        // Until the target has run it, a failure leaves it on the source (a killed client
        // too: its daemon gives the migration up and tells the target); only a source daemon
        // killed while the target restores may let the target take over (the grab it held
        // is revoked when node 1 is declared failed, so it usually cannot).
        switch (fault, phase) {
        case (nil, _): #expect(node == 2, "\(what): it should have moved to node 2, is on \(node.map(String.init) ?? "none"); ssi migrate said: \(said)")
        case (.sourceDaemonKilled?, .restore): #expect(node != nil, "\(what)")
        default: #expect(node == 1, "\(what): it should go on on node 1, is on \(node.map(String.init) ?? "none"); ssi migrate said: \(said)")
        }
        if fault == .clientKilled {
            #expect(logCount(1, "migration of application \(app) to node 2 given up: the ssi migrate that asked for it went away") > 0,
                    "\(what): node 1 should say it gave the migration up")
        }
        if fault == nil {
            #expect(st == 0, "\(what): ssi migrate said: \(said)")
        } else if fault != .sourceDaemonKilled && fault != .clientKilled {
            #expect(st != 0 && said.contains("goes on on node 1"), "\(what): ssi migrate said: \(said)")
        }
        // Its file locks, held again: at once, or (the copy the target was restoring still
        // held them when it went on) once that copy is gone, within a few tries.
        if locks {
            let deadline = Date().addingTimeInterval(10)
            while Self.locksHeld(lockFile) != "flock held and POSIX lock held" && Date() < deadline { usleep(100_000) }
            #expect(Self.locksHeld(lockFile) == "flock held and POSIX lock held", "\(what): its file locks: \(Self.locksHeld(lockFile)); ssi migrate said: \(said)")
        }
        // Its memory, checked by itself.
        let r = try #require(try record(app, node: 3), "\(what): no record of \(app)")
        kill(r.pid, SIGUSR1)
        _ = try waitFor("its checksum (\(what))", seconds: 20) { try ssiOK("logs", "\(app)").contains("SUM") }
        #expect(try ssiOK("logs", "\(app)").contains("SUM \(sum)"), "\(what): memory changed")
        kill(r.pid, SIGKILL)
        _ = try waitFor("\(app) stopped", seconds: 10) { try record(app, node: 3)?.state == .stopped }
        for p in Self.copies(fixture, tag) { kill(p, SIGKILL) }
        _ = Proc.reapAll()
        return node
    }
}
