import Foundation
import SSIImage
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The image seam without a directory: a snapshot written as an archive down a pipe, read
/// in another thread, and single-file archives read at any offset.
@Suite("archives")
struct ArchiveTests {
    /// What the reader thread got. @unchecked Sendable: written once by the reader thread
    /// before it signals `done`, read by the test only after waiting on it.
    final class Received: @unchecked Sendable {
        var image: MemoryImage?
        var error: Error?
        let done = DispatchSemaphore(value: 0)
    }

    /// 20 MiB: more than a pipe holds and more than one DATA record.
    static let pages: [UInt8] = (0..<(20 << 20)).map { UInt8(truncatingIfNeeded: ($0 >> 12) &* 31 &+ $0) }

    @Test("a snapshot written down a pipe is read whole, verified, by a reader in another thread")
    func throughAPipe() throws {
        var p: [Int32] = [0, 0]
        try #require(pipe(&p) == 0)
        let received = Received()
        let readEnd = p[0]
        Thread.detachNewThread {
            do { received.image = try MemoryImage(receivingFrom: readEnd, location: "pipe") } catch { received.error = error }
            received.done.signal()
        }
        let writer = try ArchiveImageWriter(fd: p[1], location: "pipe", app: 42, version: 7)
        let pagesFile = try writer.createFile("pages-42.img")
        try ArchiveTests.pages.withUnsafeBytes { all in
            var off = 0
            while off < all.count {   // batch by batch, as the engine appends them
                let n = min(3 << 20, all.count - off)
                try pagesFile.append(UnsafeRawBufferPointer(rebasing: all[off..<(off + n)]))
                off += n
            }
        }
        #expect(pagesFile.size == UInt64(ArchiveTests.pages.count))
        try pagesFile.finish(sync: true)
        var image = ProcessImage(pid: 42)
        image.comm = "streamed"
        image.pagesFile = "pages-42.img"
        try writer.addJSON("core-42.json", image)
        let (version, manifest) = try writer.commit(description: "down a pipe", processes: [42], arch: "x86_64")
        close(p[1])
        received.done.wait()
        close(readEnd)
        if let e = received.error { throw e }
        let got = try #require(received.image)
        #expect(version == 7 && got.manifest == manifest && got.manifest.description == "down a pipe")
        #expect(got.processes.map(\.comm) == ["streamed"] && got.location == "pipe")
        let file = try got.open("pages-42.img")
        #expect(file.path == nil && file.size == UInt64(ArchiveTests.pages.count))
        var middle = [UInt8](repeating: 0, count: 10_000)
        try middle.withUnsafeMutableBytes { try file.read(into: $0, at: 9 << 20) }
        #expect(middle == Array(ArchiveTests.pages[(9 << 20)..<((9 << 20) + 10_000)]))
        #expect(try file.readAll() == ArchiveTests.pages)
    }

    /// Writes a two-file archive to `path` and returns it.
    func writeArchive(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        defer { close(fd) }
        let a = try ArchiveWriter(fd: fd, location: path)
        let f = try a.createFile("big")
        try ArchiveTests.pages.withUnsafeBytes { try f.append($0) }
        try f.finish(sync: false)
        let g = try a.createFile("small")
        try Array("hello".utf8).withUnsafeBytes { try g.append($0) }
        try g.finish(sync: false)
        struct Manifest: Encodable { var format = "test", formatVersion = 1, files: [FileEntry] }
        try a.finish { files in Array(try JSONEncoder().encode(Manifest(files: files))) }
    }

    @Test("a single-file archive is read at any offset, across records; damage and truncation are found")
    func singleFile() throws {
        let dir = try TestEnv.makeTempDir("archive")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/a.arc"
        try writeArchive(path)
        let file = try ArchiveFile(path: path)
        #expect(file.manifest.format == "test" && file.manifest.files.map(\.name) == ["big", "small"])
        let at = UInt64(8 << 20) - 100   // straddles the first and second DATA records
        var buf = [UInt8](repeating: 0, count: 300)
        try buf.withUnsafeMutableBytes { try file.read("big", into: $0, at: at) }
        #expect(buf == Array(ArchiveTests.pages[Int(at)..<(Int(at) + 300)]))
        var small = [UInt8](repeating: 0, count: 5)
        try small.withUnsafeMutableBytes { try file.read("small", into: $0, at: 0) }
        #expect(small == Array("hello".utf8))

        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let size = bytes.count
        bytes[5 << 20] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: "\(dir)/flipped.arc"))
        #expect(throws: SSIError.self) { try ArchiveFile(path: "\(dir)/flipped.arc") }
        do { _ = try ArchiveFile(path: "\(dir)/flipped.arc") } catch let e as SSIError {
            #expect(e.message.contains("flipped.arc is corrupt: its CRC-32C does not match its content (file big)"), "\(e)")
        }
        try Data(try Data(contentsOf: URL(fileURLWithPath: path)).prefix(size - 20)).write(to: URL(fileURLWithPath: "\(dir)/cut.arc"))
        do {
            _ = try ArchiveFile(path: "\(dir)/cut.arc")
            Issue.record("a truncated archive was accepted")
        } catch let e as SSIError {
            #expect(e.message.contains("cut.arc is truncated"), "\(e)")
        }
    }
}
