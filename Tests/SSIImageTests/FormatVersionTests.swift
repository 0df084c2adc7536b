import Foundation
import SSIImage
import SSISystem
import SSITestSupport
import Testing

/// Snapshots of every format version this ssi reads, as each version wrote them
/// (Tests/Fixtures/snapshots/v1, v2, v3: one process, its pages, and the fields of that
/// version), are verified and decoded.
@Suite("older snapshot formats")
struct FormatVersionTests {
    static func fixture(_ v: Int) -> String { "\(TestEnv.repoRoot)/Tests/Fixtures/snapshots/v\(v)" }

    @Test("every readable version loads and verifies", arguments: [1, 2, 3])
    func loads(version: Int) throws {
        let snap = try Snapshot.load(directory: FormatVersionTests.fixture(version))
        #expect(snap.manifest.formatVersion == version)
        #expect(SnapshotFormat.readable.contains(version))
        #expect(snap.manifest.processes == [100] && snap.processes.count == 1)
        let p = try #require(snap.processes.first)
        #expect(p.pid == 100 && p.comm == "app" && p.exe == "/usr/bin/app" && p.umask == 0o22)
        #expect(p.rlimits == [RLimit(resource: 7, cur: 1024, max: 4096)])
        #expect(p.mm.auxv == [6, 4096, 0, 0])
        #expect(p.vmas.first?.pages == [PageRun(address: 0x1000_0000, count: 2, fileOffset: 0)])
        #expect(p.threads.first?.registers["rip"] == 0x401000 && p.threads.first?.registers["orig_rax"] == UInt64.max)
        #expect(p.threads.first?.registers.count == 27)
        #expect(p.sigactions.first?.signal == 10)
        // Pages are read through the reader protocol, as a restart reads them.
        let pages = try snap.open("pages-100.img").readAll()
        #expect(pages == (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) })
    }

    @Test("version 1 has no version 2 or 3 field; 2 adds trees, threads, pipes, event fds, timers")
    func fieldsByVersion() throws {
        let v1 = try #require(try Snapshot.load(directory: FormatVersionTests.fixture(1)).processes.first)
        #expect(v1.exitSignal == nil && v1.childSubreaper == nil && v1.intervalTimers == nil && v1.threads.count == 1)
        #expect(v1.threads[0].name == nil && v1.fds.map(\.kind) == [.charDevice, .regular])
        let v2 = try #require(try Snapshot.load(directory: FormatVersionTests.fixture(2)).processes.first)
        #expect(v2.exitSignal == 17 && v2.childSubreaper == true && v2.threads.map(\.tid) == [100, 101])
        #expect(v2.threads.map(\.name) == ["app", "worker"])
        #expect(v2.intervalTimers == [IntervalTimer(which: 0, interval: [1, 0], value: [0, 500_000])])
        #expect(v2.fds.first { $0.kind == .eventfd }?.eventCount == 5 && v2.fds.first { $0.kind == .eventfd }?.sharedID == "100:3")
        #expect(v2.fds.filter { $0.pipeID == 777 }.count == 2 && v2.fds.first { $0.pipeID == 777 }?.pipeData == Data("queued".utf8))
        #expect(v2.fds.allSatisfy { $0.socket == nil && $0.inotifyWatches == nil })
        let v3 = try #require(try Snapshot.load(directory: FormatVersionTests.fixture(3)).processes.first)
        let tcp = try #require(v3.fds.first { $0.kind == .tcpSocket }?.socket)
        #expect(tcp.state == .listening && tcp.backlog == 16 && tcp.family == 2 && tcp.options == ["SO_REUSEADDR": 1])
        #expect(v3.fds.first { $0.kind == .inotify }?.inotifyWatches?.first?.path == "/tmp")
        #expect(v3.threads[1].interruptedSleep?.remainingNanoseconds == 250_000_000)
    }

    @Test("a version this ssi does not know is refused, naming the file and what to do")
    func newerVersionRefused() throws {
        let dir = try TestEnv.makeTempDir("format-v99")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["pages-100.img", "core-100.json"] {
            try FileManager.default.copyItem(atPath: "\(FormatVersionTests.fixture(3))/\(name)", toPath: "\(dir)/\(name)")
        }
        let text = try String(contentsOfFile: "\(FormatVersionTests.fixture(3))/manifest.json", encoding: .utf8)
            .replacingOccurrences(of: "\"formatVersion\" : 3", with: "\"formatVersion\" : 99")
            .replacingOccurrences(of: "\"formatVersion\": 3", with: "\"formatVersion\": 99")
        try text.write(toFile: "\(dir)/manifest.json", atomically: false, encoding: .utf8)
        try String(CRC32C.checksum(Array(text.utf8)), radix: 16).write(toFile: "\(dir)/manifest.crc", atomically: false, encoding: .utf8)
        do {
            _ = try Snapshot.load(directory: dir)
            Issue.record("a version 99 snapshot was accepted")
        } catch let e as SSIError {
            #expect(e.kind == .corrupt && e.message.contains("format version 99") && e.hint?.contains("release that wrote it") == true, "\(e)")
        }
    }
}

/// Format version 9: an area's many page runs are one packed string, its few ones an array.
@Suite("page runs in core files")
struct PageRunCodingTests {
    /// As core files are written (SnapshotFormat.encoder(compact: true)).
    static let encoder: JSONEncoder = { let e = JSONEncoder(); e.outputFormatting = [.sortedKeys]; return e }()

    static func area(runs: Int) -> VMA {
        var v = VMA(start: 0x1000_0000, end: 0x2000_0000, read: true, write: true, exec: false, shared: false, kind: .anonymous,
                    name: "", path: nil, fileOffset: 0, vmFlags: [])
        v.pages = (0..<runs).map { PageRun(address: 0x1000_0000 + UInt64($0) * 0x2000, count: UInt64($0 % 7 + 1), fileOffset: UInt64($0) << 40) }
        return v
    }

    @Test("few runs stay a readable array, many are packed, both read back the same")
    func roundTrip() throws {
        for n in [0, 3, PageRuns.packedFrom - 1, PageRuns.packedFrom, 40_000] {
            var v = PageRunCodingTests.area(runs: n)
            if n == 3 { v.dropPages = [PageRun(address: 0x1000_0000, count: 1, fileOffset: 0)]; v.inherited = true }
            let json = try PageRunCodingTests.encoder.encode(v)
            let text = String(decoding: json, as: UTF8.self)
            #expect(text.contains("\"pages\":[") == (n < PageRuns.packedFrom), "\(n) runs: \(text.prefix(200))")
            #expect(text.contains("\"path\"") == false, "an absent optional is left out, as before")
            #expect(try JSONDecoder().decode(VMA.self, from: json) == v, "\(n) runs")
        }
    }

    @Test("packed runs that are not 24-byte records, or not base64, are refused as corrupt")
    func damaged() throws {
        let good = String(decoding: try PageRunCodingTests.encoder.encode(PageRunCodingTests.area(runs: 100)), as: UTF8.self)
        let packed = try #require(good.range(of: #""pages":"[^"]*""#, options: String.CompareOptions.regularExpression))
        for bad in [#""pages":"AAAA""#, #""pages":"not base64!""#] {
            let text = good.replacingCharacters(in: packed, with: bad)
            #expect(throws: DecodingError.self) { try JSONDecoder().decode(VMA.self, from: Data(text.utf8)) }
        }
    }
}
