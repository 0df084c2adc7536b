import Foundation
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Pre-copy checkpoints (ssi checkpoint --precopy): memory copied while the application
/// runs and writes, then the last round frozen. The application (frozenmeter) checks every
/// one of its pages itself, against a generation table it keeps in other pages, so a page
/// restored from a stale copy is caught.
@Suite(.serialized, .enabled(if: TestEnv.dirtyTrackingMissing == nil, "needs root and Linux 6.7+: userfaultfd asynchronous write-protection, PAGEMAP_SCAN"))
struct PrecopyTests {
    /// frozenmeter with `mib` MiB, rewriting `perMs` pages per millisecond.
    func startMeter(_ w: World, mib: Int, perMs: Int) throws -> Int32 {
        let app = try w.start([try TestEnv.fixture("frozenmeter"), "\(mib)", "\(w.dir)/stats", "\(perMs)", "1000"])
        try #require(w.waitLog("READY", 60), "\(w.log())")
        usleep(300_000)
        return app
    }

    @Test("--precopy --kill, restart: every page as it was, while the application kept writing", .timeLimit(.minutes(3)))
    func killAndRestart() throws {
        let w = try World("precopy")
        let app = try startMeter(w, mib: 64, perMs: 20)
        defer { w.cleanUp(app) }
        let ck = try w.checkpointKill(app, ["--precopy", "--json"])
        try #require(ck.status == 0, "\(ck.output)")
        #expect(ck.stdout.contains("\"precopyRounds\""), "\(ck.stdout)")
        #expect(processState(app) == nil)
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS", 60) || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(w.log().contains("PASS") && !w.log().contains("FAIL"), "\(w.log())")
        #expect(reap(app, within: 30).map { exitCode($0) } == 0)
    }

    @Test("--precopy leaving it running: it goes on, unprotected, its memory intact; the snapshot restores", .timeLimit(.minutes(3)))
    func leftRunning() throws {
        let w = try World("precopy-run")
        let app = try startMeter(w, mib: 32, perMs: 50)
        defer { w.cleanUp(app) }
        let ck = try w.ssi("checkpoint", "--precopy", "\(app)")
        try #require(ck.status == 0, "\(ck.output)")
        // The protection is lifted: no area of the process is still registered (smaps "uw").
        #expect(!((try? String(contentsOfFile: "/proc/\(app)/smaps", encoding: .utf8)) ?? "").contains(" uw"), "still write-protected")
        kill(app, SIGUSR2)
        #expect(w.waitLog("CHECK ", 60), "\(w.log())")
        #expect(w.log().contains("CHECK PASS"), "\(w.log())")
        w.killAndReap(app)
        let rs = try w.ssi("restart", "\(app)", "1")
        try #require(rs.status == 0, "\(rs.output)")
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS\n", 60), "\(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
        #expect(reap(app, within: 30).map { exitCode($0) } == 0)
    }

    @Test("a --precopy checkpoint that fails after its rounds leaves the application running, unprotected, intact", .timeLimit(.minutes(2)))
    func failedAfterRounds() throws {
        let w = try World("precopy-fail")
        let meter = try TestEnv.fixture("frozenmeter")
        // Its stdin is a unix stream socket connected to a listener outside it: the fds are
        // checked after the pre-copy rounds, and such a socket is refused (Sockets.swift).
        // The listener writes its PID down, so that it is killed at the end too.
        let path = "\(w.dir)/outside.sock"
        let listener = "import os, socket, time\nopen('\(w.dir)/listener.pid', 'w').write(str(os.getpid()))\ns = socket.socket(socket.AF_UNIX)\ns.bind('\(path)')\ns.listen()\ntime.sleep(1000)\n"
        let connector = "import os, socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect('\(path)')\nos.dup2(s.fileno(), 0)\nos.execv(sys.argv[1], sys.argv[1:])\n"
        let lpid = try Spawn.start(["python3", "-c", listener], SpawnOptions.logging(to: "\(w.dir)/listener.log"))
        defer { kill(lpid, SIGKILL); var st: Int32 = 0; waitpid(lpid, &st, 0) }
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: path) { usleep(50_000) }
        let sh = try Spawn.start(["python3", "-c", connector, meter, "64", "\(w.dir)/stats", "20", "1000"],
                                 SpawnOptions.logging(to: "\(w.dir)/out.log"))
        defer {
            w.killAndReap(sh)
            _ = Proc.reapAll()
        }
        try #require(w.waitLog("READY", 60), "\(w.log())")
        let app = try #require(Int32(w.logValue("READY ").trimmingCharacters(in: .whitespaces)))
        defer { kill(app, SIGKILL) }
        let r = try w.ssi("checkpoint", "--precopy", "\(app)")
        #expect(r.status != 0 && r.stderr.contains("outside the application") && r.stderr.contains("\(app)"), "\(r.output)")
        #expect(processState(app) != nil, "the application is gone")
        #expect(!((try? String(contentsOfFile: "/proc/\(app)/smaps", encoding: .utf8)) ?? "").contains(" uw"), "still write-protected")
        #expect(!FileManager.default.fileExists(atPath: "\(w.chkpt)/\(app)/v1"), "a version was left")
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: "\(w.chkpt)/\(app)")) ?? []
        #expect(leftovers.isEmpty, "left in the store: \(leftovers)")
        kill(app, SIGUSR2)
        #expect(w.waitLog("CHECK ", 60), "\(w.log())")
        #expect(w.log().contains("CHECK PASS"), "\(w.log())")
    }

    @Test("--precopy with -c is refused, and the frozen application is left as it was")
    func refusedWhenFrozen() throws {
        let w = try World("precopy-frozen")
        let app = try startMeter(w, mib: 0, perMs: 0)
        defer { w.cleanUp(app) }
        try #require(try w.ssi("checkpoint", "-f", "\(app)").status == 0)
        let r = try w.ssi("checkpoint", "-c", "--precopy", "\(app)")
        #expect(r.status != 0 && r.stderr.contains("--precopy") && r.stderr.contains("hint:"), "\(r.output)")
        #expect(try w.ssi("checkpoint", "-u", "\(app)").status == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(w.chkpt)/\(app)/v1"))
    }
}

/// The seize's rescans (SeizedApplication.seize): after the first walk of /proc, only the
/// PIDs allocated since are read (ns_last_pid); a process born meanwhile must not escape.
@Suite(.serialized, .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes"))
struct SeizeRescanTests {
    @Test("checkpoint --kill of a tree that forks every millisecond leaves no process of it behind", .timeLimit(.minutes(2)))
    func noEscape() throws {
        let w = try World("forker")
        let bin = try TestEnv.fixture("forker")
        func running() -> Set<Int32> {
            Set(((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
                .filter { Proc.alive($0) && Proc.cmdline($0).contains(bin) })
        }
        let before = running()   // left by an earlier, interrupted run: not this one's
        // Started by PID (not `ssi run`): no cgroup freezes it first, ptrace alone must catch it.
        let root = try Spawn.start([bin], SpawnOptions.logging(to: "\(w.dir)/out.log"))
        defer { w.cleanUp(root) }
        #expect(w.waitLog("READY"))
        usleep(30_000)
        let ck = try w.checkpointKill(root)
        try #require(ck.status == 0, "\(ck.output)")
        usleep(200_000)
        _ = Proc.reapAll()
        let left = running().subtracting(before).sorted()
        #expect(left.isEmpty, "processes that escaped the checkpoint: \(left)")
        for pid in left { kill(pid, SIGKILL) }
        _ = Proc.reapAll()
    }
}
