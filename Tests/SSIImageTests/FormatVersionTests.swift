import Foundation
import SSIImage
import SSISystem
import SSITestSupport
import Testing

/// Snapshots of every format version this ssi reads, as each version wrote them, are
/// verified and decoded: Tests/Fixtures/snapshots/v1 to v4 are version directories (one
/// process, its pages file, and the fields of that version); v7 to v9 are stores (the
/// version `100/v1` and the application's page pool `100/pool`), since from version 7 on
/// pages live in the pool (v10: v9's content as format 10 wrote it; v11, v12 and v13 the same as formats 11,
/// 12 and 13 wrote it: nothing in it is long enough for the blob file). Versions 5 and 6 were never written (the format went from 4 to 7).
@Suite("older snapshot formats")
struct FormatVersionTests {
    static func fixture(_ v: Int) -> String { "\(TestEnv.repoRoot)/Tests/Fixtures/snapshots/v\(v)" }
    /// Every version a release of ssi wrote, the current one last.
    /// A new format version fails everyVersionCovered until the one before it has a fixture.
    static let written = [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14]
    static let directories = [1, 2, 3, 4], stores = [7, 8, 9, 10, 11, 12, 13]

    /// The older version `v`, opened as a restart opens it. A store's fixture is copied first:
    /// opening a pooled version may make the pool's lock files.
    static func open(_ v: Int) throws -> Snapshot {
        if directories.contains(v) { return try Snapshot.load(directory: fixture(v)) }
        let root = try TestEnv.makeTempDir("format-v\(v)")
        try FileManager.default.removeItem(atPath: root)
        try FileManager.default.copyItem(atPath: fixture(v), toPath: root)
        return try SnapshotStore(root: root).open(app: 100, version: 1)
    }

    @Test("every version ssi wrote is readable, and each older one has its fixture")
    func everyVersionCovered() {
        #expect(Set(SnapshotFormat.readable).isSuperset(of: Self.written))
        #expect(Self.written.last == SnapshotFormat.version && Self.directories + Self.stores == Self.written.dropLast())
        for v in Self.written.dropLast() { #expect(FileManager.default.fileExists(atPath: Self.fixture(v)), "no fixture for version \(v)") }
    }

    @Test("every older version loads and verifies; its pages read back through its runs", arguments: [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13])
    func loads(version: Int) throws {
        let snap = try Self.open(version)
        #expect(snap.manifest.formatVersion == version)
        #expect(SnapshotFormat.readable.contains(version))
        #expect(snap.manifest.processes == [100] && snap.processes.count == 1)
        #expect((snap.manifest.pooled != nil) == Self.stores.contains(version))
        let p = try #require(snap.processes.first)
        #expect(p.pid == 100 && p.comm == "app" && p.exe == "/usr/bin/app" && p.umask == 0o22)
        #expect(p.rlimits == [RLimit(resource: 7, cur: 1024, max: 4096)])
        #expect(p.mm.auxv == [6, 4096, 0, 0])
        #expect(p.vmas.first?.pages.reduce(0) { $0 + $1.count } == 2 && p.vmas.first?.pages.first?.address == 0x1000_0000)
        #expect(p.threads.first?.registers["rip"] == 0x401000 && p.threads.first?.registers["orig_rax"] == UInt64.max)
        #expect(p.threads.first?.registers.count == 27)
        #expect(p.sigactions.first?.signal == 10)
        // Pages are read through the reader protocol and the runs, as a restart reads them
        // (a pooled version's runs point into the pool, where its two equal pages are one).
        let f = try snap.open(p.pagesFile)
        var pages = [UInt8]()
        for run in try #require(p.vmas.first).pages {
            var b = [UInt8](repeating: 0, count: Int(run.count) * 4096)
            try b.withUnsafeMutableBytes { try f.read(into: $0, at: run.fileOffset) }
            pages += b
        }
        #expect(pages == (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) })
    }

    @Test("version 4's fields (locks, THP, UDP with raw options, mlock flag) read the same from 4, 7, 8, 9, 10, 11, 12 and 13", arguments: [4, 7, 8, 9, 10, 11, 12, 13])
    func version4Fields(version: Int) throws {
        let p = try #require(try Self.open(version).processes.first)
        #expect(p.thpDisabled == true)
        #expect(p.fds.first { $0.fd == 1 }?.locks == [FileLock(kind: "POSIX", write: true, start: 0, end: 99), FileLock(kind: "FLOCK", write: false, start: 0, end: nil)])
        let udp = try #require(p.fds.first { $0.kind == .udpSocket }?.socket)
        #expect(udp.state == .unconnected && udp.type == 2 && udp.rawOptions == ["SO_PRIORITY": Data([6, 0, 0, 0])])
        #expect(p.vmas.first?.vmFlags == ["lo"])
        #expect(p.threads.allSatisfy { $0.scheduling == nil } && p.noNewPrivs == nil)
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

/// Format versions 9 and 10: an area's many page runs are one packed string, its few ones an array.
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

    @Test("format 10 packs runs as varint differences, about 5 bytes a page written in the rounds against 24; format 9's records still read")
    func formats() throws {
        // Pages dirtied here and there after a first round: one run each, far in the file.
        var v = PageRunCodingTests.area(runs: 0)
        v.pages = (0..<10_000).map { PageRun(address: 0x1000_0000 + UInt64($0) * 3 * 4096, count: 1, fileOffset: (1 << 30) + UInt64($0) * 4096) }
        let text = String(decoding: try PageRunCodingTests.encoder.encode(v), as: UTF8.self)
        let packed = try #require(text.range(of: #""pages":"d:[^"]*""#, options: String.CompareOptions.regularExpression))
        // Format 9 wrote 32 base64 characters a run.
        #expect(text[packed].count < 10_000 * 8, "\(text[packed].count) characters for 10000 runs")
        // The same runs as format 9 wrote them.
        var old = [UInt8](repeating: 0, count: v.pages.count * 24)
        old.withUnsafeMutableBytes { b in
            for (i, r) in v.pages.enumerated() {
                b.storeBytes(of: r.address.littleEndian, toByteOffset: i * 24, as: UInt64.self)
                b.storeBytes(of: r.count.littleEndian, toByteOffset: i * 24 + 8, as: UInt64.self)
                b.storeBytes(of: r.fileOffset.littleEndian, toByteOffset: i * 24 + 16, as: UInt64.self)
            }
        }
        let v9 = text.replacingCharacters(in: packed, with: "\"pages\":\"\(Data(old).base64EncodedString())\"")
        #expect(try JSONDecoder().decode(VMA.self, from: Data(v9.utf8)) == v)
        #expect(try JSONDecoder().decode(VMA.self, from: Data(text.utf8)) == v)
    }

    @Test("packed runs that are not 24-byte records, not base64, or cut inside a varint are refused as corrupt")
    func damaged() throws {
        let good = String(decoding: try PageRunCodingTests.encoder.encode(PageRunCodingTests.area(runs: 100)), as: UTF8.self)
        let packed = try #require(good.range(of: #""pages":"[^"]*""#, options: String.CompareOptions.regularExpression))
        // "gA==" is 0x80: a varint with no last byte; "AQI=" is one run cut after its count.
        for bad in [#""pages":"AAAA""#, #""pages":"not base64!""#, #""pages":"d:gA==""#, #""pages":"d:AQI=""#, #""pages":"d:!!""#] {
            let text = good.replacingCharacters(in: packed, with: bad)
            #expect(throws: DecodingError.self) { try JSONDecoder().decode(VMA.self, from: Data(text.utf8)) }
        }
    }
}

/// Format version 11: long byte strings (TCP queues, pipe buffers) out of the core file.
@Suite("blob files")
struct BlobFileTests {
    /// A process with a connected TCP socket whose send queue is 300 KiB (a bulk sender) and
    /// receive queue 10 bytes, and a pipe holding 64 KiB.
    static func image() -> ProcessImage {
        var p = ProcessImage(pid: 100)
        var tcp = FileDescriptorImage(fd: 3, kind: .tcpSocket, path: "", flags: 2, closeOnExec: false, position: 0)
        var s = SocketImage(family: 2, type: 1, state: .connected)
        s.tcp = TCPRepairState(sendSeq: 1000, recvSeq: 2000, sendQueue: Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }),
                               recvQueue: Data("0123456789".utf8), mss: 1448, sendWindowScale: 7, recvWindowScale: 7,
                               sack: true, timestamps: true, timestamp: 5, window: [1, 2, 3, 4, 5])
        tcp.socket = s
        var pipe = FileDescriptorImage(fd: 4, kind: .pipe, path: "", flags: 0, closeOnExec: false, position: 0)
        pipe.pipeID = 9
        pipe.pipeData = Data(repeating: 0x5a, count: 65536)
        let plain = FileDescriptorImage(fd: 5, kind: .pipe, path: "", flags: 0, closeOnExec: false, position: 0)
        p.fds = [tcp, pipe, plain]
        return p
    }

    static func write(_ p: ProcessImage, to root: String) throws -> String {
        let w = try SnapshotStore(root: root).beginWrite(app: 100)
        try w.addCore(p)
        _ = try w.commit(description: "", processes: [100], arch: "x86_64")
        return "\(root)/100/v1"
    }

    @Test("long queues go to blobs-PID.img as they are, short ones stay inline, and both read back the same")
    func roundTrip() throws {
        let root = try TestEnv.makeTempDir("blobs")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = try Self.write(Self.image(), to: root)
        let snap = try Snapshot.load(directory: dir)
        #expect(snap.manifest.formatVersion == SnapshotFormat.version)
        let back = try #require(snap.processes.first)
        #expect(back.fds == Self.image().fds)
        let blobs = try ProcFS.readBytes("\(dir)/blobs-100.img")
        #expect(blobs.count == 300_000 + 65536, "the bytes as they are, no base64")
        let core = try String(contentsOfFile: "\(dir)/core-100.json", encoding: .utf8)
        #expect(core.utf8.count < 4096 && core.contains("\"blob\":[") && core.contains(Data("0123456789".utf8).base64EncodedString()), "\(core.prefix(600))")
        #expect(!core.contains("socketData"), "a nil byte string is still left out")
    }

    @Test("a reference outside the blob file, or a blob file the manifest lacks, is refused as corrupt, naming the file")
    func damaged() throws {
        let root = try TestEnv.makeTempDir("blobs-bad")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let dir = try Self.write(Self.image(), to: root)
        // The blob file cut short: its size no longer matches the manifest.
        truncate("\(dir)/blobs-100.img", 1000)
        #expect { try Snapshot.load(directory: dir) } throws: { e in
            let e = e as? SSIError
            return e?.kind == .corrupt && e?.message.contains("blobs-100.img") == true
        }
        // A reference past the end of an intact blob file (the core and manifest rewritten).
        let dir2 = try Self.write(Self.image(), to: root + "/b")
        let core = try String(contentsOfFile: "\(dir2)/core-100.json", encoding: .utf8)
        let bad = core.replacingOccurrences(of: "\"blob\":[0,300000]", with: "\"blob\":[1,400000]")
        #expect(bad != core)
        try Self.rewrite(dir2, "core-100.json", Array(bad.utf8))
        Self.expectCorrupt(dir2, message: "core-100.json", naming: "blobs-100.img")
        // The manifest no longer lists the blob file: the references name bytes it lacks.
        try Self.rewriteManifest(dir2) { m in m.files.removeAll { $0.name == "blobs-100.img" } }
        #expect { try Snapshot.load(directory: dir2) } throws: { e in
            let e = e as? SSIError
            return e?.kind == .corrupt && "\(e!)".contains("blob file")
        }
    }

    @Test("format 12: an area's packed page runs go to the blob file as varint bytes, read back the same; a reference past the file is refused")
    func pageRunsInBlobs() throws {
        let root = try TestEnv.makeTempDir("blobs-runs")
        defer { try? FileManager.default.removeItem(atPath: root) }
        var p = ProcessImage(pid: 100)
        var few = PageRunCodingTests.area(runs: 3)
        few.start = 0x3000_0000; few.end = 0x3001_0000
        // Pages written here and there after a first round: one run each (a pre-copy's).
        var many = PageRunCodingTests.area(runs: 0)
        many.pages = (0..<20_000).map { PageRun(address: 0x1000_0000 + UInt64($0) * 3 * 4096, count: 1, fileOffset: (1 << 30) + UInt64($0) * 4096) }
        p.vmas = [many, few]
        let dir = try Self.write(p, to: root)
        let core = try String(contentsOfFile: "\(dir)/core-100.json", encoding: .utf8)
        #expect(core.contains("\"pages\":{\"blob\":[0,"), "\(core.prefix(400))")
        #expect(core.contains("\"pages\":[["), "few runs stay a readable array")
        #expect(core.utf8.count < 2048, "\(core.utf8.count) bytes of JSON")
        let blobs = try ProcFS.readBytes("\(dir)/blobs-100.img")
        #expect(blobs.count < 20_000 * 7, "\(blobs.count) bytes for 20000 runs")
        let back = try #require(try Snapshot.load(directory: dir).processes.first)
        #expect(back.vmas == p.vmas)
        // The reference cut past the end of the (intact) blob file.
        let bad = core.replacingOccurrences(of: "\"blob\":[0,\(blobs.count)]", with: "\"blob\":[5,\(blobs.count)]")
        #expect(bad != core)
        try Self.rewrite(dir, "core-100.json", Array(bad.utf8))
        Self.expectCorrupt(dir, message: "core-100.json", naming: "blobs-100.img")
    }

    /// Loading `dir` is refused as corrupt, the message naming `message` and the whole error
    /// (with what the decoder said) naming `naming`.
    static func expectCorrupt(_ dir: String, message: String, naming: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(sourceLocation: sourceLocation) { try Snapshot.load(directory: dir) } throws: { e in
            let e = e as? SSIError
            return e?.kind == .corrupt && e?.message.contains(message) == true && "\(e!)".contains(naming)
        }
    }

    /// Replaces a file of the version and its manifest entry (size and CRC).
    static func rewrite(_ dir: String, _ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/\(name)"))
        try rewriteManifest(dir) { m in
            if let i = m.files.firstIndex(where: { $0.name == name }) { m.files[i].size = UInt64(bytes.count); m.files[i].crc32c = CRC32C.checksum(bytes) }
        }
    }

    static func rewriteManifest(_ dir: String, _ change: (inout Manifest) -> Void) throws {
        var m = try JSONDecoder().decode(Manifest.self, from: Data(ProcFS.readBytes("\(dir)/manifest.json")))
        change(&m)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted]
        let bytes = Array(try enc.encode(m))
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/manifest.json"))
        try String(CRC32C.checksum(bytes), radix: 16).write(toFile: "\(dir)/manifest.crc", atomically: false, encoding: .utf8)
    }
}

/// The daemon's warm-up (SnapshotWarmUp, run at its start so that its first migration does
/// not pay the runtime's one-time costs inside the freeze) must go on exercising the core
/// file's encoding and decoding: its image round-trips.
@Test func warmUpImageRoundTrips() {
    #expect(SnapshotWarmUp.run())
}
