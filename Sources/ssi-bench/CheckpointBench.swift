import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Dump, frozen and restore times of a process with a large random-filled heap, checkpointed
/// to tmpfs, killed and restarted; and the frozen time of a small process (median of 20).
struct CheckpointBenchmark {
    var mib = 1024
    var dir = "/dev/shm/ssi-bench"
    var runs = 20

    init(args: [String]) throws {
        var i = 0
        while i < args.count {
            switch args[i] {
            case "--mib": mib = Int(args[i + 1]) ?? mib; i += 1
            case "--dir": dir = args[i + 1]; i += 1
            case "--runs": runs = Int(args[i + 1]) ?? runs; i += 1
            default: throw SSIError(.invalidArgument, "unknown option \(args[i])")
            }
            i += 1
        }
    }

    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    func compile(_ name: String) throws -> String {
        let out = "\(dir)/\(name)"
        let src = "\(CheckpointBenchmark.repoRoot)/Tests/Fixtures/\(name).c"
        guard shell("gcc -O2 -o '\(out)' '\(src)'") == 0 else { throw SSIError(.system, "gcc \(src) failed") }
        return out
    }

    func shell(_ cmd: String) -> Int32 {
        (try? Spawn.run(["/bin/sh", "-c", cmd], keepingFds))?.exitCode ?? -1
    }

    /// Our fds as they are, as posix_spawn without file actions passes them on.
    private var keepingFds: SpawnOptions {
        var o = SpawnOptions()
        o.keepFileDescriptors = true
        return o
    }

    /// Starts `argv` with stdout to `log`, stdin/stderr /dev/null, as our child.
    func start(_ argv: [String], log: String) throws -> Int32 {
        var o = SpawnOptions()
        o.standardInput = .null
        o.standardOutput = .file(log, append: false)
        o.standardError = .null
        return try Spawn.start(argv, o)
    }

    func waitFor(_ log: String, _ text: String, _ secs: Double = 60) throws -> String {
        let end = Date().addingTimeInterval(secs)
        while Date() < end {
            if let s = try? String(contentsOfFile: log, encoding: .utf8), let line = s.split(separator: "\n").last(where: { $0.hasPrefix(text) }) {
                return String(line)
            }
            usleep(10_000)
        }
        throw SSIError(.system, "timed out waiting for '\(text)' in \(log)")
    }

    func killReap(_ pid: Int32) {
        kill(pid, SIGKILL)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
    }

    func run() throws {
        try requireRoot("ssi-bench checkpoint")
        // Processes of killed trees are reparented to us and reaped here (PID 1 may not).
        Prctl.becomeSubreaper()
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = CheckpointEngine(store: SnapshotStore(root: "\(dir)/chkpt"))

        // 1. The big process.
        let big = try compile("bigmem")
        let log = "\(dir)/big.log"
        let pid = try start([big, "\(mib)"], log: log)
        let ready = try waitFor(log, "READY")
        let sumBefore = ready.split(separator: " ").last.map(String.init) ?? ""
        let t0 = DispatchTime.now()
        var o = CheckpointEngine.CheckpointOptions()
        o.killSignal = .kill
        let ck = try engine.checkpoint(app: pid, options: o)
        let dump = seconds(since: t0)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        let t1 = DispatchTime.now()
        let rs = try engine.restart(app: pid, version: ck.version)
        let restore = seconds(since: t1)
        kill(pid, SIGUSR1)
        let sumAfter = try waitFor(log, "SUM").split(separator: " ").last.map(String.init) ?? ""
        killReap(pid)
        let pagesGiB = Double(ck.pageBytes) / Double(1 << 30)
        print("process with a \(mib) MiB random-filled heap, snapshot on \(dir) (\(String(format: "%.2f", pagesGiB)) GiB of pages):")
        print(String(format: "  dump (checkpoint --kill, total):  %.3f s   %.2f GiB/s", dump, pagesGiB / dump))
        print(String(format: "  frozen time:                      %.3f s", ck.frozenSeconds))
        print(String(format: "  restore (verify + rebuild):       %.3f s   %.2f GiB/s", rs.restoreSeconds, pagesGiB / restore))
        print("  memory checksum before/after:     \(sumBefore) / \(sumAfter) \(sumBefore == sumAfter ? "(equal)" : "(DIFFERENT)")")

        // 2. Frozen time of a small process, median of `runs` checkpoints.
        let counter = try compile("counter")
        let small = try start([counter], log: "\(dir)/small.log")
        _ = try waitFor("\(dir)/small.log", "1")
        var frozen = [Double]()
        var total = [Double]()
        for _ in 0..<runs {
            let t = DispatchTime.now()
            let r = try engine.checkpoint(app: small)
            total.append(seconds(since: t))
            frozen.append(r.frozenSeconds)
        }
        killReap(small)
        frozen.sort(); total.sort()
        print("small process (counter), \(runs) checkpoints:")
        print(String(format: "  frozen time median %.3f ms (min %.3f, max %.3f); whole checkpoint median %.3f ms",
                     frozen[runs / 2] * 1000, frozen[0] * 1000, frozen[runs - 1] * 1000, total[runs / 2] * 1000))

        // 3. A 20-process tree, a process with 16 threads, and a 10-process tree sharing
        //    100 MiB copy-on-write.
        let tree = try compile("benchtree")
        for (label, args) in [("20-process tree", ["20", "1", "1"]), ("process with 16 threads", ["1", "16", "1"]),
                              ("10-process tree sharing 100 MiB copy-on-write", ["10", "1", "100"])] {
            let log = "\(dir)/tree.log"
            let root = try start([tree] + args, log: log)
            _ = try waitFor(log, "READY")
            let before = try pssOfTree(root)
            let t0 = DispatchTime.now()
            var o = CheckpointEngine.CheckpointOptions()
            o.killSignal = .kill
            let ck = try engine.checkpoint(app: root, options: o)
            let dumpSecs = seconds(since: t0)
            let snap = try SnapshotStore(root: "\(dir)/chkpt").open(app: root, version: ck.version)
            reapTree(snap.manifest.processes)
            let rs = try engine.restart(app: root, version: ck.version)
            usleep(200_000)
            let after = try pssOfTree(root)
            killTree(root)
            print("\(label):")
            print(String(format: "  frozen %.1f ms, checkpoint %.1f ms, restart %.1f ms; memory (PSS) %.0f MiB before, %.0f MiB after restart",
                         ck.frozenSeconds * 1000, dumpSecs * 1000, rs.restoreSeconds * 1000, Double(before) / 1024, Double(after) / 1024))
        }
    }

    /// The processes of the tree rooted at `root` (children from /proc/PID/task/PID/children).
    func treePIDs(_ root: Int32) -> [Int32] {
        var out = [root]
        var i = 0
        while i < out.count {
            let text = (try? String(contentsOfFile: "/proc/\(out[i])/task/\(out[i])/children", encoding: .utf8)) ?? ""
            out += text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            i += 1
        }
        return out
    }

    /// Proportional set size of the tree, kB (shared pages counted once in total).
    func pssOfTree(_ root: Int32) throws -> Int {
        treePIDs(root).reduce(0) { acc, pid in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
            let line = text.split(separator: "\n").first { $0.hasPrefix("Pss:") } ?? ""
            return acc + (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0)
        }
    }

    /// Reaps the killed processes of a snapshot: the root is our child, and its children are
    /// reparented to us when it dies (we are a subreaper).
    func reapTree(_ pids: [Int32]) {
        var st: Int32 = 0
        let deadline = Date().addingTimeInterval(10)
        while pids.contains(where: { kill($0, 0) == 0 }) && Date() < deadline {
            if waitpid(-1, &st, WNOHANG) <= 0 { usleep(1000) }
        }
    }

    func killTree(_ root: Int32) {
        for pid in treePIDs(root).reversed() { kill(pid, SIGKILL) }
        usleep(100_000)
        var st: Int32 = 0
        while waitpid(-1, &st, WNOHANG) > 0 {}
    }

    func seconds(since t: DispatchTime) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e9 }
}
