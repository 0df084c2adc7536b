import Foundation
@testable import SSIInject
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Runs of injected calls one after another in one stopped task, as a dump makes them (the
// process-wide reads, then each thread's, then a lock hand-over...). Each run ends by taking
// the task out of single-step mode (Injector.leaveSingleStep), so that it survives our death;
// a first way of doing so (a PTRACE_SYSEMU stop) made the next run's first call return at
// once without running (the skipped call completed by the next step).
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root (ptrace)"))
struct InjectionTests {
    @Test("consecutive runs of injected calls each run their calls, and the task's own sleep goes on as it was", .timeLimit(.minutes(1)))
    func consecutiveRuns() throws {
        let app = try LoggedFixture("sleeper")
        defer { app.stop() }
        let pid = app.pid
        usleep(200_000)   // inside its 2 s nanosleep

        let seized = SeizedApplication(root: pid)
        try seized.seize()
        let t = Tracee.adoptTraceMe(ProcessID(pid))
        // umask(2) returns the mask before: each run's first call proves the previous ran.
        var results: [[Int64]] = []
        for mask in [UInt64(0o077), 0o027, 0o022] {
            let saved = try t.registers()
            let guardMask = try SignalMaskGuard(tracee: t, saved: saved)
            let inj = try Injector(pid: ProcessID(pid), base: saved)
            results.append([try inj.raw(.umask, mask), try inj.raw(.getpid)])
            guardMask.restore()
            #expect(!Tracee.singleStepped.withLock { $0.contains(pid) }, "a run left PID \(pid) in single-step mode")
        }
        #expect(results[1] == [0o077, Int64(pid)] && results[2] == [0o027, Int64(pid)], "umask, getpid per run: \(results)")
        seized.release()
        let status = app.exit(within: 10)
        #expect(app.text().contains("PASS") && status.map { exitCode($0) } == 0, "\(app.text())")
    }
}
