import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The image seam end to end, as migration will use it: the engine writes a snapshot into a
/// socket, a reader in another thread takes it in (never on disk), and the application is
/// restarted from what was received, its pages written into it by ssi.
@Suite("C/R through a stream", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, cgroup freezer"))
struct StreamTests {
    /// @unchecked Sendable: written once by the reader thread before it signals `done`,
    /// read by the test only after waiting on it.
    final class Received: @unchecked Sendable {
        var image: MemoryImage?
        var error: Error?
        let done = DispatchSemaphore(value: 0)
    }

    @Test("an application checkpointed into a socketpair is restarted from what the other end received")
    func throughASocket() throws {
        let w = try World("stream")
        let app = try w.start([try TestEnv.fixture("memory")])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("READY"))
        usleep(200_000)
        var sv: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0)
        let received = Received()
        let readEnd = sv[1]
        Thread.detachNewThread {
            do { received.image = try MemoryImage(receivingFrom: readEnd, location: "the peer's end") } catch { received.error = error }
            received.done.signal()
        }
        let engine = CheckpointEngine(store: SnapshotStore(root: w.chkpt))
        var o = CheckpointEngine.CheckpointOptions()
        o.killSignal = .kill
        let ck = try engine.checkpoint(app: app, options: o, to: try ArchiveImageWriter(fd: sv[0], location: "a socket", app: app, version: 1))
        close(sv[0])
        received.done.wait()
        close(readEnd)
        reap(app)
        if let e = received.error { throw e }
        let image = try #require(received.image)
        #expect(ck.pageBytes > 0 && ck.directory == "a socket")
        #expect(image.manifest.processes == [app] && image.processes.first?.pid == app)
        #expect(try image.open(image.processes[0].pagesFile).path == nil, "the pages must come through the reader, not a file")
        #expect(SnapshotStore(root: w.chkpt).versions(app).isEmpty, "nothing may be written to the store")
        let rs = try engine.restart(from: image)
        #expect(rs.pid == app && processState(app) != nil)
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("PASS") || w.log().contains("FAIL"), "no verdict: \(w.log())")
        #expect(w.log().contains("PASS") && !w.log().contains("FAIL"), "\(w.log())")
        let status = reap(app)
        #expect(status.map { exitCode($0) } == 0, "exit status \(String(describing: status)): \(w.log())")
    }
}
