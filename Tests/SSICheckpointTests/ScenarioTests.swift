import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The command sequences users type: checkpoint, kill, restart in various orders, freezing,
/// versions, and every way to get it wrong.
@Suite("checkpoint/restart scenarios", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, cgroup freezer"))
struct ScenarioTests {
    func counter(_ w: World) throws -> Int32 {
        let app = try w.start([try TestEnv.fixture("counter")])
        #expect(w.waitLog("\n3\n"))
        return app
    }

    func lastNumber(_ w: World) -> Int { w.log().split(separator: "\n").compactMap { Int($0) }.last ?? -1 }

    /// The counter keeps counting from where it was (the restored fd offset means the lines
    /// after the snapshot are overwritten, so the file stays one consecutive sequence).
    /// The log is opened O_APPEND, so after a restart from an older snapshot the lines
    /// printed since that snapshot appear again: `exact` is for restarts from the latest one.
    func expectCounting(_ w: World, exact: Bool = true) {
        let n = lastNumber(w)
        #expect(waitUntil(5) { lastNumber(w) > n + 3 }, "not counting: \(w.log().suffix(60))")
        let nums = w.log().split(separator: "\n").compactMap { Int($0) }
        if exact {
            #expect(nums == Array(0..<nums.count), "sequence broken: \(nums.suffix(20))")
        } else {
            let tail = Array(nums.suffix(4))
            #expect(tail == Array((tail.first ?? 0)..<((tail.first ?? 0) + tail.count)), "sequence broken: \(nums.suffix(20))")
        }
    }

    @Test("C,K,R: output lines, same PID, counting goes on")
    func checkpointKillRestart() throws {
        let w = try World("ckr")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        let ck = try w.ssi("checkpoint", "-d", "first one", "\(app)")
        try #require(ck.status == 0, "\(ck.output)")
        #expect(ck.field("Identifier") == "\(app)")
        #expect(ck.field("Version") == "1")
        #expect(ck.field("Description") == "first one")
        #expect(ck.field("Date")?.contains("T") == true)
        #expect(processState(app) != nil && processState(app) != "T", "the application must go on after a plain checkpoint")
        w.killAndReap(app)
        let rs = try w.ssi("restart", "\(app)", "1")
        try #require(rs.status == 0, "\(rs.output)")
        // Lines printed between the checkpoint and the kill are printed again.
        expectCounting(w, exact: false)
        let json = try w.ssi("checkpoint", "--json", "\(app)")
        let obj = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(obj?["version"] as? Int == 2 && obj?["identifier"] as? Int == Int(app), "\(json.output)")
    }

    @Test("C,C,K,R v2; then R v1 after K; the next checkpoint is v3")
    func versions() throws {
        let w = try World("versions")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        #expect(try w.ssi("checkpoint", "\(app)").field("Version") == "1")
        usleep(300_000)
        #expect(try w.checkpointKill(app).field("Version") == "2")
        let rs = try w.ssi("restart", "\(app)", "2")
        try #require(rs.status == 0, "\(rs.output)")
        expectCounting(w)
        w.killAndReap(app)
        #expect(try w.ssi("restart", "\(app)", "1").status == 0)
        #expect(waitUntil(3) { processState(app) != nil })
        #expect(try w.ssi("checkpoint", "\(app)").field("Version") == "3")
        let list = try w.ssi("snapshots", "\(app)")
        #expect(list.stdout.contains("v1") && list.stdout.contains("v3"), "\(list.output)")
    }

    @Test("R while the application runs fails 'busy' and changes nothing")
    func restartBusy() throws {
        let w = try World("busy")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        try #require(try w.ssi("checkpoint", "\(app)").status == 0)
        let rs = try w.ssi("restart", "\(app)")
        #expect(rs.status != 0)
        #expect(rs.stderr.contains("busy") && rs.stderr.contains("\(app)"), "\(rs.output)")
        expectCounting(w)
    }

    @Test("R, K, R: a restarted application can be killed and restarted again, 3 times")
    func restartKillRestart() throws {
        let w = try World("rkr")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        try #require(try w.checkpointKill(app).status == 0)
        for _ in 0..<3 {
            try #require(try w.ssi("restart", "\(app)").status == 0)
            usleep(200_000)
            w.killAndReap(app)
        }
        try #require(try w.ssi("restart", "\(app)").status == 0)
        expectCounting(w, exact: false)
    }

    @Test("freeze, dump frozen, unfreeze, and the errors of each")
    func freezeSequences() throws {
        let w = try World("freeze")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        let notFrozen = try w.ssi("checkpoint", "-c", "\(app)")
        #expect(notFrozen.status != 0 && notFrozen.stderr.contains("not frozen"), "\(notFrozen.output)")
        let unNotFrozen = try w.ssi("checkpoint", "-u", "\(app)")
        #expect(unNotFrozen.status != 0 && unNotFrozen.stderr.contains("not frozen"), "\(unNotFrozen.output)")
        try #require(try w.ssi("checkpoint", "-f", "\(app)").status == 0)
        let n = lastNumber(w)
        usleep(400_000)
        #expect(lastNumber(w) == n, "still counting while frozen")
        let twice = try w.ssi("checkpoint", "--freeze", "\(app)")
        #expect(twice.status != 0 && twice.stderr.contains("already frozen"), "\(twice.output)")
        let plain = try w.ssi("checkpoint", "\(app)")
        #expect(plain.status != 0 && plain.stderr.contains("frozen"), "\(plain.output)")
        let dump = try w.ssi("checkpoint", "-c", "\(app)")
        #expect(dump.status == 0 && dump.field("Version") == "1", "\(dump.output)")
        usleep(300_000)
        #expect(lastNumber(w) == n, "-c must leave the application frozen")
        try #require(try w.ssi("checkpoint", "-u", "\(app)").status == 0)
        expectCounting(w)
        // Unfreeze with a signal: it is delivered as the application thaws.
        try #require(try w.ssi("checkpoint", "-f", "\(app)").status == 0)
        try #require(try w.ssi("checkpoint", "--unfreeze=TERM", "\(app)").status == 0)
        let st = reap(app)
        #expect(st.map { exitCode($0) } == 128 + SIGTERM)
    }

    @Test("-k sends SIGTERM by default, or the signal given")
    func killSignals() throws {
        let w = try World("kill")
        let app = try counter(w)
        let r = try w.ssi("checkpoint", "-k", "\(app)")
        #expect(r.status == 0, "\(r.output)")
        #expect(reap(app).map { exitCode($0) } == 128 + SIGTERM)
        try #require(try w.ssi("restart", "\(app)").status == 0)
        let r2 = try w.ssi("checkpoint", "--kill=USR2", "\(app)")
        #expect(r2.status == 0 && r2.field("Version") == "2", "\(r2.output)")
        #expect(reap(app).map { exitCode($0) } == 128 + SIGUSR2)
        w.cleanUp(app)
    }

    @Test("restart -U leaves it frozen until checkpoint -u; -f waits and returns its status")
    func restartFrozenAndForeground() throws {
        let w = try World("restartopts")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        try #require(try w.checkpointKill(app).status == 0)
        try #require(try w.ssi("restart", "-U", "\(app)").status == 0)
        let n = lastNumber(w)
        usleep(400_000)
        #expect(lastNumber(w) == n, "restart -U must leave it frozen")
        try #require(try w.ssi("checkpoint", "-u", "\(app)").status == 0)
        expectCounting(w)
        try #require(try w.checkpointKill(app).status == 0)
        // -f: ssi waits for the application; it is killed from outside after a moment.
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.5) { kill(app, SIGTERM) }
        let fg = try w.ssi("restart", "-f", "\(app)")
        #expect(fg.status == 128 + SIGTERM, "\(fg.output)")
    }

    @Test("a corrupt, truncated or incomplete snapshot is refused, naming the file; other versions still restart")
    func corruptSnapshots() throws {
        let w = try World("corrupt")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        try #require(try w.ssi("checkpoint", "\(app)").status == 0)
        try #require(try w.checkpointKill(app).status == 0)
        let v2 = "\(w.chkpt)/\(app)/v2"
        // One flipped byte in the pages' map (the pages are in the application's page pool:
        // a damaged pool page is refused in SSIImageTests' PagePoolTests, naming the page).
        let pages = "\(v2)/pages-\(app).map"
        let fh = FileHandle(forUpdatingAtPath: pages)!
        fh.seek(toFileOffset: 100)
        let b = fh.readData(ofLength: 1)
        fh.seek(toFileOffset: 100)
        fh.write(Data([b[0] ^ 0xff]))
        fh.closeFile()
        let r = try w.ssi("restart", "\(app)", "2")
        #expect(r.status != 0 && r.stderr.contains("pages-\(app).map") && r.stderr.contains("corrupt"), "\(r.output)")
        #expect(processState(app) == nil, "a refused restart must create nothing")
        // Truncated core file.
        try FileManager.default.copyItem(atPath: "\(w.chkpt)/\(app)/v1", toPath: "\(w.chkpt)/\(app)/v3")
        truncate("\(w.chkpt)/\(app)/v3/core-\(app).json", 10)
        let r3 = try w.ssi("restart", "\(app)", "3")
        #expect(r3.status != 0 && r3.stderr.contains("core-\(app).json") && r3.stderr.contains("truncated"), "\(r3.output)")
        // A manifest that is not ours.
        try FileManager.default.createDirectory(atPath: "\(w.chkpt)/\(app)/v4", withIntermediateDirectories: true)
        try "{\"hello\": 1}".write(toFile: "\(w.chkpt)/\(app)/v4/manifest.json", atomically: true, encoding: .utf8)
        let r4 = try w.ssi("restart", "\(app)", "4")
        #expect(r4.status != 0 && r4.stderr.contains("manifest"), "\(r4.output)")
        let missing = try w.ssi("restart", "\(app)", "9")
        #expect(missing.status != 0 && missing.stderr.contains("no snapshot version 9"), "\(missing.output)")
        let ok = try w.ssi("restart", "\(app)", "1")
        #expect(ok.status == 0, "\(ok.output)")
        expectCounting(w, exact: false)
    }

    @Test("a damaged page in the page pool is found while the processes are rebuilt: the restart is refused naming the page, nothing is left, and the repaired snapshot restarts")
    func corruptPoolPage() throws {
        let w = try World("corruptpool")
        let app = try counter(w)
        defer { w.cleanUp(app) }
        try #require(try w.checkpointKill(app).status == 0)
        // The pool's first page holds memory of the counter (its pages are all the pool has).
        let pool = "\(w.chkpt)/\(app)/pool/pages.img"
        func flip() throws {
            let fh = try #require(FileHandle(forUpdatingAtPath: pool))
            fh.seek(toFileOffset: 100)
            let b = fh.readData(ofLength: 1)
            fh.seek(toFileOffset: 100)
            fh.write(Data([b[0] ^ 0xff]))
            fh.closeFile()
        }
        try flip()
        // The pages are checked while the tree is rebuilt (DeferredPageCheck): the restore
        // read the bad page into place already, and the check stops the process before it runs.
        let r = try w.ssi("restart", "\(app)")
        #expect(r.status != 0 && r.stderr.contains("corrupt in the page pool") && r.stderr.contains("page "), "\(r.output)")
        #expect(processState(app) == nil, "a refused restart leaves no process behind (PID \(app))")
        try flip()
        let ok = try w.ssi("restart", "\(app)")
        #expect(ok.status == 0, "\(ok.output)")
        expectCounting(w, exact: false)
    }

    @Test("an fd the engine does not support fails the checkpoint, naming PID, fd and kind; the app goes on; -i passes")
    func unsupportedFD() throws {
        let w = try World("unsupported")
        let py = try python3Executable()
        let app = try w.start([py, "-u", "-c", "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\nprint('fd', s.fileno(), flush=True)\nwhile True:\n    time.sleep(0.05)"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("fd "))
        let fd = w.logValue("fd ")
        // (UDP, netlink and packet sockets are supported since issue 10; a raw IP socket,
        // AF_INET 2 and SOCK_RAW 3, is not.)
        try w.expectRefused(app, ["PID \(app) fd \(fd): socket of family 2, type 3"])
        let ri = try w.ssi("checkpoint", "-i", "\(app)")
        #expect(ri.status == 0, "\(ri.output)")
    }

    @Test("a thread with a cwd of its own (unshare CLONE_FS in it, as Samba's thread pool does) is refused by name; the app goes on")
    func threadOwnContext() throws {
        let w = try World("threadcontext")
        let py = try python3Executable()
        let program = "import ctypes, os, threading, time\nlibc = ctypes.CDLL(None, use_errno=True)\ndef worker():\n    assert libc.unshare(0x200) == 0\n    os.chdir('/tmp')\n    print('tid', threading.get_native_id(), flush=True)\n    while True:\n        time.sleep(0.05)\nthreading.Thread(target=worker, daemon=True).start()\nwhile True:\n    time.sleep(0.05)"
        let app = try w.start([py, "-u", "-c", program])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("tid "))
        let tid = w.logValue("tid ")
        try w.expectRefused(app, ["PID \(app) thread \(tid) has its own cwd, root and umask (unshare CLONE_FS)", "nothing was written"])
    }

    @Test("checkpointing PID 1, a kernel thread, a missing PID or ssi itself: clear errors")
    func badTargets() throws {
        let w = try World("bad")
        defer { w.cleanUp() }
        let one = try w.ssi("checkpoint", "1")
        #expect(one.status != 0 && one.stderr.contains("PID 1"), "\(one.output)")
        let kthread = try w.ssi("checkpoint", "2")
        #expect(kthread.status != 0 && kthread.stderr.contains("kernel thread"), "\(kthread.output)")
        let missing = try w.ssi("checkpoint", "4000000")
        #expect(missing.status != 0 && missing.stderr.contains("no process with PID 4000000"), "\(missing.output)")
        let me = try run(["/bin/sh", "-c", "exec \"$0\" checkpoint $$", TestEnv.ssi], env: ["SSI_CHKPT_DIR": w.chkpt])
        #expect(me.status != 0 && me.stderr.contains("this ssi command itself"), "\(me.output)")
        let norestart = try w.ssi("restart", "4000000")
        #expect(norestart.status != 0 && norestart.stderr.contains("no snapshot"), "\(norestart.output)")
    }

    @Test("command-line mistakes are refused before anything happens: -k N, -f with -k, a thread id, run -o into a missing directory")
    func commandLineMistakes() throws {
        let w = try World("climistakes")
        let py = try python3Executable()
        let program = "import threading, time\ndef t():\n    print('tid', threading.get_native_id(), flush=True)\n    while True:\n        time.sleep(0.05)\nthreading.Thread(target=t, daemon=True).start()\nwhile True:\n    time.sleep(0.05)"
        let app = try w.start([py, "-u", "-c", program])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("tid "))
        let tid = w.logValue("tid ")
        let thread = try w.ssi("checkpoint", tid)
        #expect(thread.status != 0 && thread.stderr.contains("is a thread of process \(app)"), "\(thread.output)")
        // `-k 9 APP` read 9 as a second application, froze it and sent it TERM.
        let k9 = try w.ssi("checkpoint", "-k", "9", "\(app)")
        #expect(k9.status != 0 && k9.stderr.contains("-k=9"), "\(k9.output)")
        let fk = try w.ssi("checkpoint", "-f", "-k", "\(app)")
        #expect(fk.status != 0 && fk.stderr.contains("-f only freezes"), "\(fk.output)")
        #expect(processState(app) == "S" || processState(app) == "R", "application \(app) left in state \(String(describing: processState(app)))")
        #expect(!FileManager.default.fileExists(atPath: "\(w.chkpt)/\(app)/v1"), "a refused command wrote a snapshot")
        // An application whose id cannot be written to -o's file is not started at all.
        let marker = "sleep 33.\(UInt16.random(in: 100...999))"
        let bad = try run([TestEnv.ssi, "run", "--local", "-b", "-o", "\(w.dir)/no/such/dir/app", "--", "/bin/sh", "-c", marker], env: ["SSI_CHKPT_DIR": w.chkpt])
        #expect(bad.status != 0 && bad.stderr.contains("nothing was started"), "\(bad.output)")
        let started = try run(["pgrep", "-f", marker])
        #expect(started.status == 1, "ssi run started \(marker) though it refused: \(started.output)")
        if started.status == 0 { for p in started.stdout.split(separator: "\n").compactMap({ Int32($0) }) { kill(p, SIGKILL) } }
        // kill(1)'s form, `-k -KILL`: a checkpoint, then the signal (the argument parser
        // took -KILL for an unknown option).
        let kk = try w.ssi("checkpoint", "-k", "-KILL", "\(app)")
        #expect(kk.status == 0 && FileManager.default.fileExists(atPath: "\(w.chkpt)/\(app)/v1"), "\(kk.output)")
        let gone = Date().addingTimeInterval(5)
        while processState(app).map({ $0 != "Z" }) ?? false, Date() < gone { usleep(10_000) }
        #expect(processState(app) == nil || processState(app) == "Z", "application \(app) still running after -k -KILL")
    }

    @Test("a signal sent while a checkpoint holds a thread waiting in ppoll reaches it: after the checkpoint, and after a restart")
    func signalDuringCheckpoint() throws {
        for kill in [false, true] {
            let w = try World("sigheld")
            let app = try w.start([try TestEnv.fixture("sigwait"), "ppoll"])
            defer { w.cleanUp(app) }
            #expect(w.waitLog("READY"))
            usleep(200_000)
            // Frozen, the signal arrives; the dump's injected calls run while it is pending.
            try #require(try w.ssi("checkpoint", "-f", "\(app)").status == 0)
            Glibc.kill(app, SIGUSR2)
            usleep(100_000)
            let ck = kill ? try w.ssi("checkpoint", "-c", "--kill=KILL", "\(app)") : try w.ssi("checkpoint", "-c", "\(app)")
            try #require(ck.status == 0, "\(ck.output)")
            if kill {
                _ = reap(app)
                _ = try w.ssi("checkpoint", "-u", "\(app)")
                let rs = try w.ssi("restart", "\(app)")
                try #require(rs.status == 0, "\(rs.output)")
            } else {
                try #require(try w.ssi("checkpoint", "-u", "\(app)").status == 0)
            }
            #expect(w.waitLog("got=1", 5), "SIGUSR2 never reached its handler\(kill ? " after the restart" : ""): \(w.log())")
        }
    }

    @Test("a poll with no timeout, resumed after earlier checkpoints, is still waiting after a restart")
    func pollWithoutTimeout() throws {
        let w = try World("pollnotimeout")
        let app = try w.start([try TestEnv.fixture("sigwait"), "poll"])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(200_000)
        for _ in 0..<2 {
            let ck = try w.ssi("checkpoint", "\(app)")
            try #require(ck.status == 0, "\(ck.output)")
            #expect(!ck.stderr.contains("EINTR") && !ck.stderr.contains("timer could not be found"), "\(ck.stderr)")
        }
        let ck = try w.checkpointKill(app)
        try #require(ck.status == 0, "\(ck.output)")
        let rs = try w.ssi("restart", "\(app)")
        try #require(rs.status == 0, "\(rs.output)")
        usleep(700_000)
        #expect(!w.log().contains("woke"), "poll returned with no signal sent: \(w.log())")
        Glibc.kill(app, SIGUSR2)
        #expect(w.waitLog("got=1", 5), "\(w.log())")
    }

    @Test("Ctrl-C during ssi checkpoint stops it at a safe point and leaves the application running")
    func interruptedCheckpoint() throws {
        let w = try World("interrupt")
        let py = try python3Executable()
        let program = "import os, time\nb = bytearray(os.urandom(256 << 20))\nprint('ready', flush=True)\nn = 0\nwhile True:\n    n += 1\n    if n % 20 == 0:\n        print('tick', n, flush=True)\n    time.sleep(0.01)"
        let app = try w.start([py, "-u", "-c", program])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("ready", 30))
        // Before: ssi died at once and the application, stopped in an injected call, took
        // SIGTRAP at its trap instruction.
        var interrupted = 0
        for delay in [50_000, 150_000, 300_000] as [useconds_t] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestEnv.ssi)
            p.arguments = ["checkpoint", "--no-precopy", "\(app)"]
            p.environment = ProcessInfo.processInfo.environment.merging(["SSI_CHKPT_DIR": w.chkpt]) { $1 }
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            usleep(delay)
            kill(p.processIdentifier, SIGINT)
            p.waitUntilExit()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(p.terminationStatus == 0 || text.contains("interrupted by SIGINT"), "after \(delay) us: \(text)")
            if text.contains("interrupted by SIGINT") { interrupted += 1 }
            usleep(100_000)
            let st = processState(app)
            #expect(st == "S" || st == "R", "application \(app) after a checkpoint interrupted at \(delay) us: state \(String(describing: st)); \(text)")
        }
        // At least one SIGINT came mid-checkpoint (256 MiB of random bytes, which the page
        // pool cannot fold into one page, take far longer than 50 ms to dump): otherwise
        // nothing above tested an interruption.
        #expect(interrupted > 0, "every checkpoint ended before its SIGINT")
        let ticks = w.log().components(separatedBy: "tick").count
        #expect(waitUntil(5) { w.log().components(separatedBy: "tick").count > ticks + 2 }, "the application stopped running: \(w.log().suffix(200))")
    }
}

@Suite("ssi without root")
struct NonRootTests {
    @Test("non-root users are told plainly that root is needed", .enabled(if: TestEnv.isRoot, "needs root to switch to an unprivileged user"))
    func needsRoot() throws {
        let r = try run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", TestEnv.ssi, "checkpoint", "\(getpid())"],
                        env: ["SSI_CHKPT_DIR": "/tmp"])
        #expect(r.status != 0 && r.stderr.contains("needs root"), "\(r.output)")
    }
}
