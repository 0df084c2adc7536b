import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The same rounds through a CRIU binary (`--compare-criu PATH`): `criu dump
/// --leave-running`, `criu dump` (which kills), `criu restore -d`. CRIU needs --shell-job
/// because the measured process shares our session. Images go to a fresh directory each
/// time, on the same file system as ours.
struct CRIURunner {
    let binary: String
    let dir: String

    func round(_ app: BenchProcess, _ f: inout CheckpointBenchmark.Figures) throws {
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        app.resetGap()
        f.checkpoint.add(try criu(["dump", "-t", "\(app.pid)", "-D", "\(dir)/a", "--shell-job", "--leave-running"], what: "dump --leave-running of PID \(app.pid)"))
        f.seen.add(app.settledGap())
        f.kill.add(try criu(["dump", "-t", "\(app.pid)", "-D", "\(dir)/b", "--shell-job"], what: "dump of PID \(app.pid)"))
        app.reap()
        // criu restore -d leaves the restored tree to us: criu exits, we are the subreaper.
        f.restore.add(try criu(["restore", "-D", "\(dir)/b", "--shell-job", "-d"], what: "restore of PID \(app.pid)"))
        f.checks += 1
        if try app.checkMemory() { f.checksPassed += 1 }
    }

    /// Runs criu with `args`; returns the wall time. Its log is kept in the image directory
    /// and quoted on failure.
    private func criu(_ args: [String], what: String) throws -> Double {
        let images = args[args.firstIndex(of: "-D")! + 1]
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        let t = DispatchTime.now()
        let r = try Spawn.run([binary] + args + ["-o", "criu.log"], SpawnOptions.logging(to: "\(dir)/criu.out"))
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e9
        guard r.exitCode == 0 else {
            let log = (try? String(contentsOfFile: "\(images)/criu.log", encoding: .utf8)) ?? ""
            throw SSIError(.system, "\(binary) \(what) failed (exit \(r.exitCode)): \(log.suffix(800))", hint: "run it by hand with -v4 to see why")
        }
        return secs
    }
}
