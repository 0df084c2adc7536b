import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench incremental`: a process of MIB MiB (Tests/Fixtures/generations.c) is
/// checkpointed, rewrites CHANGE% of its pages, and is checkpointed again (the figure: time
/// and bytes the second version adds on disk); then it changes again, is checkpointed with
/// --kill and restored from that version, and checks every page itself. Once into a store
/// without page pool (every version whole, as before issue 16) and once with it.
struct IncrementalBenchmark {
    var mib: Int, rounds: Int, dir: String

    static let usage = "incremental [--mib 256] [--rounds N] [--dir DIR]"

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        mib = try o.int("--mib", default: 256, in: 1...1 << 20)
        rounds = try o.int("--rounds", default: 3, in: 1...10_000)
        dir = try o.text("--dir") ?? "/dev/shm/ssi-bench-incremental"
        try o.finish()
    }

    struct Figures {
        var first = CheckpointBenchmark.Samples(), second = CheckpointBenchmark.Samples(), kill = CheckpointBenchmark.Samples(),
            restore = CheckpointBenchmark.Samples()
        var firstBytes: UInt64 = 0, secondBytes: UInt64 = 0, checks = 0, passed = 0
    }

    func run() throws {
        try BenchArgs.prepare("ssi-bench incremental", directory: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let program = try BenchProcess.compile("generations", into: dir)
        print("\(mib) MiB of random pages, 1% rewritten between versions; images on \(dir); \(rounds) rounds, alternating")
        var whole = Figures(), pooled = Figures()
        for r in 0..<rounds {
            try round(program, pool: false, r, &whole)
            try round(program, pool: true, r, &pooled)
        }
        func line(_ name: String, _ f: Figures) {
            print("  " + name.padding(toLength: 16, withPad: " ", startingAt: 0)
                  + String(format: "first %.3f s, %d MiB | second %.3f s, %.1f MiB | --kill %.3f s | restore %.3f s | checks %d/%d",
                           f.first.median, f.firstBytes >> 20, f.second.median, Double(f.secondBytes) / 1048576,
                           f.kill.median, f.restore.median, f.passed, f.checks))
        }
        line("whole versions", whole)
        line("page pool", pooled)
        print(String(format: "  second version with the pool: %.2f%% of the first's bytes, %.2f x its time",
                     100 * Double(pooled.secondBytes) / Double(max(1, pooled.firstBytes)), pooled.second.median / pooled.first.median))
    }

    private func round(_ program: String, pool: Bool, _ r: Int, _ f: inout Figures) throws {
        let store = SnapshotStore(root: "\(dir)/chkpt-\(pool ? "pool" : "whole")-\(r)", pool: pool)
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        let engine = CheckpointEngine(store: store)
        let log = "\(dir)/generations.log"
        var o = SpawnOptions()
        o.standardInput = .null
        o.standardOutput = .file(log, append: false)
        o.standardError = .standardOutput
        o.newSession = true
        let pid = try Spawn.start([program, "\(mib)"], o)
        var st: Int32 = 0
        defer { kill(pid, SIGKILL); waitpid(pid, &st, 0) }
        func text() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        func wait(_ s: String) throws {
            let end = Date().addingTimeInterval(120)
            while !text().contains(s) {
                if Date() > end { throw SSIError(.system, "generations \(mib): no \"\(s)\" in its output: \(text().suffix(300))") }
                usleep(5_000)
            }
        }
        try wait("READY")
        var t = DispatchTime.now()
        let v1 = try engine.checkpoint(app: pid)
        f.first.add(seconds(since: t))
        f.firstBytes = try store.manifest(app: pid, version: v1.version).addedBytes
        kill(pid, SIGUSR1)
        try wait("CHANGED 1")
        t = DispatchTime.now()
        let v2 = try engine.checkpoint(app: pid)
        f.second.add(seconds(since: t))
        f.secondBytes = try store.manifest(app: pid, version: v2.version).addedBytes
        kill(pid, SIGUSR1)
        try wait("CHANGED 2")
        var k = CheckpointEngine.CheckpointOptions()
        k.killSignal = .kill
        t = DispatchTime.now()
        let v3 = try engine.checkpoint(app: pid, options: k)
        f.kill.add(seconds(since: t))
        waitpid(pid, &st, 0)
        t = DispatchTime.now()
        _ = try engine.restart(app: pid, version: v3.version)
        f.restore.add(seconds(since: t))
        kill(pid, SIGTERM)
        f.checks += 1
        let end = Date().addingTimeInterval(120)
        while !text().contains("PASS") && !text().contains("FAIL") && Date() < end { usleep(10_000) }
        if text().contains("PASS") { f.passed += 1 } else { print("  memory check FAILED after restore: \(text().suffix(300))") }
    }

    private func seconds(since t: DispatchTime) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e9 }
}
