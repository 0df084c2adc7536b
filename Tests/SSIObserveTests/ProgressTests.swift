import Foundation
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A pseudo-terminal pair (pty(7)): what is written to `follower` is read on `leader`.
struct PTY {
    let leader: Int32
    let follower: Int32
    /// posix_openpt(3) and friends, which Glibc's Swift module leaves out (they sit behind
    /// _XOPEN_SOURCE in stdlib.h): found by name in libc.
    static func libc<T>(_ name: String, as: T.Type) -> T {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { fatalError("libc has no \(name)") }
        return unsafeBitCast(sym, to: T.self)
    }

    init() throws {
        typealias IntOfInt = @convention(c) (Int32) -> Int32
        let openpt = Self.libc("posix_openpt", as: IntOfInt.self)
        let grant = Self.libc("grantpt", as: IntOfInt.self)
        let unlock = Self.libc("unlockpt", as: IntOfInt.self)
        let ptsname = Self.libc("ptsname", as: (@convention(c) (Int32) -> UnsafeMutablePointer<CChar>?).self)
        leader = openpt(O_RDWR | O_NOCTTY)
        guard leader >= 0, grant(leader) == 0, unlock(leader) == 0, let name = ptsname(leader) else {
            throw TestFailure("no pseudo-terminal: errno \(errno)")
        }
        follower = open(name, O_RDWR | O_NOCTTY)
        guard follower >= 0 else { throw TestFailure("open \(String(cString: name)): errno \(errno)") }
        _ = fcntl(leader, F_SETFL, fcntl(leader, F_GETFL) | O_NONBLOCK)
    }
    /// Everything written so far.
    func drain() -> String {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(leader, &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
    func close() { Glibc.close(leader); Glibc.close(follower) }
}

@Suite(.serialized) struct ProgressTests {
    @Test func modeFollowsTheOutputKind() throws {
        let pty = try PTY()
        defer { pty.close() }
        var p: [Int32] = [0, 0]
        #expect(pipe(&p) == 0)
        defer { close(p[0]); close(p[1]) }
        #expect(OperationProgress.mode(fd: pty.follower, json: false, forced: false) == .terminal)
        #expect(OperationProgress.mode(fd: pty.follower, json: true, forced: true) == .off)
        #expect(OperationProgress.mode(fd: p[1], json: false, forced: false) == .off)
        #expect(OperationProgress.mode(fd: p[1], json: false, forced: true) == .lines)
    }

    @Test(.timeLimit(.minutes(1))) func terminalLineIsRewrittenThenErased() throws {
        let pty = try PTY()
        defer { pty.close() }
        let moved = Counter()
        let p = OperationProgress("checkpoint 42", mode: .terminal, fd: pty.follower, delay: .zero, bytes: { moved.add(1 << 20) })
        p.start()
        var clock = PhaseClock()
        clock.mark("dump: memory")   // the engine's own call, forwarded to the current operation
        usleep(600_000)
        p.finish()
        let out = pty.drain()
        #expect(out.contains("\r\u{1b}[Kcheckpoint 42: dump: memory"), "\(out.debugDescription)")
        #expect(out.contains("MiB/s"))
        #expect(out.hasSuffix("\r\u{1b}[K"), "the line is erased at the end: \(out.debugDescription)")
        #expect(OperationProgress.current.withLock { $0 } == nil)
    }

    @Test(.timeLimit(.minutes(1))) func quickOperationsPrintNothing() throws {
        let pty = try PTY()
        defer { pty.close() }
        let p = OperationProgress("restart 42", mode: .terminal, fd: pty.follower, delay: .seconds(1))
        p.start()
        p.phase("verify snapshot")
        usleep(300_000)
        p.finish()
        #expect(pty.drain() == "")
    }

    @Test func plainLinesPerPhaseWhenAsked() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let p = OperationProgress("restart 7", mode: .lines, fd: fds[1])
        p.start()
        p.phase("rebuild processes")
        p.finish()
        close(fds[1])
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(fds[0], &buf, buf.count)
        close(fds[0])
        let text = String(decoding: buf[0..<max(0, n)], as: UTF8.self)
        #expect(text.hasPrefix("ssi: restart 7: rebuild processes ("), "\(text)")
        #expect(!text.contains("\u{1b}"))
    }

    /// The whole command: on a pty (script(1) gives it one) the line appears; in a pipe it
    /// does not; in a pipe with --progress, plain lines do.
    @Test(.timeLimit(.minutes(2)), .enabled(if: TestEnv.isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/script"),
                                           "needs root (ptrace) and script(1)"))
    func checkpointShowsProgressOnATerminalOnly() throws {
        TestEnv.becomeSubreaper()
        let dir = try TestEnv.makeTempDir("progress")
        let env = ["SSI_CHKPT_DIR": "\(dir)/chkpt", "SSI_PROGRESS_DELAY_MS": "0", "SSI_CONTROL": "\(dir)/no-daemon.sock"]
        let appFile = "\(dir)/app"
        let started = try run([TestEnv.ssi, "run", "-b", "-o", appFile, "--", try TestEnv.fixture("bigmem"), "256"], env: env, stdoutPath: "\(dir)/out.log")
        guard started.status == 0, let app = Int32((try String(contentsOfFile: appFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestFailure("ssi run failed: \(started.output)")
        }
        defer { kill(app, SIGKILL); _ = Proc.reapAll() }
        // Wait until it has filled its memory (it prints READY).
        for _ in 0..<100 where !((try? String(contentsOfFile: "\(dir)/out.log", encoding: .utf8)) ?? "").contains("READY") { usleep(100_000) }
        let tty = try run(["/usr/bin/script", "-qec", "\(TestEnv.ssi) checkpoint \(app)", "/dev/null"], env: env)
        #expect(tty.status == 0, "\(tty.output)")
        #expect(tty.output.contains("\u{1b}[Kcheckpoint \(app): "), "no progress line on a terminal: \(tty.output.debugDescription)")
        #expect(tty.output.contains("Version: 1"))
        let piped = try run([TestEnv.ssi, "checkpoint", "\(app)"], env: env)
        #expect(piped.status == 0 && piped.stderr.isEmpty, "progress in a pipe: \(piped.stderr.debugDescription)")
        let lines = try run([TestEnv.ssi, "checkpoint", "--progress", "\(app)"], env: env)
        #expect(lines.stderr.contains("ssi: checkpoint \(app): ") && !lines.stderr.contains("\u{1b}"), "\(lines.stderr.debugDescription)")
        let json = try run([TestEnv.ssi, "checkpoint", "--json", "--progress", "\(app)"], env: env)
        #expect(json.stderr.isEmpty && json.stdout.hasPrefix("{"))
    }
}

/// A thread-safe running total, for a fake byte counter.
final class Counter: @unchecked Sendable {   // guarded by lock
    private let lock = NSLock()
    private var n: UInt64 = 0
    func add(_ k: UInt64) -> UInt64 { lock.lock(); defer { lock.unlock() }; n += k; return n }
}
