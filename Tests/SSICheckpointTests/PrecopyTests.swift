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
        // Its stdin is a pipe from a process outside it: the fds are checked after the
        // pre-copy rounds, and refused.
        // The writer (a sleep) writes its PID down, so that it is killed at the end too; no
        // process here keeps the test runner's own output open (SpawnOptions.logging).
        let writer = "sh -c 'echo $$ > \(w.dir)/writer.pid; exec sleep 1000'"
        let sh = try Spawn.start(["/bin/sh", "-c", "\(writer) | exec '\(meter)' 64 '\(w.dir)/stats' 20 1000 > '\(w.dir)/out.log'"],
                                 SpawnOptions.logging(to: "\(w.dir)/sh.log"))
        defer {
            if let text = try? String(contentsOfFile: "\(w.dir)/writer.pid", encoding: .utf8), let p = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(p, SIGKILL)
            }
            w.killAndReap(sh)
            _ = Proc.reapAll()
        }
        try #require(w.waitLog("READY", 60), "\(w.log())")
        let app = try #require(Int32(w.logValue("READY ").trimmingCharacters(in: .whitespaces)))
        defer { kill(app, SIGKILL) }
        let r = try w.ssi("checkpoint", "--precopy", "\(app)")
        #expect(r.status != 0 && r.stderr.contains("pipe") && r.stderr.contains("\(app)"), "\(r.output)")
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
