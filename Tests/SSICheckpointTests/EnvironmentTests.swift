import Foundation
@testable import SSICheckpoint
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Restart against a changed world: files gone or shrunk, terminals gone, processes that were
/// not started by ssi, Kerrighed's command names, leftovers of killed checkpoints.
@Suite("restart and its environment", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, cgroup freezer"))
struct EnvironmentTests {
    /// A group left frozen and empty by an earlier application of the same id (its freeze
    /// outlived it: a migration refused while it was frozen, before the fix): the next
    /// application born into it would stop at once and its launch wait forever (seen: every
    /// `ssi run` of a new local cluster's first application hung).
    @Test("a frozen, empty application group left behind is thawed before a process is born into it")
    func staleFrozenGroup() throws {
        let freezer = try CgroupFreezer.require()
        let app = Int32.random(in: 1_900_000_000...2_000_000_000)
        let group = freezer.path(app)
        try freezer.ensureGroup(group)
        defer { rmdir(group) }
        try ProcFS.write("\(group)/cgroup.freeze", "1")
        #expect(freezer.isFrozen(app))
        let fd = try freezer.openGroup(app)
        close(fd)
        #expect(!freezer.isFrozen(app), "the stale group is still frozen")
        #expect((try ProcFS.read("\(group)/cgroup.freeze")).hasPrefix("0"))
    }

    @Test("a file that is gone, or now shorter than the saved offset, is a clear error; once back, restart works")
    func filesChanged() throws {
        let w = try World("fileschanged")
        let app = try w.start([try TestEnv.fixture("files")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        try #require(try w.checkpointKill(app).status == 0)
        let input = "\(w.dir)/input.txt"
        try FileManager.default.moveItem(atPath: input, toPath: input + ".saved")
        let gone = try w.ssi("restart", "\(app)")
        #expect(gone.status != 0 && gone.stderr.contains(input) && gone.stderr.contains("no longer exists"), "\(gone.output)")
        #expect(processState(app) == nil)
        try "short".write(toFile: input, atomically: false, encoding: .utf8)
        let short = try w.ssi("restart", "\(app)")
        #expect(short.status != 0 && short.stderr.contains(input) && short.stderr.contains("shorter than the saved offset"), "\(short.output)")
        try FileManager.default.removeItem(atPath: input)
        try FileManager.default.moveItem(atPath: input + ".saved", toPath: input)
        let h = FileHandle(forWritingAtPath: "\(w.dir)/append.txt")!
        h.seekToEndOfFile(); h.write(Data("external\n".utf8)); h.closeFile()
        try #require(try w.ssi("restart", "\(app)").status == 0)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS"), "\(w.log())")
        reap(app)
    }

    @Test("any process can be checkpointed by PID, not only those started by ssi run")
    func foreignProcess() throws {
        let w = try World("foreign")
        let counter = try TestEnv.fixture("counter")
        let r = try run(["/bin/sh", "-c", "\"$0\" > out.log 2>/dev/null </dev/null & echo $!", counter], cwd: w.dir)
        let pid = try #require(Int32(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { w.cleanUp(pid) }
        #expect(w.waitLog("\n3\n"))
        let ck = try w.checkpointKill(pid)
        try #require(ck.status == 0, "\(ck.output)")
        #expect(ck.field("Identifier") == "\(pid)")
        let rs = try w.ssi("restart", "\(pid)")
        try #require(rs.status == 0, "\(rs.output)")
        #expect(rs.stderr.contains("session"), "restarting outside its session must be reported: \(rs.output)")
        let n = w.log().split(separator: "\n").count
        #expect(waitUntil(3) { w.log().split(separator: "\n").count > n + 3 })
    }

    @Test("Kerrighed's names: krgcr-run, checkpoint and restart as links to ssi")
    func kerrighedAliases() throws {
        let w = try World("aliases")
        for name in ["krgcr-run", "checkpoint", "restart"] {
            try FileManager.default.createSymbolicLink(atPath: "\(w.dir)/\(name)", withDestinationPath: TestEnv.ssi)
        }
        let appFile = "\(w.dir)/appid"
        let started = try run(["\(w.dir)/krgcr-run", "-b", "-o", appFile, "--", try TestEnv.fixture("counter")], env: ["SSI_CHKPT_DIR": w.chkpt],
                              cwd: w.dir, stdoutPath: "\(w.dir)/out.log")
        try #require(started.status == 0)
        let app = try #require(Int32((try String(contentsOfFile: appFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { w.cleanUp(app) }
        #expect(w.log().contains("Running application \(app)"))
        let ck = try run(["\(w.dir)/checkpoint", "-k", "\(app)"], env: ["SSI_CHKPT_DIR": w.chkpt])
        #expect(ck.status == 0 && ck.field("Version") == "1", "\(ck.output)")
        reap(app)
        let rs = try run(["\(w.dir)/restart", "\(app)", "1"], env: ["SSI_CHKPT_DIR": w.chkpt])
        #expect(rs.status == 0, "\(rs.output)")
    }

    @Test("leftovers of a killed checkpoint are not versions, and are cleaned by the next checkpoint")
    func leftovers() throws {
        let w = try World("leftover")
        let app = try w.start([try TestEnv.fixture("counter")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("\n2\n"))
        let stale = "\(w.chkpt)/\(app)/.tmp-4000000-1"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        try "half".write(toFile: "\(stale)/pages-\(app).img", atomically: false, encoding: .utf8)
        let ck = try w.ssi("checkpoint", "\(app)")
        #expect(ck.status == 0 && ck.field("Version") == "1", "\(ck.output)")
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(try w.ssi("snapshots", "\(app)").stdout.split(separator: "\n").count == 1)
    }

    @Test("-t gives the restarted application this terminal; without it, a vanished terminal comes back hung up, with a warning naming -t")
    func terminal() throws {
        let w = try World("tty")
        let counter = try TestEnv.fixture("counter")
        // `script` runs the command on a new pseudo-terminal, which disappears when it exits.
        let s1 = try run(["script", "-qfec", "\(TestEnv.ssi) run -b -o \(w.dir)/appid -- \(counter)", "\(w.dir)/tty1.log"],
                         env: ["SSI_CHKPT_DIR": w.chkpt], cwd: w.dir)
        try #require(s1.status == 0, "\(s1.output)")
        let app = try #require(Int32((try String(contentsOfFile: "\(w.dir)/appid", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { w.cleanUp(app) }
        // Read until it answers (a loaded machine can take longer than a fixed pause).
        var link = ""
        for _ in 0..<60 where !link.hasPrefix("/dev/pts/") {
            usleep(50_000)
            link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(app)/fd/1")) ?? ""
        }
        try #require(link.hasPrefix("/dev/pts/"), "fd 1 is \(link) (state \(processState(app).map(String.init) ?? "gone"))")
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        // The first terminal is gone with its `script`: the application's fds on it were hung
        // up when it was checkpointed, and come back so (a pair of ssi's whose master is
        // closed), with a warning that names -t.
        let r = try w.ssi("restart", "\(app)")
        #expect(r.status == 0 && r.stderr.contains("restart -t"), "\(r.output)")
        if r.status == 0 {
            let hungUp = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(app)/fd/1")) ?? ""
            #expect(hungUp.hasPrefix("/dev/pts/") && hungUp.hasSuffix(" (deleted)"), "fd 1 is \(hungUp)")
            let again = try w.checkpointKill(app)
            try #require(again.status == 0, "\(again.output)")
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + 1.0) { kill(app, SIGTERM) }
        let s2 = try run(["script", "-qfec", "\(TestEnv.ssi) restart -t -f \(app); echo EXIT=$?", "\(w.dir)/tty2.log"], env: ["SSI_CHKPT_DIR": w.chkpt], cwd: w.dir)
        let out = (try? String(contentsOfFile: "\(w.dir)/tty2.log", encoding: .utf8)) ?? ""
        let numbers = (out + s2.output).split(whereSeparator: { $0.isNewline }).compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(numbers.count >= 3, "the restarted counter did not write to the new terminal: \(out.suffix(300)) \(s2.output) status \(s2.status)")
    }
}
