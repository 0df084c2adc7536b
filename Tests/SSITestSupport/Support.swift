import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// What the tests need to know about where they run, and small helpers to run real programs.
public enum TestEnv {
    public static let isRoot = geteuid() == 0

    /// The repository root, from this file's path (Tests/SSITestSupport/Support.swift).
    public static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The folder holding the built products: the test bundle sits beside `ssi`.
    public static let productsDir: String = {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // On Linux the bundle is an executable .xctest file in the products folder.
        if dir.lastPathComponent.hasSuffix(".xctest") { dir.deleteLastPathComponent() }
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("ssi").path) { return dir.path }
        return "\(repoRoot)/.build/debug"
    }()

    public static var ssi: String { "\(productsDir)/ssi" }

    /// Compiles Tests/Fixtures/NAME.c (once per test run) and returns the binary's path.
    public static func fixture(_ name: String) throws -> String {
        let out = "\(productsDir)/fixtures"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let bin = "\(out)/\(name)"
        let src = "\(repoRoot)/Tests/Fixtures/\(name).c"
        let lock = fixtureLock
        lock.lock()
        defer { lock.unlock() }
        if !built.contains(name) {
            let r = try run(["/usr/bin/gcc", "-O1", "-g", "-Wall", "-o", bin, src])
            guard r.status == 0 else { throw TestFailure("gcc \(src) failed: \(r.stderr)") }
            built.insert(name)
        }
        return bin
    }
    nonisolated(unsafe) private static var built = Set<String>()   // guarded by fixtureLock
    private static let fixtureLock = NSLock()

    /// Why pages written by a process cannot be tracked here (DirtyTracker, pre-copy), or
    /// nil: it needs root (ptrace of the process) and Linux 6.7 (UFFD_FEATURE_WP_ASYNC,
    /// PAGEMAP_SCAN).
    public static let dirtyTrackingMissing: String? = {
        if !isRoot { return "needs root (ptrace of the tracked process)" }
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        guard parts.count >= 2 else { return "cannot read the kernel release \(release)" }
        return (parts[0], parts[1]) >= (6, 7) ? nil : "kernel \(release) predates UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN (6.7)"
    }()

    /// PID 1 on the CI machines does not reap orphans: restarted and background processes
    /// are reparented to us instead, and we reap them (tests call `reap`).
    public static func becomeSubreaper() { Prctl.becomeSubreaper() }

    public static func makeTempDir(_ tag: String) throws -> String {
        let dir = NSTemporaryDirectory() + "ssi-test-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var output: String { stdout + stderr }
}

/// Runs a program to completion; stdout/stderr are captured through files, stdin is
/// /dev/null and every other fd is closed (so no fd of ours leaks into what it starts).
public func run(_ argv: [String], env: [String: String] = [:], cwd: String? = nil, stdoutPath: String? = nil) throws -> CommandResult {
    let tmp = try TestEnv.makeTempDir("cmd")
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    let outPath = stdoutPath ?? "\(tmp)/out", errPath = stdoutPath ?? "\(tmp)/err"
    var o = SpawnOptions()
    o.standardInput = .null
    o.standardOutput = .file(outPath, append: true)
    o.standardError = .file(errPath, append: true)
    o.directory = cwd
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in env { environment[k] = v }
    o.environment = environment
    let status: WaitStatus
    do { status = try Spawn.run(argv, o) } catch { throw TestFailure("\(error)") }
    let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let err = stdoutPath == nil ? ((try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "") : ""
    return CommandResult(status: status.exitCode, stdout: out, stderr: err)
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
public func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Waits for a child (or adopted orphan) to end and reaps it; returns its wait status, or
/// nil if it is still running after `seconds`.
@discardableResult
public func reap(_ pid: Int32, within seconds: Double = 5) -> Int32? {
    var status: Int32 = 0
    var result: Int32? = nil
    _ = waitUntil(seconds) {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { result = status; return true }
        return r < 0   // not our child (already reaped elsewhere)
    }
    return result
}

/// A process state letter from /proc/PID/stat ("R", "S", "T", "Z"...), or nil if gone.
public func processState(_ pid: Int32) -> Character? { Proc.state(pid) }

/// The exit code of a wait status, or 128+signal when it was killed.
public func exitCode(_ status: Int32) -> Int32 { WaitStatus(raw: status).exitCode }

/// A fixture of Tests/Fixtures run as a child of the test (which becomes a subreaper), its
/// output in a log of its own temporary directory, waited for until it says READY.
/// `stop()` kills it if it still runs, reaps it and removes the directory.
public final class LoggedFixture {
    public let pid: Int32
    public let dir: String
    public var log: String { "\(dir)/out.log" }

    public init(_ name: String, _ args: [String] = []) throws {
        TestEnv.becomeSubreaper()
        dir = try TestEnv.makeTempDir(name)
        pid = try Spawn.start([try TestEnv.fixture(name)] + args, SpawnOptions.logging(to: "\(dir)/out.log"))
        guard waitUntil(10, { text().contains("READY") }) else {
            stop()
            throw TestFailure("\(name) never said READY: \(text())")
        }
    }

    private var ended = false

    /// Everything it printed so far.
    public func text() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// Its wait status once it ends by itself, nil if it still runs after `seconds`.
    public func exit(within seconds: Double) -> Int32? {
        let status = reap(pid, within: seconds)
        if status != nil { ended = true }
        return status
    }

    public func stop() {
        // Not once reaped: its PID may be another process's by now.
        if !ended { kill(pid, SIGKILL); _ = reap(pid) }
        ended = true
        try? FileManager.default.removeItem(atPath: dir)
    }
}
