import Foundation
@testable import SSIProcessTable
@testable import SSIImage
import SSISystem
import SSITestSupport
import Testing

/// The target's side of a snapshot sent over the cluster (RemoteImage.swift): data steps are
/// answered once queued and written in order from the snapshot's queue; a write that fails
/// fails the finish and the commit, and leaves no version. No cluster needed: the steps are
/// handed to IncomingSnapshots as the RPC handler would.
@Suite("Incoming snapshots")
struct IncomingSnapshotTests {
    static func step(_ kind: IncomingStep.Kind, _ token: UInt64, name: String = "", app: Int32 = 77) -> IncomingStep {
        IncomingStep(kind: kind, token: token, app: app, name: name)
    }

    /// The commit of snapshot `token`: its processes, and the files it expects as sent.
    static func commit(_ token: UInt64, processes: [Int32] = [1], expect: [FileEntry]? = nil) -> IncomingStep {
        var c = step(.commit, token)
        (c.processes, c.arch, c.expect) = (processes, "x86_64", expect)
        return c
    }

    /// Bytes that differ from chunk to chunk, so that a chunk written out of order shows.
    static func chunk(_ k: Int, size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k &* 7 &+ $0 >> 12) }
    }

    /// A target's store in a temporary directory (pages as plain files, to read them back),
    /// with snapshot `token` begun in it.
    static func begun(_ token: UInt64, _ name: String) async throws -> (root: String, store: SnapshotStore, incoming: IncomingSnapshots) {
        let root = try TestEnv.makeTempDir(name)
        let store = SnapshotStore(root: root, pool: false)
        let incoming = IncomingSnapshots()
        _ = try await incoming.handle(Self.step(.begin, token), [], store: store)
        return (root, store, incoming)
    }

    @Test("more data steps than the queue's window arrive whole and in order, with every file's size and CRC in the manifest")
    func manyStepsInOrder() async throws {
        let token: UInt64 = 42
        let (root, store, incoming) = try await Self.begun(token, "incoming")
        defer { try? FileManager.default.removeItem(atPath: root) }
        var pages: [UInt8] = [], core: [UInt8] = []
        // Interleaved as a pre-copy sends them: pages round after round, the rest at the end.
        for k in 0..<(IncomingSnapshots.window * 3) {
            let c = Self.chunk(k, size: 256 << 10)
            pages += c
            _ = try await incoming.handle(Self.step(.data, token, name: "pages-1.img"), c[...], store: store)
            if k % 4 == 0 {
                let j = Array("{\"k\":\(k)}".utf8)
                core += j
                _ = try await incoming.handle(Self.step(.data, token, name: "core-1.json"), j[...], store: store)
            }
        }
        let tail = Self.chunk(99, size: 1000)
        pages += tail
        let a = try await incoming.handle(Self.step(.finish, token, name: "pages-1.img"), tail[...], store: store)
        let b = try await incoming.handle(Self.step(.finish, token, name: "core-1.json"), [], store: store)
        #expect(a.entry?.size == UInt64(pages.count))
        #expect(a.entry?.crc32c == CRC32C.checksum(pages))
        #expect(b.entry?.size == UInt64(core.count))
        let c = try await incoming.handle(Self.commit(token), [], store: store)
        #expect(c.version == 1)
        let dir = store.directory(77, version: 1)
        #expect(try ProcFS.readBytes("\(dir)/pages-1.img") == pages, "every chunk where the source put it")
        #expect(try ProcFS.readBytes("\(dir)/core-1.json") == core)
    }

    @Test("core files are decoded as they arrive (with their blob file), and the restore's load takes them instead of decoding again")
    func coresDecodedOnArrival() async throws {
        // The files as a source makes them: a process whose pipe holds 64 KiB (a blob).
        let src = try TestEnv.makeTempDir("incoming-src")
        defer { try? FileManager.default.removeItem(atPath: src) }
        var image = ProcessImage(pid: 5)
        var pipe = FileDescriptorImage(fd: 4, kind: .pipe, path: "", flags: 0, closeOnExec: false, position: 0)
        pipe.pipeID = 9
        pipe.pipeData = Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        image.fds = [pipe]
        let w = try SnapshotStore(root: src, pool: false).beginWrite(app: 5)
        try w.addCore(image)
        _ = try w.commit(description: "", processes: [5], arch: "x86_64")
        let blobs = try ProcFS.readBytes("\(src)/5/v1/blobs-5.img"), core = try ProcFS.readBytes("\(src)/5/v1/core-5.json")

        let token: UInt64 = 44
        let (root, store, incoming) = try await Self.begun(token, "incoming-cores")
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = try await incoming.handle(Self.step(.data, token, name: "blobs-5.img"), blobs[..<1000], store: store)
        let b = try #require(try await incoming.handle(Self.step(.finish, token, name: "blobs-5.img"), blobs[1000...], store: store).entry)
        let c = try #require(try await incoming.handle(Self.step(.finish, token, name: "core-5.json"), core[...], store: store).entry)
        #expect(RecentCores.holds(core: c, blobs: b), "decoding begun at the core file's finish")
        #expect(try await incoming.handle(Self.commit(token, processes: [5], expect: [b, c]), [], store: store).version == 1)
        let snap = try Snapshot.load(directory: store.directory(77, version: 1), verify: false)
        #expect(!RecentCores.holds(core: c, blobs: b), "taken by the load")
        #expect(snap.processes.first?.fds == image.fds, "the same image as decoding the files gives")
    }

    @Test("a commit whose expected files did not arrive as the source sent them is refused, naming the file, and leaves no version")
    func commitChecksExpectedFiles() async throws {
        let token: UInt64 = 45
        let (root, store, incoming) = try await Self.begun(token, "incoming-expect")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bytes = Self.chunk(3, size: 5000)
        let got = try #require(try await incoming.handle(Self.step(.finish, token, name: "pages-1.img"), bytes[...], store: store).entry)
        let commit = Self.commit(token, expect: [FileEntry(name: "pages-1.img", size: got.size, crc32c: got.crc32c ^ 1)])
        await #expect { _ = try await incoming.handle(commit, [], store: store) } throws: { e in
            "\(e)".contains("pages-1.img") && "\(e)".contains("not committed")
        }
        #expect(store.versions(77).isEmpty, "nothing committed")
    }

    @Test("a commit that arrives before the finish of a file it expects waits for it (the source sends them concurrently)")
    func commitWaitsForALateFinish() async throws {
        let token: UInt64 = 46
        let (root, store, incoming) = try await Self.begun(token, "incoming-late")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bytes = Self.chunk(4, size: 3000)
        let commit = Self.commit(token, expect: [FileEntry(name: "core-1.json", size: UInt64(bytes.count), crc32c: CRC32C.checksum(bytes))])
        let committed = Task { try await incoming.handle(commit, [], store: store) }
        try await Task.sleep(for: .milliseconds(20))
        _ = try await incoming.handle(Self.step(.finish, token, name: "core-1.json"), bytes[...], store: store)
        #expect(try await committed.value.version == 1)
        #expect(try ProcFS.readBytes("\(store.directory(77, version: 1))/core-1.json") == bytes)
    }

    @Test("a commit waiting for a file is woken by a failed write and fails at once, not after its 10 s wait")
    func commitWokenByAFailedWrite() async throws {
        let token: UInt64 = 47
        let (root, store, incoming) = try await Self.begun(token, "incoming-woken")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let bytes = Self.chunk(5, size: 4096)
        let commit = Self.commit(token, expect: [FileEntry(name: "missing/pages-1.img", size: 4096, crc32c: CRC32C.checksum(bytes))])
        let t0 = ContinuousClock.now
        let committed = Task { try await incoming.handle(commit, [], store: store) }
        try await Task.sleep(for: .milliseconds(20))
        // Its directory does not exist: the write fails on the snapshot's queue.
        _ = try await incoming.handle(Self.step(.data, token, name: "missing/pages-1.img"), bytes[...], store: store)
        // With the write's own error (recorded before the commit is woken), not the check of
        // a file that never arrived.
        await #expect { _ = try await committed.value } throws: { e in !"\(e)".contains("not at all") }
        #expect(ContinuousClock.now - t0 < .seconds(5), "the commit waited \(ContinuousClock.now - t0) for a file whose write had failed")
        #expect(store.versions(77).isEmpty, "nothing committed")
    }

    @Test("a write that fails on the target fails that file's finish and the commit, and leaves no version")
    func failedWrite() async throws {
        let token: UInt64 = 43
        let (root, store, incoming) = try await Self.begun(token, "incoming-bad")
        defer { try? FileManager.default.removeItem(atPath: root) }
        // A name the store cannot create (its directory does not exist): the data step is
        // answered (it was queued), the write fails on the queue.
        let c = Self.chunk(1, size: 4096)
        _ = try await incoming.handle(Self.step(.data, token, name: "missing/pages-1.img"), c[...], store: store)
        _ = try await incoming.handle(Self.step(.data, token, name: "core-1.json"), c[...], store: store)
        await #expect(throws: (any Error).self) {
            _ = try await incoming.handle(Self.step(.finish, token, name: "core-1.json"), [], store: store)
        }
        await #expect(throws: (any Error).self) {
            _ = try await incoming.handle(Self.step(.drain, token), [], store: store)
        }
        let commit = Self.commit(token)
        await #expect { _ = try await incoming.handle(commit, [], store: store) } throws: { e in
            "\(e)".contains("missing/pages-1.img")
        }
        #expect(store.versions(77).isEmpty, "nothing committed")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: store.appDirectory(77))) ?? []
        #expect(left.isEmpty, "the temporary directory is gone: \(left)")
        // The token is forgotten: a late step is refused, naming it.
        await #expect { _ = try await incoming.handle(Self.step(.data, token, name: "core-1.json"), c[...], store: store) } throws: { e in
            (e as? SSIError)?.kind == .state && (e as? SSIError)?.message.contains("\(token)") == true
        }
    }
}
