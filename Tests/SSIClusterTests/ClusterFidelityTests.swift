import Foundation
import SSIProcessTable
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The engine's fixtures (Tests/Fixtures, issue 10) as cluster applications: each runs in a
// PID namespace of its own (ssi-init is its process 1), is migrated from node 1 to node 2,
// and checks its own state there. The engine takes every id of such a process in its
// namespace and rebuilds it inside a new one, and the restored processes see a /proc of
// their namespace: cases the node-local fixtures never reach (sessions that outlive their
// leader, stops already reported, ssi's files opened through /proc); and the source copy,
// frozen on the same machine, still holds the application's names while the target
// restores (unix socket paths, FIFO bytes: RestartOptions.takeOver).

private struct ClusterCase: CustomStringConvertible, Sendable {
    var fixture: String
    var args: [String] = []
    /// Why it cannot migrate yet (a known issue, checked to be refused cleanly: the
    /// application goes on on node 1).
    var notYet: String? = nil
    var description: String { ([fixture] + args).joined(separator: " ") }
}

private let clusterCases: [ClusterCase] = [
    .init(fixture: "pipeorphan"), .init(fixture: "cwddeleted"), .init(fixture: "fifounlinked"),
    .init(fixture: "inotifyremoved"), .init(fixture: "scmpipe"), .init(fixture: "udp"),
    .init(fixture: "tcptimewait"), .init(fixture: "fanotify"), .init(fixture: "nsfd"), .init(fixture: "nsuts"), .init(fixture: "nsnet"), .init(fixture: "nsipc"), .init(fixture: "mqueue"), .init(fixture: "threadleader"),
    .init(fixture: "timerfd"), .init(fixture: "epoll"), .init(fixture: "zombies"),
    .init(fixture: "stopsig"), .init(fixture: "sessions"), .init(fixture: "posixtimers"),
    .init(fixture: "sockopts"), .init(fixture: "unlinkedmeta"), .init(fixture: "madvise"),
    .init(fixture: "mprotectro"), .init(fixture: "threads"), .init(fixture: "signals"),
    .init(fixture: "sockets"), .init(fixture: "fdkinds"),
    .init(fixture: "unixrelpath"), .init(fixture: "dgramclosed"), .init(fixture: "mtime"),
    .init(fixture: "fifo"), .init(fixture: "inotify"), .init(fixture: "memory"), .init(fixture: "piperead"),
    .init(fixture: "sockpair"), .init(fixture: "sharedanon"), .init(fixture: "sharedmap"), .init(fixture: "tree"),
    .init(fixture: "fpu"), .init(fixture: "onstack"), .init(fixture: "unlinked"), .init(fixture: "clonefiles"),
    .init(fixture: "chroot"), .init(fixture: "lazyfill", args: ["128", "lazy"]), .init(fixture: "precopymem"), .init(fixture: "schedattrs"), .init(fixture: "fdmore"), .init(fixture: "seccomp"), .init(fixture: "unlinkedshared"), .init(fixture: "procattrs"), .init(fixture: "fcntlmore"), .init(fixture: "packetsock"), .init(fixture: "exedeleted"), .init(fixture: "nspid"), .init(fixture: "nsmnt"),
    .init(fixture: "locks"), .init(fixture: "procfiles"), .init(fixture: "pty", args: ["moved"]),
    .init(fixture: "robustshared"), .init(fixture: "peercred"), .init(fixture: "restartsyscall"), .init(fixture: "linkedname"), .init(fixture: "scmcreds"),
    // Under ssi-init, whose lack of an undo list tells which processes have none (SemaphoreUndo).
    .init(fixture: "semundo", args: ["ns"]),
]

private func record(_ app: Int32) throws -> AppRecord? {
    try JSONDecoder().decode([AppRecord].self, from: Data(try ssiOK("ps", "--json").utf8)).first { $0.app == app }
}

@Suite(.serialized, .enabled(if: canRunCluster, "\(whyNot)"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc"), "needs gcc to build the fixtures"))
struct ClusterFidelityTests {
    /// One cluster for every case (cases run one at a time); the last case takes it down.
    static let cluster: Result<Void, any Error> = Result {
        Proc.becomeSubreaper()
        _ = try ssiOK("cluster", "up", "--nodes", "2")
    }
    nonisolated(unsafe) static var casesRun = 0   // the cases run one at a time (.serialized)

    @Test("a fixture as a cluster application migrated to another node checks its state and prints PASS", arguments: clusterCases)
    fileprivate func migratedFixturePasses(_ c: ClusterCase) throws {
        try Self.cluster.get()
        defer {
            Self.casesRun += 1
            if Self.casesRun == clusterCases.count { try? down() }
        }
        let bin = try TestEnv.fixture(c.fixture)
        let dir = "/tmp/ssi-cfid-\(getpid())-\(c.fixture)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Run in a directory of its own: the fixtures make files in their working directory.
        let run = try Proc.run(["/bin/sh", "-c", "cd '\(dir)' && exec \"$0\" \"$@\"", binDir + "/ssi", "run", "--node", "1", "-b", "--log", "--", bin] + c.args, check: false)
        let app = try #require(appID(run.1), "\(run.1)")
        defer { _ = try? ssi("kill", "\(app)", "--signal", "KILL") }
        _ = try waitFor("READY", seconds: 15) { try ssiOK("logs", "\(app)").contains("READY") }
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        let moved = try ssi("migrate", "\(app)", "2")
        if let why = c.notYet {
            withKnownIssue("not handled yet: \(why)") { #expect(moved.code == 0, "\(moved.out)") }
            if moved.code != 0 {
                #expect(moved.out.contains("it goes on on node 1"), "\(moved.out)")
                #expect(try record(app)?.node == 1 && record(app)?.state == .running)
                return
            }
        } else {
            #expect(moved.code == 0, "\(moved.out)")
            guard moved.code == 0 else { return }
        }
        _ = try ssiOK("kill", "\(app)", "--signal", "USR1")
        _ = try waitFor("its verdict", seconds: 30) { try record(app)?.state == .stopped }
        let log = try ssiOK("logs", "\(app)")
        #expect(log.contains("PASS") && !log.contains("FAIL"), "\(log)")
        #expect(try record(app)?.exit_status == 0, "\(log)")
    }
}
