import Foundation
import SSIImage
import SSISystem
import SSITestSupport
import Testing

/// The snapshot format without any process: checksums, atomic versions, and refusal of
/// damaged snapshots. Needs no root.
@Suite("snapshot store")
struct SnapshotStoreTests {
    @Test("CRC-32C matches the Castagnoli check value")
    func crc32c() {
        let v = CRC32C.checksum(Array("123456789".utf8))
        #expect(v == 0xE306_9283)
        // Chained calls equal one call over the whole buffer.
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = data.withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer($0)) }
        let a = data[0..<777].withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer($0)) }
        let b = data[777...].withUnsafeBytes { CRC32C.update(a, UnsafeRawBufferPointer($0)) }
        #expect(whole == b)
        // Combining the CRCs of two pieces gives the CRC of the whole.
        let c = data[777...].withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer($0)) }
        #expect(CRC32C.combine(a, c, lengthOfB: UInt64(data.count - 777)) == whole)
        #expect(CRC32C.combine(whole, 0, lengthOfB: 0) == whole)
        // The three-lane path (24 KiB and more) against a bit-by-bit CRC, at several
        // alignments and lengths around its block size.
        func reference(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for byte in bytes {
                c ^= UInt32(byte)
                for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            }
            return ~c
        }
        for (start, count) in [(0, 24576), (3, 24576 + 5), (1, 49152), (7, 90_000), (0, 24575)] {
            let slice = data[start..<(start + count)]
            #expect(slice.withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer($0)) } == reference(slice), "offset \(start) length \(count)")
        }
    }

    @Test("a large file is verified in parallel pieces, and damage in any piece is found")
    func largeFile() throws {
        let dir = try TestEnv.makeTempDir("store-large")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir, pool: false)
        let w = try store.beginWrite(app: 9)
        var image = ProcessImage(pid: 9)
        image.pagesFile = "pages-9.img"
        var big = [UInt8](repeating: 0x5a, count: 80 << 20)
        for i in stride(from: 0, to: big.count, by: 4093) { big[i] = UInt8(truncatingIfNeeded: i >> 12) }
        try w.addFile("pages-9.img", big)
        try w.addJSON("core-9.json", image)
        _ = try w.commit(description: "", processes: [9], arch: "x86_64")
        _ = try store.open(app: 9, version: 1)
        let path = "\(dir)/9/v1/pages-9.img"
        let fh = FileHandle(forUpdatingAtPath: path)!
        fh.seek(toFileOffset: 70 << 20)
        fh.write(Data([big[70 << 20] ^ 1]))
        fh.closeFile()
        #expect(throws: SSIError.self) { try store.open(app: 9, version: 1) }
    }

    @Test("a manifest's date is written as ISO8601DateFormatter writes it, and reads back")
    func isoDates() {
        let iso = ISO8601DateFormatter()
        // Leap day, year ends, single digits, the epoch, a far year, fractions of a second.
        for t: Double in [0.0, 951_782_400.5, 1_798_761_599.999, 1_764_979_200, 4_102_444_800 + 86_399, 1_765_038_601.25] {
            let d = Date(timeIntervalSince1970: t)
            #expect(ISOTime.string(from: d) == iso.string(from: d), "at \(t)")
            #expect(iso.date(from: ISOTime.string(from: d)) == Date(timeIntervalSince1970: t.rounded(.down)))
        }
        #expect(ISOTime.now().count == 20)
    }

    @Test("versions are numbered from 1, committed whole, and verified on open")
    func writeAndVerify() throws {
        let dir = try TestEnv.makeTempDir("store")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Pages files in the version directory (the page pool has its own tests).
        let store = SnapshotStore(root: dir, pool: false)
        for n in 1...2 {
            let w = try store.beginWrite(app: 42)
            var image = ProcessImage(pid: 42)
            image.comm = "test"
            image.pagesFile = "pages-42.img"
            try w.addFile("pages-42.img", [UInt8](repeating: UInt8(n), count: 8192))
            try w.addJSON("core-42.json", image)
            let (version, _) = try w.commit(description: "v\(n)", processes: [42], arch: "x86_64")
            #expect(version == n)
        }
        #expect(store.versions(42) == [1, 2])
        let snap = try store.open(app: 42, version: nil)
        #expect(snap.manifest.version == 2 && snap.manifest.description == "v2" && snap.processes.first?.comm == "test")
        // One flipped byte is found and the file named.
        let pages = "\(dir)/42/v1/pages-42.img"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: pages))
        bytes[100] ^= 0xff
        try bytes.write(to: URL(fileURLWithPath: pages))
        do {
            _ = try store.open(app: 42, version: 1)
            Issue.record("a corrupt snapshot was accepted")
        } catch let e as SSIError {
            #expect(e.kind == .corrupt && e.message.contains("pages-42.img"), "\(e)")
        }
        // A version copied under another application's id, or renamed to another version,
        // is refused by what its manifest says (it would restore as the wrong application).
        for (app, v) in [(43 as Int32, 2), (42 as Int32, 5)] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(app)", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "\(dir)/42/v2", toPath: "\(dir)/\(app)/v\(v)")
            do {
                _ = try store.open(app: app, version: v)
                Issue.record("v2 of application 42 opened as v\(v) of \(app)")
            } catch let e as SSIError {
                #expect(e.kind == .corrupt && e.message.contains("manifest of application 42 version 2"), "\(e)")
            }
            try FileManager.default.removeItem(atPath: "\(dir)/\(app)/v\(v)")
        }
        // An abandoned write leaves no version.
        let w = try store.beginWrite(app: 42)
        try w.addFile("pages-42.img", [1, 2, 3])
        w.abort()
        #expect(store.versions(42) == [1, 2])
    }

    @Test("a missing version and a manifest of another format are refused clearly")
    func refusals() throws {
        let dir = try TestEnv.makeTempDir("store2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SnapshotStore(root: dir)
        #expect(throws: SSIError.self) { try store.open(app: 7, version: nil) }
        try FileManager.default.createDirectory(atPath: "\(dir)/7/v1", withIntermediateDirectories: true)
        let manifest = Array("{\"format\":\"other\"}".utf8)
        try Data(manifest).write(to: URL(fileURLWithPath: "\(dir)/7/v1/manifest.json"))
        let crc = manifest.withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer($0)) }
        try String(crc, radix: 16).write(toFile: "\(dir)/7/v1/manifest.crc", atomically: false, encoding: .utf8)
        do {
            _ = try store.open(app: 7, version: 1)
            Issue.record("a foreign manifest was accepted")
        } catch let e as SSIError {
            #expect(e.kind == .corrupt && e.message.contains("manifest.json"), "\(e)")
        }
    }
}
