import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Process trees: a 20-process tree, a process with 16 threads, and a 10-process tree
/// sharing 100 MiB copy-on-write: frozen, checkpoint and restart times, memory before/after.
/// Then the shapes whose cost once grew with the square of their size (benchfds.c), at
/// `--fds N` and N/4, so that a reader sees the growth: N eventfds, and N unix sockets, in
/// one epoll set, N/2 pipes, N fds on 64 files, N small memory areas.
struct TreeBenchmark {
    static let usage = "trees [--dir DIR] [--fds N (4000; 0: none)]"
    var dir: String
    var fds: Int

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        dir = try o.text("--dir") ?? "/dev/shm/ssi-bench"
        fds = try o.int("--fds", default: 4000, in: 0...100_000)
        try o.finish()
    }

    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    func compile(_ name: String) throws -> String {
        let out = "\(dir)/\(name)"
        let src = "\(TreeBenchmark.repoRoot)/Tests/Fixtures/\(name).c"
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
        try BenchArgs.prepare("ssi-bench trees", directory: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let engine = CheckpointEngine(store: SnapshotStore(root: "\(dir)/chkpt"))

        // 3. A 20-process tree, a process with 16 threads, and a 10-process tree sharing
        //    100 MiB copy-on-write.
        let tree = try compile("benchtree")
        var shapes: [(String, [String])] = [("20-process tree", [tree, "20", "1", "1"]), ("process with 16 threads", [tree, "1", "16", "1"]),
                                            ("10-process tree sharing 100 MiB copy-on-write", [tree, "10", "1", "100"])]
        if fds > 0 {
            let many = try compile("benchfds")
            for n in [fds / 4, fds] {
                shapes += [("\(n) eventfds in one epoll set", [many, "epoll", "\(n)"]), ("\(n) unix sockets in one epoll set", [many, "sockets", "\(n)"]),
                           ("\(n / 2) pipes", [many, "pipes", "\(n)"]),
                           ("\(n) fds on 64 files", [many, "files", "\(n)", dir]), ("\(n) small memory areas", [many, "areas", "\(n)"])]
            }
        }
        for (label, argv) in shapes {
            let log = "\(dir)/tree.log"
            let root = try start(argv, log: log)
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
