import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The alternate signal stack after restart is the program's, not the restorer's.
@Suite("C/R and the alternate signal stack", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid"))
struct SignalStackTests {
    @Test("an SA_ONSTACK handler without an alternate stack runs after restart")
    func onStackHandler() throws {
        let w = try World("onstack")
        let app = try w.start([try TestEnv.fixture("onstack")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(100_000)
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        usleep(100_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0, "\(w.log())")
    }
}
