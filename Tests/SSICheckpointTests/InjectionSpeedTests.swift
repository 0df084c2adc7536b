import Foundation
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The frozen-time work of issue 17 changed how syscalls reach a stopped process: batches
/// (SyscallBatch) instead of one ptrace round trip each, and a restore shell that execs the
/// static ssi-init stub instead of being a copy of ssi. Each path is checked to be the one
/// taken (SSI_TRACE_SYSCALLS marks a batch's calls "(batch)"), and the fallbacks (no batch,
/// no stub) to restore the same state: the `signals` fixture checks its own dispositions,
/// masks and pending signals after each restart.
@Suite("injected syscall batches and the restore stub", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc"), "needs gcc to build the fixtures"))
struct InjectionSpeedTests {
    /// The fixture through checkpoint --kill and restart with `env` in ssi's environment;
    /// returns the two commands' stderr.
    func lifecycle(_ tag: String, env: [String: String]) throws -> (dump: String, restore: String) {
        let w = try World(tag)
        let app = try w.start([try TestEnv.fixture("signals")])
        defer { w.cleanUp(app) }
        try #require(w.waitLog("READY"), "\(w.log())")
        usleep(200_000)
        let ck = try w.checkpointKill(app, env: env)
        try #require(ck.status == 0, "\(ck.output)")
        let rs = try run([TestEnv.ssi, "restart", "\(app)"], env: env.merging(["SSI_CHKPT_DIR": w.chkpt]) { _, b in b }, cwd: w.dir)
        try #require(rs.status == 0, "\(rs.output)")
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(w.log().contains("PASS") && !w.log().contains("FAIL"), "\(w.log())")
        return (ck.stderr, rs.stderr)
    }

    /// rseq(2) with flags RSEQ_FLAG_UNREGISTER (1) in a trace: what a shell that is a copy of
    /// ssi does first.
    static func unregistersRseq(_ trace: String) -> Bool {
        trace.split(separator: "\n").contains { $0.contains("] rseq(") && $0.contains(", 0x20, 0x1, ") }
    }

    @Test("a dump reads the 62 dispositions in one batch, a restore sets them in one, from a shell that is the stub")
    func batchesAndStub() throws {
        let (dump, restore) = try lifecycle("batch", env: ["SSI_TRACE_SYSCALLS": "1"])
        let dumped = dump.split(separator: "\n").filter { $0.contains("] rt_sigaction(") }
        #expect(dumped.count == 62 && dumped.allSatisfy { $0.hasSuffix("(batch)") }, "\(dumped.prefix(3))")
        #expect(dump.split(separator: "\n").contains { $0.contains("] brk(0x0)") && $0.hasSuffix("(batch)") }, "brk(0) not in the dump's batch")
        let restored = restore.split(separator: "\n").filter { $0.contains("] rt_sigaction(") }
        #expect(restored.count >= 62 && restored.filter { $0.hasSuffix("(batch)") }.count == 62, "\(restored.prefix(3))")
        #expect(restore.split(separator: "\n").contains { $0.contains("] mmap(") && $0.hasSuffix("(batch)") })
        // The stub is a copy of nobody: no rseq area to unregister (glibc registers one in
        // every thread it starts, ssi's included), and its lowest mapping is the static
        // binary's at 0x400000, where the teardown's first unmap starts.
        #expect(!Self.unregistersRseq(restore), "the shell unregistered an rseq area: it is a copy of ssi, not the stub")
        #expect(restore.contains("] munmap(0x400000,"), "\(restore.split(separator: "\n").filter { $0.contains("munmap") }.prefix(3))")
    }

    @Test("a restore stub that cannot be run fails the restart with a message naming it; nothing is left, and the snapshot restarts after")
    func stubThatCannotRun() throws {
        let w = try World("badstub")
        let app = try w.start([try TestEnv.fixture("signals")])
        defer { w.cleanUp(app) }
        try #require(w.waitLog("READY"), "\(w.log())")
        usleep(200_000)
        let ck = try w.checkpointKill(app, env: [:])
        try #require(ck.status == 0, "\(ck.output)")
        let missing = "\(w.dir)/no-such-stub"
        let bad = try run([TestEnv.ssi, "restart", "\(app)"], env: ["SSI_CHKPT_DIR": w.chkpt, "SSI_RESTORE_STUB": missing], cwd: w.dir)
        #expect(bad.status != 0 && bad.output.contains("restore stub \(missing) could not be run") && bad.output.contains("SSI_RESTORE_STUB"), "\(bad.output)")
        #expect(!Proc.alive(app), "PID \(app) was left behind by the failed restart")
        let good = try run([TestEnv.ssi, "restart", "\(app)"], env: ["SSI_CHKPT_DIR": w.chkpt], cwd: w.dir)
        try #require(good.status == 0, "\(good.output)")
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(w.log().contains("PASS") && !w.log().contains("FAIL"), "\(w.log())")
    }

    @Test("without batches (SSI_NO_BATCH=1) and without the stub (SSI_RESTORE_STUB empty), the same state comes back")
    func fallbacks() throws {
        let (dump, restore) = try lifecycle("nobatch", env: ["SSI_TRACE_SYSCALLS": "1", "SSI_NO_BATCH": "1", "SSI_RESTORE_STUB": ""])
        #expect(!dump.contains("(batch)") && !restore.contains("(batch)"))
        #expect(dump.split(separator: "\n").filter { $0.contains("] rt_sigaction(") }.count == 62)
        // A copy of ssi unregisters the rseq area glibc gave it.
        #expect(Self.unregistersRseq(restore), "no rseq unregistration: the shell was not a copy of ssi")
    }
}
