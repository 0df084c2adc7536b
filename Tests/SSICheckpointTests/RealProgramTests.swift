import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

private let canPostgres = geteuid() == 0 && Postgres.bin != nil && Postgres.user != nil
private let whyNotPostgres = geteuid() != 0 ? "needs root" : Postgres.whyNot

/// Python's multiprocessing: a pool of three workers, a lock and a queue (POSIX semaphores
/// in /dev/shm, pipes), a shared Value and Array (its heap: an unlinked /dev/shm file
/// mapped by every process), checkpointed with the pool idle, restarted, then put to work.
@Suite("real programs without a server", .serialized, .enabled(if: geteuid() == 0, "needs root"))
struct RealProgramScriptTests {
    @Test("a Python multiprocessing pool with a shared Value, a lock and a queue works after checkpoint --kill=9 and restart")
    func pythonMultiprocessing() throws {
        let w = try World("mpool")
        let script = """
            import multiprocessing as mp, time, signal
            def work(x): return x * x
            if __name__ == "__main__":
                q = mp.Queue(); lock = mp.Lock(); val = mp.Value('i', 0); arr = mp.Array('d', 10)
                with mp.Pool(3) as pool:
                    arr[3] = 2.5
                    go = [False]
                    signal.signal(signal.SIGUSR1, lambda *a: go.__setitem__(0, True))
                    print("READY", flush=True)
                    while not go[0]: time.sleep(0.05)
                    r = pool.map(work, range(100))
                    with lock: val.value += sum(r)
                    q.put("hello"); got = q.get(timeout=5)
                    ok = val.value == 328350 and got == "hello" and arr[3] == 2.5
                    print("PASS" if ok else "FAIL %d %s %f" % (val.value, got, arr[3]), flush=True)
            """
        try script.write(toFile: "\(w.dir)/mpool.py", atomically: true, encoding: .utf8)
        let app = try w.start(["python3", "\(w.dir)/mpool.py"])
        defer { w.cleanUp(app) }
        try w.readyKillRestart(app)
        usleep(300_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS", 20), "\(w.log())")
        _ = reap(app)
    }
}

/// `unshare --pid --fork --mount-proc` (util-linux): a shell that is PID 1 of its own PID
/// namespace, in a mount namespace of its own with a /proc of that namespace, checkpointed
/// with --kill=9 and restarted; then it lists its namespace with ps: itself as PID 1 and
/// nothing of the machine's (a /proc of another namespace would show every process).
extension RealProgramScriptTests {
    @Test("unshare --pid --fork --mount-proc: the shell is PID 1 of its namespace, with its own /proc, after checkpoint --kill=9 and restart")
    func unsharePidMountProc() throws {
        let w = try World("unshare")
        let script = """
            echo READY
            while [ ! -e \(w.dir)/go ]; do sleep 0.1; done
            ps -e -o pid=,comm= > \(w.dir)/ps.txt
            if [ "$$" = 1 ] && grep -q '^ *1 sh$' \(w.dir)/ps.txt && [ "$(wc -l < \(w.dir)/ps.txt)" -le 3 ]; then echo PASS; else echo "FAIL pid $$"; cat \(w.dir)/ps.txt; fi
            """
        let app = try w.start(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script])
        defer { w.cleanUp(app) }
        try w.readyKillRestart(app)
        FileManager.default.createFile(atPath: "\(w.dir)/go", contents: nil)
        #expect(w.waitLog("PASS", 20), "\(w.log())")
        _ = reap(app)
    }

    /// A mount that restart could not make again (a devpts instance, as a disk or NFS) is
    /// refused at checkpoint, naming type, source and mount point; the application goes on.
    @Test("unshare -m with a devpts mounted: the checkpoint is refused naming the mount, and the shell goes on")
    func unshareMountRefused() throws {
        let w = try World("unsharedevpts")
        try FileManager.default.createDirectory(atPath: "\(w.dir)/pts", withIntermediateDirectories: true)
        let script = "mount -t devpts -o newinstance fixture-pts \(w.dir)/pts && echo READY; while :; do sleep 0.1; done"
        let app = try w.start(["unshare", "-m", "sh", "-c", script])
        defer { w.cleanUp(app) }
        try #require(w.waitLog("READY"), "\(w.log())")
        try w.expectRefused(app, ["mounted devpts fixture-pts on \(w.dir)/pts", "nothing was written"])
    }
}

/// Real programs of the distribution through checkpoint, kill and restart, checked from
/// outside by their own clients.
@Suite("real programs", .serialized, .enabled(if: canPostgres, Comment(rawValue: whyNotPostgres)))
struct RealProgramTests {
    /// PostgreSQL: a postmaster and its six workers sharing memory (an anonymous shared
    /// area, a SysV segment, POSIX segments in /dev/shm), signalled through pipes and
    /// latches, a unix socket and a TCP listener. Its rows and its writes go on across two
    /// checkpoint --kill=9 / restart cycles.
    @Test("PostgreSQL keeps its rows and takes writes across two checkpoint --kill=9 and restart cycles")
    func postgres() throws {
        let w = try World("postgres")
        let bin = try #require(Postgres.bin), user = try #require(Postgres.user)
        let home = "\(w.dir)/pg"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        chmod(w.dir, 0o755)
        chown(home, user.uid, user.gid)
        let asPostgres = Postgres.asUser
        let initdb = try run(asPostgres + ["\(bin)/initdb", "-D", "\(home)/data", "--no-sync"], cwd: home)
        try #require(initdb.status == 0, "initdb: \(initdb.output)")
        let port = "\(Int.random(in: 20000...29999))"
        let app = try w.start(asPostgres + ["\(bin)/postgres", "-D", "\(home)/data", "-k", home, "-p", port, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        defer {
            // A fast shutdown (SIGINT): the server removes its shared memory segments.
            kill(app, SIGINT)
            for _ in 0..<50 where processState(app) != nil && processState(app) != "Z" { usleep(100_000) }
            w.cleanUp(app)
        }
        func sql(_ text: String) throws -> String {
            var last = ""
            // Until the server accepts connections (it starts, or comes back): 10 s.
            for _ in 0..<50 {
                let r = try run(asPostgres + ["psql", "-h", home, "-p", port, "-d", "postgres", "-Atc", text], cwd: home)
                // The last statement's result: psql prints each one's (command tags too).
                if r.status == 0 { return r.stdout.split(separator: "\n").last.map(String.init) ?? "" }
                last = r.output
                usleep(200_000)
            }
            return "psql failed: \(last)"
        }
        #expect(try sql("create table t (x int); insert into t select generate_series(1, 1000); select sum(x) from t") == "500500")
        for round in 1...2 {
            try w.killAndRestart(app)
            #expect(try sql("insert into t values (\(round)); select sum(x), count(*) from t") == "\(500500 + (round == 1 ? 1 : 3))|\(1000 + round)",
                    "round \(round): the rows, and a write after the restart")
            #expect(try sql("select count(*) from pg_stat_activity where backend_type = 'checkpointer'") == "1", "round \(round): its workers are back")
        }
    }
}
