import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// inotify instances, named FIFOs, interrupted sleeps and CLONE_FILES/CLONE_FS sharing,
/// each checked by a test program after checkpoint, kill and restart.
@Suite("C/R of inotify, FIFOs, sleeps and shared fd tables", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, open_by_handle_at"))
struct FileSystemTests {
    @Test("an eventfd, a timerfd and a signalfd inherited across fork are still one description each")
    func sharedAnonInodes() throws {
        try World.checkAfterRestart("sharedanon")
    }

    @Test("an inotify fd keeps its watches and their watch descriptors")
    func inotify() throws {
        try World.checkAfterRestart("inotify")
    }

    @Test("tail -f (GNU coreutils follows with inotify) prints what is appended after restart")
    func tailFollows() throws {
        let w = try World("tail")
        try #require(FileManager.default.createFile(atPath: "\(w.dir)/in.txt", contents: Data("first\n".utf8)))
        // -s 30: were tail to fall back to polling, it would look only every 30 s.
        let app = try w.start(["tail", "-s", "30", "-f", "in.txt"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("first"))
        usleep(200_000)
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(app)/fd")) ?? []
        let watching = fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(app)/fd/\($0)")) == "anon_inode:inotify" }
        try #require(watching, "tail does not use inotify here: nothing to test")
        try w.killAndRestart(app)
        let h = FileHandle(forWritingAtPath: "\(w.dir)/in.txt")!
        h.seekToEndOfFile(); h.write(Data("second\n".utf8)); h.closeFile()
        #expect(w.waitLog("second", 5), "\(w.log())")
        #expect(!w.log().contains("polling"), "\(w.log())")
    }

    @Test("named FIFOs keep their bytes and their ends across processes; a removed FIFO is recreated")
    func fifo() throws {
        try World.checkAfterRestart("fifo") { w, _ in
            try FileManager.default.removeItem(atPath: "\(w.dir)/f1")
        }
    }

    @Test("a shell pipeline through a named FIFO, checkpointed midway, killed, FIFO removed, restarted: output complete and in order")
    func fifoPipeline() throws {
        let w = try World("fifo-pipeline")
        let app = try w.start(["/bin/sh", "-c", "mkfifo p; (seq 1 300000 > p) & while read i; do echo $i; done < p > out; wait"])
        defer { w.cleanUp(app) }
        #expect(waitUntil(10) { (try? FileManager.default.attributesOfItem(atPath: "\(w.dir)/out")[.size] as? Int ?? 0) ?? 0 > 20000 })
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        try FileManager.default.removeItem(atPath: "\(w.dir)/p")
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(reap(app, within: 60).map { exitCode($0) } == 0)
        let lines = ((try? String(contentsOfFile: "\(w.dir)/out", encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(lines.count == 300_000, "\(lines.count) lines")
        #expect(lines.enumerated().allSatisfy { Int($0.element) == $0.offset + 1 }, "lines out of order or damaged")
    }

    @Test("restart refuses a FIFO path that became a regular file, or a watched path that is gone, and works once they are back",
          arguments: [("fifo", "f1"), ("inotify", "watched")])
    func refusedUntilPutBack(program: String, path: String) throws {
        let w = try World("\(program)-back")
        let app = try w.start([try TestEnv.fixture(program)])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(200_000)
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        let full = "\(w.dir)/\(path)"
        let aside = full + ".aside"
        try FileManager.default.moveItem(atPath: full, toPath: aside)
        if program == "fifo" { try #require(FileManager.default.createFile(atPath: full, contents: Data("not a fifo".utf8))) }
        let refused = try w.ssi("restart", "\(app)")
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("PID \(app) fd ") && refused.stderr.contains(full) && refused.stderr.contains("nothing was changed"), "\(refused.output)")
        #expect(processState(app) == nil, "a refused restart left PID \(app) behind")
        if program == "fifo" { try FileManager.default.removeItem(atPath: full) }
        try FileManager.default.moveItem(atPath: aside, toPath: full)
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        usleep(100_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
    }

    @Test("a child created with CLONE_FILES | CLONE_FS still shares its fd table and cwd with its parent")
    func cloneFiles() throws {
        try World.checkAfterRestart("clonefiles")
    }

    @Test("processes sharing an fd table but not with their parent fail the checkpoint, naming them")
    func sharedTableWithoutParent() throws {
        let w = try World("sharedorphans")
        let app = try w.start([try TestEnv.fixture("sharedorphans")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        let ck = try w.ssi("checkpoint", "\(app)")
        #expect(ck.status != 0)
        #expect(ck.stderr.contains("shares its fd table (CLONE_FILES) with PID") && ck.stderr.contains("but not with its own parent"), "\(ck.output)")
        #expect(ck.stderr.contains("nothing was written"), "\(ck.output)")
        #expect(w.waitLog("DONE 2", 10), "the application did not go on: \(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
    }

    @Test("an epoll instance shared by a dup and across fork comes back as one instance, its entries and their modes kept")
    func sharedEpoll() throws {
        let w = try World("sharedepoll")
        let app = try w.start([try TestEnv.fixture("sharedepoll")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("EPOLL"))
        usleep(200_000)
        try w.killAndRestart(app)
        usleep(100_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
        // The parent has exited, after its child: both verdicts are in the log.
        #expect(w.log().components(separatedBy: "PASS").count == 3 && !w.log().contains("FAIL"), "parent and child each say PASS: \(w.log())")
    }

    @Test("a shared epoll instance watched by another epoll set fails the checkpoint, naming its holders; the application goes on")
    func sharedEpollNested() throws {
        let w = try World("sharedepoll-nested")
        let app = try w.start([try TestEnv.fixture("sharedepoll"), "nested"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("EPOLL"))
        usleep(200_000)
        let ep = w.logValue("EPOLL ")
        let ck = try w.ssi("checkpoint", "\(app)")
        #expect(ck.status != 0)
        #expect(ck.stderr.contains("PID \(app) fd \(ep): an epoll instance shared by several fds (PID \(app) fd \(ep), PID \(app) fd ")
                && ck.stderr.contains("watches or is watched by another epoll set") && ck.stderr.contains("nothing was written"), "\(ck.output)")
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "the application did not go on: \(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
    }

    @Test("a parent blocked in vfork fails the checkpoint at once, naming its PID; the application goes on",
          .timeLimit(.minutes(1)))
    func vforkParent() throws {
        let w = try World("vforkwait")
        let app = try w.start([try TestEnv.fixture("vforkwait")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(200_000)
        let ck = try w.ssi("checkpoint", "\(app)")
        #expect(ck.status != 0)
        #expect(ck.stderr.contains("PID \(app) is blocked in vfork"), "\(ck.output)")
        #expect(w.waitLog("DONE"), "the application did not go on: \(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
    }

    @Test("processes asleep for 4 s, checkpointed at 1 s and restarted 1 s later, wake 4 s after they fell asleep")
    func sleepEndsOnTime() throws {
        let w = try World("sleep4")
        let app = try w.start([try TestEnv.fixture("sleep4")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(1_000_000)
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        usleep(1_000_000)
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(reap(app, within: 10).map { exitCode($0) } == 0, "\(w.log())")
        #expect(w.log().components(separatedBy: "PASS").count == 4, "\(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
    }

    @Test("an inotify watch on a deleted file fails the checkpoint, naming PID and fd; -i restores the fd closed")
    func inotifyOnDeletedFile() throws {
        let w = try World("inotifygone")
        let app = try w.start([try TestEnv.fixture("inotifygone")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("INOTIFY"))
        let fd = w.logValue("INOTIFY ")
        let ck = try w.ssi("checkpoint", "\(app)")
        #expect(ck.status != 0)
        #expect(ck.stderr.contains("PID \(app) fd \(fd): inotify watch 1"), "\(ck.output)")
        #expect(ck.stderr.contains("nothing was written") && ck.stderr.contains("-i"), "\(ck.output)")
        #expect(processState(app) != nil, "the failed checkpoint killed the application")
        try w.killAndRestart(app, ["-i"])
        usleep(100_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(!w.log().contains("FAIL"), "\(w.log())")
        #expect(reap(app).map { exitCode($0) } == 0)
    }
}
