import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Checkpoint, kill, restart of one unmodified process: each test program sets up one kind of
/// state and checks it itself after restart (PASS/FAIL in its output).
@Suite("C/R of one process", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, cgroup freezer"))
struct SingleProcessTests {
    @Test("state survives checkpoint, kill, restart", arguments: ["memory", "fpu", "signals", "files", "piperead", "fdkinds", "unlinked", "onstack"])
    func programChecksItsState(program: String) throws {
        try World.checkAfterRestart(program) { w, _ in
            guard program == "files" else { return }
            // Another writer appends while the application is down: O_APPEND must write after it.
            let h = FileHandle(forWritingAtPath: "\(w.dir)/append.txt")!
            h.seekToEndOfFile(); h.write(Data("external\n".utf8)); h.closeFile()
        }
    }

    @Test("a process asleep in nanosleep wakes after restart, having slept the full time")
    func nanosleepResumes() throws {
        let w = try World("sleep")
        let app = try w.start([try TestEnv.fixture("sleeper")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(300_000)
        try #require(try w.checkpointKill(app).status == 0)
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(w.waitLog("PASS", 6), "\(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
        reap(app)
    }

    @Test("a Linux AIO context is refused in the middle of the memory dump, naming PID and ring; the process runs on, no version is written, and once it has let the context go it is checkpointed and restarted")
    func aioContextRefused() throws {
        try refusedUntilLetGo("aioctx", refusal: { ["PID \($0) has a Linux AIO context", "nothing was written"] }, letGo: "DESTROYED")
    }

    /// A fixture whose state is refused at checkpoint (`refusal`: the phrases, given its PID):
    /// the process runs on; at a first SIGUSR1 it lets the state go and prints `letGo`; then
    /// it is checkpointed, killed and restarted, and checks itself at a second SIGUSR1.
    private func refusedUntilLetGo(_ fixture: String, refusal: (Int32) -> [String], letGo: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws {
        let w = try World(fixture)
        let app = try w.start([try TestEnv.fixture(fixture)])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"), sourceLocation: sourceLocation)
        try w.expectRefused(app, refusal(app), sourceLocation: sourceLocation)
        kill(app, SIGUSR1)
        #expect(w.waitLog(letGo), "\(w.log())", sourceLocation: sourceLocation)
        try #require(try w.checkpointKill(app).status == 0, sourceLocation: sourceLocation)
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)", sourceLocation: sourceLocation)
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS"), "\(w.log())", sourceLocation: sourceLocation)
        #expect(!w.log().contains("FAIL"), "\(w.log())", sourceLocation: sourceLocation)
        reap(app)
    }

    @Test("TCP urgent data not read yet is refused by name (it was lost silently); the process runs on, and once it has read it the connection is checkpointed and restarted whole")
    func tcpUrgentDataRefused() throws {
        try refusedUntilLetGo("tcpurgent", refusal: { ["PID \($0) fd", "urgent data (MSG_OOB) not read yet", "nothing was written"] }, letGo: "OOB-READ")
    }

    @Test("a root process in a user namespace of its own (unshare -U) is refused by name: it came back in ssi's, with ssi's capabilities", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"), "needs /usr/bin/unshare"))
    func ownUserNamespaceRefused() throws {
        let w = try World("userns")
        let app = try w.start(["/usr/bin/unshare", "-Ur", "/bin/sleep", "60"])
        defer { w.cleanUp(app) }
        usleep(300_000)
        try w.expectRefused(app, ["PID \(app) is in a user namespace of its own", "nothing was written"])
    }

    @Test("a program whose executable was replaced after the checkpoint (a package upgrade) is refused at restart, naming the file and both versions; put back as it was, it restarts")
    func replacedExecutableRefused() throws {
        let w = try World("replaced")
        let exe = "\(w.dir)/mysleep", fm = FileManager.default
        try fm.copyItem(atPath: "/bin/sleep", toPath: exe)
        let original = try fm.attributesOfItem(atPath: exe)[.modificationDate] as! Date
        let app = try w.start([exe, "60"])
        defer { w.cleanUp(app) }
        usleep(300_000)
        try #require(try w.checkpointKill(app).status == 0)
        reap(app)
        // Replaced as dpkg does: a new file renamed over the old one.
        try fm.copyItem(atPath: "/bin/cat", toPath: exe + ".new")
        _ = rename(exe + ".new", exe)
        let refused = try w.ssi("restart", "\(app)")
        #expect(refused.status != 0 && refused.output.contains("the file \(exe) it runs") && refused.output.contains("changed since the checkpoint")
                && refused.output.contains("nothing was restarted"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(app)"), "nothing runs after the refusal")
        try fm.removeItem(atPath: exe)
        try fm.copyItem(atPath: "/bin/sleep", toPath: exe)
        try fm.setAttributes([.modificationDate: original], ofItemAtPath: exe)
        let rs = try w.ssi("restart", "\(app)")
        #expect(rs.status == 0, "put back as it was, it restarts: \(rs.output)")
        reap(app)
    }

    @Test("a python3 loop keeps counting, with no number lost or repeated")
    func pythonCounts() throws {
        let w = try World("python")
        let exe = try python3Executable()
        try #require(!exe.isEmpty)
        let app = try w.start([exe, "-u", "-c", "import time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.02)"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("\n20\n"))
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        let before = w.log().split(separator: "\n").count
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(waitUntil(10) { w.log().split(separator: "\n").count > before + 20 })
        let numbers = w.log().split(separator: "\n").compactMap { Int($0) }
        #expect(numbers == Array(0..<numbers.count), "sequence broken: \(numbers.suffix(40))")
    }
}
