import Foundation
import SSIImage
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Incremental versions (issue 16) on a real program: versions share the application's
/// page pool, each adds what changed, and any version restores alone after the others are
/// deleted.
@Suite("incremental versions", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid"))
struct IncrementalTests {
    func manifest(_ w: World, _ app: Int32, _ v: Int) throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: "\(w.chkpt)/\(app)/v\(v)/manifest.json")))
    }

    @Test("three versions of a program changing 1% between them; v1 and v2 deleted, v3 restores and checks every page")
    func versionsShareThePool() throws {
        let w = try World("incremental")
        let app = try w.start([try TestEnv.fixture("generations"), "16"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        try #require(try w.ssi("checkpoint", "\(app)").status == 0)
        for round in 1...2 {
            kill(app, SIGUSR1)
            #expect(w.waitLog("CHANGED \(round)"))
            let r = round == 2 ? try w.checkpointKill(app) : try w.ssi("checkpoint", "\(app)")
            try #require(r.status == 0, "\(r.output)")
        }
        let (m1, m3) = (try manifest(w, app, 1), try manifest(w, app, 3))
        #expect(m3.formatVersion == SnapshotFormat.version && m3.pooled != nil)
        // 16 MiB, 1% changed: v3 adds its changed pages, its map and its core file.
        #expect(m1.addedBytes >= 16 << 20 && m3.addedBytes < m1.addedBytes / 20, "v1 \(m1.addedBytes), v3 \(m3.addedBytes)")
        let list = try w.ssi("snapshots", "\(app)")
        #expect(list.stdout.contains("v3") && list.stdout.contains("adds") && list.stdout.contains("of 16 MiB"), "\(list.output)")
        // Refused cleanly: an unknown version, and --delete without a version.
        let bad = try w.ssi("snapshots", "--delete", "\(app)", "9")
        #expect(bad.status != 0 && bad.stderr.contains("no snapshot version 9") && bad.stderr.contains("versions: 1, 2, 3"), "\(bad.output)")
        #expect(try w.ssi("snapshots", "--delete", "\(app)").status != 0)
        for v in [1, 2] {
            let d = try w.ssi("snapshots", "--delete", "\(app)", "\(v)")
            #expect(d.status == 0 && d.stdout.contains("Deleted version \(v)"), "\(d.output)")
        }
        #expect(SnapshotStore(root: w.chkpt).versions(app) == [3])
        let rs = try w.ssi("restart", "\(app)", "3")
        try #require(rs.status == 0, "\(rs.output)")
        kill(app, SIGTERM)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(w.log().contains("PASS") && !w.log().contains("FAIL"), "\(w.log().suffix(300))")
        #expect(reap(app).map { exitCode($0) } == 0)
    }
}
