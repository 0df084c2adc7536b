import Foundation
import SSICheckpoint
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

    /// Checkpoints made by one long-lived process (here the test, as the node daemon makes
    /// a cluster application's) keep the write tracking between versions and read only what
    /// was written since the previous one (IncrementalBase.swift). Between versions the
    /// program rewrites pages, drops some (MADV_DONTNEED), replaces an area at the same
    /// address, maps a new one, and calls execve(2); one base version is deleted. Every
    /// version restores and checks every page.
    @Test("versions taken by reference from a kept tracking: drops, a replaced area, a new one, execve, a deleted base; each version checks every page")
    func keptTrackingReadsOnlyWhatChanged() throws {
        let w = try World("increments")
        let app = try w.start([try TestEnv.fixture("increments"), "8"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        let engine = CheckpointEngine(store: SnapshotStore(root: w.chkpt, pool: true))
        var o = CheckpointEngine.CheckpointOptions()
        o.precopy = true
        let first = try engine.checkpoint(app: app, options: o)
        #expect(first.referencedBytes == 0 && first.precopyRounds.first ?? 0 >= 8 << 20, "\(first.precopyRounds)")
        var versions = [first.version]
        for round in 1...6 {
            if round == 6 {
                // The base's version deleted: the next checkpoint reads every page again.
                let d = try w.ssi("snapshots", "--delete", "\(app)", "\(versions.removeLast())")
                #expect(d.status == 0, "\(d.output)")
            }
            kill(app, SIGUSR1)
            try #require(w.waitLog("CHANGED \(round)"), "\(w.log())")
            let r = try engine.checkpoint(app: app, options: o)
            versions.append(r.version)
            let copied = r.precopyRounds.first ?? 0
            switch round {
            case 5, 6:
                // After execve(2) the old tracking is of an mm that is gone; after the delete
                // its references are no longer safe: both read everything.
                #expect(r.referencedBytes == 0 && copied >= 8 << 20, "round \(round): referenced \(r.referencedBytes), copied \(copied)")
            default:
                // 8 MiB of A and 1 MiB of B (replaced in round 3, then copied whole): most of
                // it by reference, little read.
                #expect(r.referencedBytes >= 7 << 20 && copied < 2 << 20, "round \(round): referenced \(r.referencedBytes), copied \(copied)")
            }
        }
        kill(app, SIGKILL)
        reap(app)
        for v in versions {
            let before = w.log().components(separatedBy: "PASS").count
            let rs = try w.ssi("restart", "\(app)", "\(v)")
            try #require(rs.status == 0, "version \(v): \(rs.output)")
            kill(app, SIGTERM)
            let end = Date().addingTimeInterval(20)
            while w.log().components(separatedBy: "PASS").count == before && !w.log().contains("FAIL") && Date() < end { usleep(20_000) }
            #expect(w.log().components(separatedBy: "PASS").count == before + 1 && !w.log().contains("FAIL"), "version \(v): \(w.log().suffix(400))")
            #expect(reap(app).map { exitCode($0) } == 0, "version \(v)")
        }
    }
}
