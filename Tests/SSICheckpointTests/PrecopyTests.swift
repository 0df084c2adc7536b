import Foundation
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
