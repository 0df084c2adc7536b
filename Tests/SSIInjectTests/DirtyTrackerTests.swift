import Foundation
@testable import SSIInject
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .enabled(if: TestEnv.dirtyTrackingMissing == nil, "needs root and Linux 6.7+: userfaultfd asynchronous write-protection, PAGEMAP_SCAN"))
struct DirtyTrackerTests {
    @Test("a scan reports exactly the pages the running process wrote, and re-arms", .timeLimit(.minutes(1)))
    func writtenPages() throws {
        let app = try LoggedFixture("dirtypages")
        defer { app.stop() }
        let pid = app.pid, text = app.text
        let areaLine = try #require(text().split(separator: "\n").first { $0.hasPrefix("AREA ") })
        let area = try #require(UInt64(areaLine.dropFirst(7), radix: 16))
        let page: UInt64 = 4096

        let tracker = try DirtyTracker.start(pid: ProcessID(pid), areas: [(area, area + 64 * page)])
        #expect(tracker.ranges.count == 1)
        #expect(try tracker.scan(rearm: true).written.isEmpty, "pages reported written before any write")

        kill(pid, SIGUSR1)
        try #require(waitUntil(10) { text().contains("DONE 1") }, "\(text())")
        let first = try tracker.scan(rearm: true)
        #expect(first.written.map { [$0.0, $0.1] } == [[area + 3 * page, 1], [area + 10 * page, 2]], "\(first.written)")
        #expect(first.lost.isEmpty)
        #expect(try tracker.scan(rearm: false).written.isEmpty, "re-armed pages reported again")

        kill(pid, SIGUSR1)
        try #require(waitUntil(10) { text().contains("DONE 2") }, "\(text())")
        #expect(try tracker.scan(rearm: false).written.map { [$0.0, $0.1] } == [[area + 63 * page, 1]])

        // A page dropped (MADV_DONTNEED) must not pass for unchanged: its copy is stale.
        _ = try tracker.scan(rearm: true)
        kill(pid, SIGUSR1)
        try #require(waitUntil(10) { text().contains("DONE 3") }, "\(text())")
        let dropped = try tracker.scan(rearm: true).written.map { [$0.0, $0.1] }
        print("after MADV_DONTNEED of page 20: \(dropped.map { [($0[0] - area) / page, $0[1]] })")
        #expect(dropped.contains([area + 20 * page, 1]), "\(dropped)")
        kill(pid, SIGUSR1)
        try #require(waitUntil(10) { text().contains("DONE 4") }, "\(text())")
        let reread = try tracker.scan(rearm: false).written.map { [$0.0, $0.1] }
        print("after MADV_DONTNEED and a read of page 30: \(reread.map { [($0[0] - area) / page, $0[1]] })")
        #expect(reread.contains([area + 30 * page, 1]), "\(reread)")

        // Stopping lifts the protection: the process writes on and its bytes are its own.
        tracker.stop()
        kill(pid, SIGUSR1)
        try #require(waitUntil(10) { text().contains("DONE 5") }, "\(text())")
        kill(pid, SIGTERM)
        let status = app.exit(within: 5)
        #expect(text().contains("PASS") && status.map { exitCode($0) } == 0, "\(text())")
    }

    @Test("tracking a process that does not exist fails, naming it")
    func noSuchProcess() throws {
        do {
            _ = try DirtyTracker.start(pid: ProcessID(999_999_999), areas: [])
            Issue.record("tracking PID 999999999 succeeded")
        } catch let e as SSIError {
            #expect(e.message.contains("999999999"), "\(e)")
        }
    }
}

/// The arithmetic of multi-call scans, with injected inputs.
@Suite struct DirtyScanArithmeticTests {
    @Test("a scan that filled its vector resumes after the last region, never inside it")
    func resume() {
        #expect(DirtyTracker.resume(from: 0x1000, walkEnd: 0x3000, last: 0x5000) == 0x5000)
        #expect(DirtyTracker.resume(from: 0x1000, walkEnd: 0x6000, last: 0x5000) == 0x6000)
        #expect(DirtyTracker.resume(from: 0x6000, walkEnd: 0x6000, last: 0) == 0, "no progress ends the walk")
    }

    @Test("runs are sorted and overlapping or touching runs merged")
    func normalized() {
        let runs: [(UInt64, UInt64)] = [(0x5000, 2), (0x1000, 2), (0x2000, 3), (0x9000, 1)]
        #expect(DirtyTracker.normalized(runs).map { [$0.0, $0.1] } == [[0x1000, 6], [0x9000, 1]])
    }
}
