import Foundation
import SSIImage
import SSISystem
import SSITestSupport
import Testing

/// Incremental versions (issue 16): the page pool, written and read through the same
/// writer and reader protocols as the engine uses. Needs no root.
@Suite("page pool")
struct PagePoolTests {
    static let page = 4096

    /// `count` pages, page i filled from (seed + i); `changed` pages get another seed.
    static func pages(_ count: Int, seed: Int, changed: Set<Int> = []) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count * page)
        for i in 0..<count {
            let s = changed.contains(i) ? seed &* 7919 &+ i : i
            for k in stride(from: 0, to: page, by: 8) { out[i * page + k] = UInt8(truncatingIfNeeded: s &+ k / 8 &* 31) }
            out[i * page + 1] = UInt8(truncatingIfNeeded: s >> 8)
        }
        return out
    }

    /// One version: pages files for `pids` (written as the engine does, in batches), a core
    /// file each whose one VMA covers every page.
    @discardableResult
    static func write(_ store: SnapshotStore, app: Int32, files: [Int32: [UInt8]]) throws -> (Int, Manifest) {
        let w = try store.beginWrite(app: app)
        for (pid, bytes) in files.sorted(by: { $0.key < $1.key }) {
            let f = try w.createFile("pages-\(pid).img")
            for start in stride(from: 0, to: bytes.count, by: 5 * page) {
                try bytes[start..<min(bytes.count, start + 5 * page)].withUnsafeBytes { try f.append($0) }
            }
            try f.finish(sync: false)
        }
        for (pid, bytes) in files.sorted(by: { $0.key < $1.key }) {
            var image = ProcessImage(pid: pid)
            image.pagesFile = "pages-\(pid).img"
            var vma = VMA(start: 0x10000000, end: 0x10000000 + UInt64(bytes.count), read: true, write: true, exec: false, shared: false,
                          kind: .anonymous, name: "", path: nil, fileOffset: 0, vmFlags: [])
            vma.pages = [PageRun(address: vma.start, count: UInt64(bytes.count / page), fileOffset: 0)]
            image.vmas = [vma]
            try w.addJSON("core-\(pid).json", image)
        }
        return try w.commit(description: "", processes: files.keys.sorted(), arch: "x86_64")
    }

    /// The pages of `pid` as the restored process would get them: through the page runs the
    /// reader gives, from the file it opens.
    static func restored(_ snap: Snapshot, pid: Int32) throws -> [UInt8] {
        let p = try #require(snap.processes.first { $0.pid == pid })
        let f = try snap.open(p.pagesFile)
        var out = [UInt8]()
        for run in p.vmas[0].pages {
            var b = [UInt8](repeating: 0, count: Int(run.count) * page)
            try b.withUnsafeMutableBytes { try f.read(into: $0, at: run.fileOffset) }
            out += b
        }
        return out
    }

    @Test("a second version with 1% of its pages changed adds about 1%, and each version restores its own pages")
    func incremental() throws {
        let dir = try TestEnv.makeTempDir("pool-incr")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir, pool: true)
        let v1 = PagePoolTests.pages(1000, seed: 1)
        let v2 = PagePoolTests.pages(1000, seed: 2, changed: Set(stride(from: 3, to: 1000, by: 100)))
        let (_, m1) = try PagePoolTests.write(store, app: 5, files: [5: v1])
        let (_, m2) = try PagePoolTests.write(store, app: 5, files: [5: v2])
        #expect(m1.formatVersion == SnapshotFormat.version && m1.pooled?.first?.addedBytes == UInt64(v1.count))
        #expect(m2.pooled?.first?.addedBytes == UInt64(10 * PagePoolTests.page), "\(m2.pooled ?? [])")
        #expect(m2.totalBytes > UInt64(v2.count) && m2.addedBytes < UInt64(v2.count) / 50)
        #expect(try PagePoolTests.restored(try store.open(app: 5, version: 1), pid: 5) == v1)
        #expect(try PagePoolTests.restored(try store.open(app: 5, version: 2), pid: 5) == v2)
        // The version as another node gets it: the pages file whole, with the engine's CRC.
        let (m, files) = try store.portable(app: 5, version: 2)
        let pf = try #require(files.first { $0.name == "pages-5.img" })
        #expect(pf.size == UInt64(v2.count) && pf.crc32c == CRC32C.checksum(v2) && m.version == 2)
        let part = try store.readPortable(app: 5, version: 2, name: "pages-5.img", offset: 3 * 4096 + 100, length: 10_000)
        #expect(part == Array(v2[(3 * 4096 + 100)..<(3 * 4096 + 100 + 10_000)]))
    }

    @Test("identical pages of two processes are stored once; an abandoned version leaves nothing in the pool")
    func acrossProcesses() throws {
        let dir = try TestEnv.makeTempDir("pool-procs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir, pool: true)
        let shared = PagePoolTests.pages(64, seed: 1)
        let (_, m) = try PagePoolTests.write(store, app: 6, files: [6: shared, 7: shared])
        #expect(m.addedBytes < UInt64(shared.count) + 8192, "\(m.pooled ?? [])")
        let snap = try store.open(app: 6, version: 1)
        #expect(try PagePoolTests.restored(snap, pid: 7) == shared)
        let pool = "\(dir)/6/pool/pages.img"
        var st = stat()
        stat(pool, &st)
        let before = st.st_blocks
        let w = try store.beginWrite(app: 6)
        let f = try w.createFile("pages-6.img")
        try PagePoolTests.pages(16, seed: 9, changed: Set(0..<16)).withUnsafeBytes { try f.append($0) }
        w.abort()
        stat(pool, &st)
        #expect(st.st_blocks <= before, "the abandoned version's pages stay allocated")
        #expect(store.versions(6) == [1])
    }

    @Test("deleting a version keeps every other one whole and frees the pages only it held; unknown versions are refused")
    func delete() throws {
        let dir = try TestEnv.makeTempDir("pool-delete")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir, pool: true)
        let v1 = PagePoolTests.pages(300, seed: 1)
        let v2 = PagePoolTests.pages(300, seed: 2, changed: Set(0..<30))
        let v3 = PagePoolTests.pages(300, seed: 3, changed: Set(0..<30))
        for v in [v1, v2, v3] { try PagePoolTests.write(store, app: 8, files: [8: v]) }
        let freed = try store.delete(app: 8, version: 2)
        #expect(freed == UInt64(30 * PagePoolTests.page), "freed \(String(describing: freed))")
        #expect(store.versions(8) == [1, 3])
        #expect(try PagePoolTests.restored(try store.open(app: 8, version: 3), pid: 8) == v3)
        try store.delete(app: 8, version: 1)
        #expect(try PagePoolTests.restored(try store.open(app: 8, version: 3), pid: 8) == v3)
        do {
            try store.delete(app: 8, version: 2)
            Issue.record("deleting a deleted version was accepted")
        } catch let e as SSIError {
            #expect(e.kind == .notFound && e.message.contains("version 2") && e.message.contains("versions: 3"), "\(e)")
        }
    }

    @Test("a corrupt pool page is refused at open, naming the version and the page; a lone copied version names its missing pool")
    func corruptPage() throws {
        let dir = try TestEnv.makeTempDir("pool-corrupt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir, pool: true)
        let v1 = PagePoolTests.pages(40, seed: 1)
        try PagePoolTests.write(store, app: 9, files: [9: v1])
        try PagePoolTests.write(store, app: 9, files: [9: PagePoolTests.pages(40, seed: 2, changed: [17])])
        // Page 17 of v2 is the pool's slot 40 (v1 took 0-39).
        let fh = try #require(FileHandle(forUpdatingAtPath: "\(dir)/9/pool/pages.img"))
        fh.seek(toFileOffset: 40 * 4096 + 123)
        fh.write(Data([0x42]))
        fh.closeFile()
        do {
            _ = try store.open(app: 9, version: 2)
            Issue.record("a corrupt pool page was accepted")
        } catch let e as SSIError {
            #expect(e.kind == .corrupt && e.message.contains("v2") && e.message.contains("page 17 of pages-9.img"), "\(e)")
        }
        #expect(try PagePoolTests.restored(try store.open(app: 9, version: 1), pid: 9) == v1)
        // A version directory copied without its application's pool.
        let other = try TestEnv.makeTempDir("pool-lone")
        defer { try? FileManager.default.removeItem(atPath: other) }
        try FileManager.default.createDirectory(atPath: "\(other)/9", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(dir)/9/v1", toPath: "\(other)/9/v1")
        #expect { try Snapshot.load(directory: "\(other)/9/v1") } throws: { e in
            (e as? SSIError)?.message.contains("page pool") == true
        }
    }

    @Test("bytes appended in pieces that are not pages, and a last partial page, read back the same, with the same CRC")
    func unalignedAppends() throws {
        let dir = try TestEnv.makeTempDir("pool-unaligned")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir, pool: true)
        let bytes = Array(PagePoolTests.pages(3, seed: 1).prefix(2 * 4096 + 1234))
        let w = try store.beginWrite(app: 4)
        let f = try w.createFile("pages-4.img")
        for start in stride(from: 0, to: bytes.count, by: 1000) {
            try bytes[start..<min(bytes.count, start + 1000)].withUnsafeBytes { try f.append($0) }
        }
        let e = try f.finish(sync: true)
        #expect(e.size == UInt64(bytes.count) && e.crc32c == CRC32C.checksum(bytes))
        try w.addJSON("core-4.json", ProcessImage(pid: 4))
        _ = try w.commit(description: "", processes: [4], arch: "x86_64")
        _ = try store.open(app: 4, version: 1)
        #expect(try store.readPortable(app: 4, version: 1, name: "pages-4.img", offset: 0, length: 1 << 20) == bytes)
    }

    @Test("a copy committed under the version it came with; that version taken already is refused")
    func commitCopy() throws {
        let dir = try TestEnv.makeTempDir("pool-copy")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let from = SnapshotStore(root: "\(dir)/a", pool: true), to = SnapshotStore(root: "\(dir)/b", pool: true)
        let bytes = PagePoolTests.pages(20, seed: 1)
        try PagePoolTests.write(from, app: 3, files: [3: bytes])
        try PagePoolTests.write(from, app: 3, files: [3: bytes])
        let (m, files) = try from.portable(app: 3, version: 2)
        for attempt in 0..<2 {
            let w = try to.beginWrite(app: 3)
            for f in files {
                let out = try w.createFile(f.name)
                let b = try from.readPortable(app: 3, version: 2, name: f.name, offset: 0, length: Int(f.size))
                try b.withUnsafeBytes { try out.append($0) }
                let e = try out.finish(sync: false)
                #expect(e.size == f.size && e.crc32c == f.crc32c)
            }
            if attempt == 0 {
                let (v, got) = try w.commit(copying: m)
                #expect(v == 2 && got.date == m.date && to.versions(3) == [2])
            } else {
                #expect(throws: SSIError.self) { try w.commit(copying: m) }
            }
        }
        #expect(try PagePoolTests.restored(try to.open(app: 3, version: 2), pid: 3) == bytes)
    }
}
