import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One test's world: its own snapshot directory and working directory, and the `ssi`
/// commands run against them, as a user would type them.
struct World {
    let dir: String
    let chkpt: String

    init(_ tag: String) throws {
        TestEnv.becomeSubreaper()
        dir = try TestEnv.makeTempDir(tag)
        chkpt = "\(dir)/chkpt"
    }

    func ssi(_ args: String...) throws -> CommandResult {
        try run([TestEnv.ssi] + args, env: ["SSI_CHKPT_DIR": chkpt], cwd: dir)
    }

    /// `ssi run -b` with the application's output in out.log; returns the application id.
    func start(_ argv: [String], log: String = "out.log") throws -> Int32 {
        let appFile = "\(dir)/app-\(UInt32.random(in: 0...UInt32.max))"
        let r = try run([TestEnv.ssi, "run", "-b", "--local", "-o", appFile, "--"] + argv, env: ["SSI_CHKPT_DIR": chkpt], cwd: dir,
                        stdoutPath: "\(dir)/\(log)")
        guard r.status == 0, let text = try? String(contentsOfFile: appFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestFailure("ssi run \(argv) failed (\(r.status)): \(r.output) \(self.log(log))")
        }
        return pid
    }

    /// The rest of the first log line that starts with `prefix` (a test program reporting an
    /// fd number, "fd 3"), or "?".
    func logValue(_ prefix: String) -> String {
        log().split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) } ?? "?"
    }

    /// The life of every test program in Tests/Fixtures: started with `ssi run`, checkpointed
    /// with --kill once it prints READY, `whileDown` run while it is gone, restarted, then sent
    /// SIGUSR1, on which it checks its own state, prints PASS or FAIL and exits.
    static func checkAfterRestart(_ program: String, whileDown: (World, Int32) throws -> Void = { _, _ in }) throws {
        let w = try World(program)
        let app = try w.start([try TestEnv.fixture(program)])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(200_000)
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        #expect(processState(app) == nil, "checkpoint --kill left PID \(app) alive")
        try whileDown(w, app)
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(processState(app) != nil)
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(w.log().contains("PASS") && !w.log().contains("FAIL"), "\(w.log())")
        let status = reap(app)
        #expect(status.map { exitCode($0) } == 0, "exit status \(String(describing: status)): \(w.log())")
    }

    func log(_ name: String = "out.log") -> String { (try? String(contentsOfFile: "\(dir)/\(name)", encoding: .utf8)) ?? "" }

    func waitLog(_ text: String, _ seconds: Double = 10, _ name: String = "out.log") -> Bool {
        waitUntil(seconds) { log(name).contains(text) }
    }

    /// A checkpoint of `app` that the engine must refuse: it fails with every one of
    /// `phrases` in its message, writes no version, and leaves the application running.
    func expectRefused(_ app: Int32, _ phrases: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try ssi("checkpoint", "\(app)")
        #expect(r.status != 0 && phrases.allSatisfy { r.stderr.contains($0) }, "wanted \(phrases): \(r.output)", sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: "\(chkpt)/\(app)/v1"), "a refused checkpoint wrote a version", sourceLocation: sourceLocation)
        usleep(100_000)
        #expect(processState(app) == "S" || processState(app) == "R", "the application must be left running, not \(String(describing: processState(app)))", sourceLocation: sourceLocation)
    }

    /// Waits for READY in the log, then checkpoints with --kill=9 and restarts, each step
    /// required to succeed.
    func readyKillRestart(_ app: Int32, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try #require(waitLog("READY"), "\(log())", sourceLocation: sourceLocation)
        try killAndRestart(app, sourceLocation: sourceLocation)
    }

    /// Checkpoints with --kill=9 (and `extra` options), reaps, and restarts: each step
    /// required to succeed.
    func killAndRestart(_ app: Int32, _ extra: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ck = try checkpointKill(app, extra)
        try #require(ck.status == 0, "checkpoint --kill=9 \(extra.joined(separator: " ")): \(ck.output)", sourceLocation: sourceLocation)
        let rs = try ssi("restart", "\(app)")
        try #require(rs.status == 0, "restart: \(rs.output)", sourceLocation: sourceLocation)
    }

    /// Checkpoints with --kill=9 and reaps every killed process (they are ours: we are the
    /// subreaper), so their PIDs are free for the restart.
    func checkpointKill(_ app: Int32, _ extra: [String] = [], env: [String: String] = [:]) throws -> CommandResult {
        let r = try run([TestEnv.ssi, "checkpoint", "--kill=KILL"] + extra + ["\(app)"], env: env.merging(["SSI_CHKPT_DIR": chkpt]) { _, b in b }, cwd: dir)
        if r.status == 0 {
            let pids = processes(app, version: r.field("Version"))
            for pid in pids { reap(pid) }
            // A child that died before its parent was still the parent's zombie, not ours, when
            // tried above; the parent's exit has since reparented it to us (the subreaper).
            for pid in pids where processState(pid) != nil { reap(pid) }
        }
        return r
    }

    /// The PIDs a snapshot holds, children first (from its manifest).
    func processes(_ app: Int32, version: String?) -> [Int32] {
        guard let v = version, let data = FileManager.default.contents(atPath: "\(chkpt)/\(app)/v\(v)/manifest.json"),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let pids = obj["processes"] as? [Int] else { return [app] }
        return pids.reversed().map { Int32($0) }
    }

    func killAndReap(_ pid: Int32) {
        kill(pid, SIGKILL)
        reap(pid)
    }

    func cleanUp(_ pids: Int32...) {
        for p in pids { if processState(p) != nil { killAndReap(p) } }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

extension CommandResult {
    func field(_ name: String) -> String? {
        stdout.split(separator: "\n").first { $0.hasPrefix("\(name): ") }.map { String($0.dropFirst(name.count + 2)) }
    }
}

/// The python3 interpreter itself, not a launcher in front of it (pyenv's shims are shell
/// scripts that exec it, and an application must be the process it checks): asked of
/// python3 once. Throws when there is none.
func python3Executable() throws -> String {
    let exe = try run(["python3", "-c", "import sys; print(sys.executable)"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    guard !exe.isEmpty else { throw TestFailure("python3 did not say where it is (sys.executable is empty)") }
    return exe
}
