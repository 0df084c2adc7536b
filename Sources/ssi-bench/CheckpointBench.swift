import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench checkpoint`: for each size, a process with that much random memory
/// (Tests/Fixtures/frozenmeter.c) is checkpointed and left running, then checkpointed with
/// --kill and restored, `rounds` times. Reported: wall times, and the frozen time the
/// application itself measured (the longest gap of its own CLOCK_MONOTONIC loop, read from
/// its stats page), median and worst; after each restore the process checks every page.
/// With --compare-criu the same rounds run through a CRIU binary too, alternating.
struct CheckpointBenchmark {
    var sizes: [Int], rounds: Int, dir: String, dirtyPerMs: Int
    /// The application sleeps this long between readings (usleep: the relative sleep with
    /// no buffer for the time left that a checkpoint must measure); 0: it spins, and takes a core.
    var sleepMicroseconds: Int
    var criu: String?
    /// --precopy / --no-precopy; nil: the engine's default (on from 64 MiB).
    var precopy: Bool?

    static let usage = "checkpoint [--sizes 0,256,1024] [--rounds N] [--dir DIR] [--dirty PAGES_PER_MS] [--sleep-us N] [--precopy|--no-precopy] [--compare-criu PATH]"

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        sizes = try o.sizes("--sizes", default: [0, 256, 1024])
        rounds = try o.int("--rounds", default: 5, in: 1...10_000)
        dir = try o.text("--dir") ?? "/dev/shm/ssi-bench"
        dirtyPerMs = try o.int("--dirty", default: 0, in: 0...1_000_000)
        sleepMicroseconds = try o.int("--sleep-us", default: 1000, in: 0...10_000_000)
        criu = try o.text("--compare-criu").map(BenchArgs.criu)
        precopy = o.flag("--precopy") ? true : o.flag("--no-precopy") ? false : nil
        try o.finish()
    }

    /// One step's figures over the rounds, in seconds.
    struct Samples {
        var values = [Double]()
        mutating func add(_ v: Double) { values.append(v) }
        var median: Double { values.isEmpty ? .nan : values.sorted()[values.count / 2] }
        var worst: Double { values.max() ?? .nan }
    }

    /// What one checkpointer measured for one size.
    struct Figures {
        var checkpoint = Samples(), seen = Samples(), engineFrozen = Samples(), kill = Samples(), restore = Samples()
        var checks = 0, checksPassed = 0
    }

    func run() throws {
        try BenchArgs.prepare("ssi-bench checkpoint", directory: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let meter = try BenchProcess.compile("frozenmeter", into: dir)
        print("images on \(dir); \(rounds) rounds per size; the application rewrites \(dirtyPerMs) pages/ms and " +
              (sleepMicroseconds > 0 ? "sleeps \(sleepMicroseconds) µs between clock readings" : "spins on the clock") +
              "; pre-copy " + (precopy.map { $0 ? "always" : "never" } ?? "from 64 MiB"))
        for mib in sizes {
            var ours = Figures(), theirs = Figures()
            let noise = try measureSize(mib, meter: meter, ours: &ours, theirs: &theirs)
            report(mib, noise: noise, ours, criu == nil ? nil : theirs)
        }
    }

    /// Runs every round for one size; returns the longest gap seen with no checkpoint at all
    /// over a comparable time (the machine's own noise).
    private func measureSize(_ mib: Int, meter: String, ours: inout Figures, theirs: inout Figures) throws -> Double {
        let app = try BenchProcess(meter: meter, mib: mib, dirtyPerMs: dirtyPerMs, sleepMicroseconds: sleepMicroseconds, dir: dir)
        defer { app.stop() }
        let noise = app.noiseFloor(seconds: 0.5)
        for _ in 0..<rounds {
            try ssiRound(app, &ours)
            if let criu { try CRIURunner(binary: criu, dir: "\(dir)/criu").round(app, &theirs) }
        }
        return noise
    }

    private func ssiRound(_ app: BenchProcess, _ f: inout Figures) throws {
        let store = SnapshotStore(root: "\(dir)/chkpt")
        let engine = CheckpointEngine(store: store)
        var o = CheckpointEngine.CheckpointOptions()
        o.precopy = precopy
        app.resetGap()
        var t = DispatchTime.now()
        let ck = try engine.checkpoint(app: app.pid, options: o)
        f.checkpoint.add(seconds(since: t))
        f.engineFrozen.add(ck.frozenSeconds)
        f.seen.add(app.settledGap())
        try? FileManager.default.removeItem(atPath: ck.directory)

        o.killSignal = .kill
        t = DispatchTime.now()
        let ck2 = try engine.checkpoint(app: app.pid, options: o)
        f.kill.add(seconds(since: t))
        app.reap()
        t = DispatchTime.now()
        _ = try engine.restart(app: app.pid, version: ck2.version)
        f.restore.add(seconds(since: t))
        try? FileManager.default.removeItem(atPath: ck2.directory)
        f.checks += 1
        if try app.checkMemory() { f.checksPassed += 1 }
    }

    private func report(_ mib: Int, noise: Double, _ ours: Figures, _ theirs: Figures?) {
        print("\(mib) MiB of random data (the application's own gaps with no checkpoint: up to \(ms(noise))):")
        let header = "  step                                   median      worst" + (theirs == nil ? "" : "   CRIU median    worst   ratio")
        print(header)
        func line(_ name: String, _ a: Samples, _ b: Samples?) {
            var s = name.padding(toLength: 37, withPad: " ", startingAt: 0) + ms(a.median).leftPad(10) + ms(a.worst).leftPad(11)
            if let b { s += ms(b.median).leftPad(14) + ms(b.worst).leftPad(9) + String(format: "%8.2f", a.median / b.median) }
            print("  " + s)
        }
        line("checkpoint, left running (wall)", ours.checkpoint, theirs?.checkpoint)
        line("frozen as the application saw it", ours.seen, theirs?.seen)
        line("frozen, engine's own timer", ours.engineFrozen, nil)
        line("checkpoint --kill (wall)", ours.kill, theirs?.kill)
        line("restore (wall)", ours.restore, theirs?.restore)
        print("  memory checked by the application after restore: \(ours.checksPassed)/\(ours.checks) PASS" +
              (theirs.map { ", CRIU \($0.checksPassed)/\($0.checks) PASS" } ?? ""))
    }

    private func ms(_ s: Double) -> String { s.isNaN ? "-" : s >= 1 ? String(format: "%.3f s", s) : String(format: "%.1f ms", s * 1000) }
    private func seconds(since t: DispatchTime) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e9 }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

/// The measured application: frozenmeter, our child, with its stats page in a file.
final class BenchProcess {
    private(set) var pid: Int32
    let log: String
    let statsPath: String
    private var checksSeen = 0

    static func compile(_ name: String, into dir: String) throws -> String {
        let out = "\(dir)/\(name)"
        let src = "\(TreeBenchmark.repoRoot)/Tests/Fixtures/\(name).c"
        let r = try Spawn.run(["/usr/bin/gcc", "-O2", "-o", out, src], SpawnOptions())
        guard r.exitCode == 0 else { throw SSIError(.system, "gcc \(src) failed", hint: "install gcc, or run from a checkout of the repository") }
        return out
    }

    init(meter: String, mib: Int, dirtyPerMs: Int, sleepMicroseconds: Int, dir: String) throws {
        log = "\(dir)/meter-\(mib).log"
        statsPath = "\(dir)/meter-\(mib).stats"
        unlink(statsPath)
        var o = SpawnOptions()
        o.standardInput = .null
        o.standardOutput = .file(log, append: false)
        o.standardError = .standardOutput
        // Its own session, as `ssi run` gives: a snapshot holds the session it leads.
        o.newSession = true
        pid = try Spawn.start([meter, "\(mib)", statsPath, "\(dirtyPerMs)", "\(sleepMicroseconds)"], o)
        guard waitLog({ $0.contains("READY") }, seconds: 120) else {
            stop()
            throw SSIError(.system, "frozenmeter \(mib) did not start: \(text())")
        }
        usleep(200_000)
    }

    func text() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    func waitLog(_ cond: (String) -> Bool, seconds: Double) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if cond(text()) { return true }
            usleep(5_000)
        }
        return false
    }

    /// The stats page: max gap (ns) at offset 0.
    private func gapWord(write value: UInt64? = nil) -> UInt64 {
        let fd = open(statsPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var v: UInt64 = value ?? 0
        if value != nil { _ = pwrite(fd, &v, 8, 0) } else { _ = pread(fd, &v, 8, 0) }
        return v
    }

    func resetGap() { _ = gapWord(write: 0) }

    /// The longest gap since the reset, once the application has run a little after the
    /// checkpoint (the gap is only recorded when the loop runs again).
    func settledGap() -> Double {
        usleep(50_000)
        return Double(gapWord()) / 1e9
    }

    func noiseFloor(seconds: Double) -> Double {
        resetGap()
        usleep(UInt32(seconds * 1e6))
        return Double(gapWord()) / 1e9
    }

    /// Waits for the killed process (our child, or reparented to us) to be gone.
    func reap() {
        var st: Int32 = 0
        waitpid(pid, &st, 0)
    }

    /// Asks the restored process to check every page; true on CHECK PASS.
    func checkMemory() throws -> Bool {
        checksSeen += 1
        kill(pid, SIGUSR2)
        let want = checksSeen
        guard waitLog({ $0.components(separatedBy: "CHECK ").count - 1 >= want }, seconds: 120) else {
            throw SSIError(.system, "PID \(pid) did not check its memory after restore: \(text().suffix(500))")
        }
        let last = text().components(separatedBy: "CHECK ").last ?? ""
        if !last.hasPrefix("PASS") { print("  memory check FAILED after restore: \(last.prefix(300))") }
        return last.hasPrefix("PASS")
    }

    func stop() {
        kill(pid, SIGKILL)
        reap()
    }
}
