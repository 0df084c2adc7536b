import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Real programs: process trees, threads, pipelines, repeated checkpoints.
@Suite("C/R of process trees and threads", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, cgroup freezer"))
struct TreeAndThreadTests {
    @Test("a 20-process tree: sessions, groups, a zombie, a stopped child, a parent in wait; threads on mutexes, condvars and sleeps; MAP_SHARED memory across fork",
          arguments: ["tree", "threads", "sockpair", "sharedmap", "chroot"])
    func programChecksItsState(program: String) throws {
        try World.checkAfterRestart(program)
    }

    @Test("a shell pipeline checkpointed midway, killed and restarted: output complete and in order")
    func shellPipeline() throws {
        let w = try World("pipeline")
        let app = try w.start(["/bin/sh", "-c", "seq 1 1000000 | while read i; do echo $i; done > out"])
        defer { w.cleanUp(app) }
        #expect(waitUntil(5) { (try? FileManager.default.attributesOfItem(atPath: "\(w.dir)/out")[.size] as? Int ?? 0) ?? 0 > 10000 })
        try w.killAndRestart(app)
        #expect(reap(app, within: 60).map { exitCode($0) } == 0)
        let out = (try? String(contentsOfFile: "\(w.dir)/out", encoding: .utf8)) ?? ""
        let lines = out.split(separator: "\n")
        #expect(lines.count == 1_000_000, "\(lines.count) lines")
        #expect(lines.enumerated().allSatisfy { Int($0.element) == $0.offset + 1 }, "lines out of order or damaged")
    }

    @Test("a multi-threaded computation restarted midway ends with the checksum of an uninterrupted run")
    func checksum() throws {
        let w = try World("checksum")
        let bin = try TestEnv.fixture("checksum")
        let reference = try run([bin]).stdout.split(separator: "\n").first { $0.hasPrefix("SUM") }
        try #require(reference != nil)
        let app = try w.start([bin])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(500_000)
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        #expect(!w.log().contains("SUM"), "finished before the checkpoint: make the work longer")
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(reap(app, within: 30).map { exitCode($0) } == 0)
        #expect(w.log().split(separator: "\n").contains { $0 == reference! }, "\(w.log()) vs \(reference!)")
    }

    @Test("python3 with 4 threads updating shared counters under a lock")
    func pythonThreads() throws {
        let w = try World("pythreads")
        let py = try python3Executable()
        let script = """
        import threading
        lock = threading.Lock()
        counts = [0] * 4
        total = [0]
        def work(i):
            for _ in range(1500000):
                with lock:
                    counts[i] += 1
                    total[0] += 1
        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        print("READY", flush=True)
        for t in ts: t.start()
        for t in ts: t.join()
        print("RESULT", total[0], sum(counts), flush=True)
        """
        let app = try w.start([py, "-u", "-c", script])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(300_000)
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        #expect(!w.log().contains("RESULT"), "finished before the checkpoint")
        try #require(try w.ssi("restart", "\(app)").status == 0)
        #expect(reap(app, within: 60).map { exitCode($0) } == 0)
        #expect(w.log().contains("RESULT 6000000 6000000"), "\(w.log())")
    }

    @Test("the same application checkpointed, killed and restarted 10 times in a row")
    func tenTimes() throws {
        let w = try World("ten")
        let app = try w.start([try TestEnv.fixture("threads")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        // Each thread's CPUs: the restorer pins itself and what it creates to one CPU while
        // it works (Restart.swift); every thread must have its own back.
        func cpus() -> [String] {
            let tasks = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(app)/task")) ?? []).sorted()
            return tasks.map { t in
                let status = (try? String(contentsOfFile: "/proc/\(app)/task/\(t)/status", encoding: .utf8)) ?? ""
                return t + ":" + (status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") } ?? "?")
            }
        }
        let before = cpus()
        #expect(before.count > 1, "the fixture has threads: \(before)")
        // A checkpoint that lets it go on: the dump pins every seized task to its own CPU
        // (DumpPin) and must give each its mask back.
        let plain = try w.ssi("checkpoint", "\(app)")
        try #require(plain.status == 0, "\(plain.output)")
        #expect(cpus() == before, "after a checkpoint, each thread's CPUs as before")
        for round in 1...10 {
            let ck = try w.checkpointKill(app)
            try #require(ck.status == 0, "round \(round): \(ck.output)")
            #expect(ck.field("Version") == "\(round + 1)")
            let rs = try w.ssi("restart", "\(app)")
            try #require(rs.status == 0, "round \(round): \(rs.output)")
            #expect(cpus() == before, "round \(round): each thread's CPUs as before the checkpoint")
        }
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS"), "\(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
    }
}
