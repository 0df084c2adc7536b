import Foundation
import SSIInject
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
        TestEnv.becomeSubreaper()
        let dir = try TestEnv.makeTempDir("dirty")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = "\(dir)/out.log"
        let pid = try Spawn.start([try TestEnv.fixture("dirtypages")], SpawnOptions.logging(to: log))
        defer { kill(pid, SIGKILL); _ = reap(pid) }
        func text() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        try #require(waitUntil(10) { text().contains("READY") }, "\(text())")
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

        // Stopping lifts the protection: the process writes on and its bytes are its own.
        tracker.stop()
        kill(pid, SIGUSR1)
        try #require(waitUntil(10) { text().contains("DONE 3") }, "\(text())")
        kill(pid, SIGTERM)
        let status = reap(pid)
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
