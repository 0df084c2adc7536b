import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The per-application version store: `<root>/<appid>/v<N>/`. Root is $SSI_CHKPT_DIR, or
/// /var/chkpt as in Kerrighed. With `pool` (the default; SSI_PAGE_POOL=off turns it off),
/// pages go to the application's page pool (PagePool.swift) and each version keeps maps.
public struct SnapshotStore: Sendable {
    public let root: String
    public let pool: Bool

    public init(root: String? = nil, pool: Bool? = nil) {
        let env = ProcessInfo.processInfo.environment
        // An empty SSI_CHKPT_DIR is unset (it would make "/<app>" the snapshot directory).
        self.root = root ?? env["SSI_CHKPT_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/chkpt"
        self.pool = pool ?? !["off", "0", "no"].contains(env["SSI_PAGE_POOL"] ?? "")
    }

    public func appDirectory(_ app: Int32) -> String { "\(root)/\(app)" }
    public func directory(_ app: Int32, version: Int) -> String { "\(root)/\(app)/v\(version)" }

    /// Committed versions, ascending. Temporary directories of unfinished checkpoints are ignored.
    public func versions(_ app: Int32) -> [Int] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: appDirectory(app)) else { return [] }
        return names.compactMap { $0.hasPrefix("v") ? Int($0.dropFirst()) : nil }.sorted()
    }

    public func applications() -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap { Int32($0) }.sorted()
    }

    /// Starts writing a new snapshot in a temporary directory beside the versions.
    public func beginWrite(app: Int32) throws -> SnapshotWriter {
        let dir = appDirectory(app)
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            // Foundation's text ("error 512") says nothing: a part of the path that is a file
            // is the usual mistake.
            var st = stat()
            var probe = dir
            while !probe.isEmpty && probe != "/" && stat(probe, &st) != 0 { probe = (probe as NSString).deletingLastPathComponent }
            let why = stat(probe, &st) == 0 && st.st_mode & S_IFMT != S_IFDIR ? "\(probe) is not a directory" : error.localizedDescription
            throw SSIError(.permission, "cannot create snapshot directory \(dir): \(why)",
                           hint: "set SSI_CHKPT_DIR to a writable directory, or run as root")
        }
        // Leftovers of checkpoints killed mid-way: never a version, safe to remove.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix(".tmp-") {
            let parts = name.split(separator: "-")
            if parts.count >= 2, let owner = Int32(parts[1]), kill(owner, 0) != 0 { try? FileManager.default.removeItem(atPath: "\(dir)/\(name)") }
        }
        let tmp = "\(dir)/.tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(tmp, 0o700) == 0 else { throw SSIError.sys("mkdir \(tmp)", errno: errno) }
        return SnapshotWriter(store: self, app: app, tempDir: tmp)
    }

    /// Opens a committed snapshot and verifies every file before anything uses it (with
    /// `verify` false, only sizes and the manifest: for a version whose bytes were checked as
    /// they arrived).
    /// With `deferPageCheck`, the pages kept in the page pool are checked later, by whoever
    /// runs `Snapshot.pageCheck` (a restart, while it rebuilds the processes).
    public func open(app: Int32, version: Int?, verify: Bool = true, deferPageCheck: Bool = false) throws -> Snapshot {
        let all = versions(app)
        guard let v = version ?? all.last else {
            throw SSIError(.notFound, "no snapshot of application \(app) in \(appDirectory(app))",
                           hint: "checkpoint it first (ssi checkpoint \(app)), or set SSI_CHKPT_DIR to where its snapshots are")
        }
        guard all.contains(v) else {
            throw SSIError(.notFound, "application \(app) has no snapshot version \(v) (versions: \(all.map(String.init).joined(separator: ", ")))",
                           hint: "ssi snapshots \(app) lists them")
        }
        let snap = try Snapshot.load(directory: directory(app, version: v), verify: verify, deferPageCheck: deferPageCheck)
        // A version directory renamed or copied in from another application's snapshots
        // would restore that other application under this one's id (its PIDs, its
        // catalog entries): the manifest says whose it is.
        guard snap.manifest.appID == app, snap.manifest.version == v else {
            throw SSIError(.corrupt, "\(directory(app, version: v))/manifest.json is the manifest of application \(snap.manifest.appID) version \(snap.manifest.version), not of application \(app) version \(v)",
                           hint: "the directory was renamed or copied from another snapshot: put it back under \(appDirectory(snap.manifest.appID)), or restart another version")
        }
        return snap
    }
}

/// Writes one snapshot into the version store: files go into a temporary directory, then one
/// rename(2) makes the version appear whole. A checkpoint killed at any instant leaves no
/// half version.
public final class SnapshotWriter: ImageWriter {
    let store: SnapshotStore
    public let app: Int32
    public let tempDir: String
    var entries: [FileEntry] = []
    /// Pages files written into the page pool (their maps are in `entries`).
    var pooled: [PooledFile] = []
    /// The maps of the pooled pages files finished so far, by pages file name: what the
    /// version's pages are in the pool, for the next incremental checkpoint.
    public internal(set) var pageMaps: [String: PoolPages] = [:]
    /// Whether a new page is compared with the pages of every committed version (their maps
    /// read from disk when the first pages file starts: 3-7 ms for one version of 256 MiB,
    /// more with each), or only with this snapshot's own. An incremental checkpoint sets it
    /// false: the pages it copies are those written since the previous version.
    public var compareWithVersions = true
    /// The lowest version number this snapshot may take: a cluster application's versions
    /// are numbered across the cluster (ProcessTable's catalog), not per node, so that a
    /// node that never held one (a migration's target) does not number its first one 1
    /// again while another node holds a different version 1.
    public var firstVersion = 1
    private var session: PoolSession? = nil
    private var committed = false
    /// false: `commit` puts nothing on stable storage (fsync), for a migration's image,
    /// which the target restores from at once while the source still runs the application;
    /// the target syncs it (SnapshotStore.sync) once its copy runs, out of the freeze.
    public var durable = true

    init(store: SnapshotStore, app: Int32, tempDir: String) { self.store = store; self.app = app; self.tempDir = tempDir }

    deinit { if !committed { abort() } }

    public var location: String { tempDir }

    /// Whether version `v` of this snapshot's application is committed (an incremental
    /// checkpoint's references point into it).
    public func versionExists(_ v: Int) -> Bool { store.versions(app).contains(v) }

    public func abort() {
        session?.abort()
        try? FileManager.default.removeItem(atPath: tempDir)
    }

    /// A pages file goes to the page pool when the store pools; any other file to the
    /// temporary directory.
    public func createFile(_ name: String) throws -> any ImageFileWriter {
        guard store.pool, PooledPagesWriter.isPagesFile(name) else { return try DirectoryFileWriter(writer: self, name: name) }
        if session == nil { session = try PoolSession(appDirectory: store.appDirectory(app), readVersions: compareWithVersions) }
        return PooledPagesWriter(writer: self, session: session!, name: name)
    }

    /// Writes the manifest, syncs everything to disk and renames the directory to the next
    /// unused version. Returns the version number. `arch` names the register file the
    /// snapshot holds (the injection library's Arch.name).
    public func commit(description: String, processes: [Int32], arch: String, date: Date) throws -> (Int, Manifest) {
        // The root of the application comes first in `processes`.
        try commit(Manifest(appID: app, version: 0, description: description, date: ISOTime.string(from: date),
                            arch: arch, kernel: SnapshotFormat.kernelRelease(), processes: processes, files: []), version: nil)
    }

    /// Commits as version `copy.version` exactly, with its description, date, arch, kernel
    /// and processes (a copy of a version from another node). Refused if that version exists.
    public func commit(copying copy: Manifest) throws -> (Int, Manifest) { try commit(copy, version: copy.version) }

    private func commit(_ base: Manifest, version fixed: Int?) throws -> (Int, Manifest) {
        if durable { try session?.sync() }
        defer { if committed { session?.release() } }
        while true {
            let version = fixed ?? max(firstVersion, (store.versions(app).last ?? 0) + 1)
            var manifest = base
            (manifest.format, manifest.formatVersion, manifest.appID, manifest.version) = (SnapshotFormat.magic, SnapshotFormat.version, app, version)
            (manifest.files, manifest.pooled) = (entries, pooled.isEmpty ? nil : pooled)
            let bytes: [UInt8]
            do { bytes = Array(try SnapshotFormat.encoder().encode(manifest)) } catch { throw SSIError(.system, "cannot encode manifest: \(error)") }
            try writeWhole("manifest.json", bytes)
            try writeWhole("manifest.crc", Array(String(CRC32C.checksum(bytes), radix: 16).utf8))
            if durable {
                for entry in entries { try fsyncPath("\(tempDir)/\(entry.name)") }
                try fsyncPath(tempDir)
            }
            let target = store.directory(app, version: version)
            if rename(tempDir, target) == 0 {
                committed = true
                if durable { try fsyncPath(store.appDirectory(app)) }
                return (version, manifest)
            }
            let e = errno
            // Another checkpoint took this number first: take the next one.
            if (e == EEXIST || e == ENOTEMPTY) && fixed == nil { continue }
            if e == EEXIST || e == ENOTEMPTY {
                throw SSIError(.busy, "version \(version) of application \(app) already exists in \(store.appDirectory(app))", hint: "ssi snapshots \(app) lists the versions")
            }
            throw SSIError.sys("rename \(tempDir) to \(target)", errno: e)
        }
    }

    /// manifest.json and manifest.crc: written (again, if the version number changed) and
    /// synced, but not listed in the manifest.
    private func writeWhole(_ name: String, _ bytes: [UInt8]) throws {
        let path = "\(tempDir)/\(name)"
        unlink(path)
        let f = try DirectoryFileWriter(path: path)
        try bytes.withUnsafeBytes { (b) throws in try f.append(b) }
        if durable { try f.sync() }
    }
}

extension SnapshotStore {
    /// Puts every file of application `app`'s directory (its versions, its page pool) and
    /// the directories themselves on stable storage: what a non-durable commit left
    /// (SnapshotWriter.durable).
    public func sync(app: Int32) throws {
        let dir = appDirectory(app)
        guard let walker = FileManager.default.enumerator(atPath: dir) else { return }
        while let rel = walker.nextObject() as? String {
            if rel.split(separator: "/").contains(where: { $0.hasPrefix(".tmp") }) { continue }
            try fsyncPath("\(dir)/\(rel)")
        }
        try fsyncPath(dir)
    }
}

func fsyncPath(_ path: String) throws {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw SSIError.sys("open \(path)", errno: errno) }
    defer { close(fd) }
    if fsync(fd) != 0 { throw SSIError.sys("fsync \(path)", errno: errno) }
}

/// A file of a snapshot directory, written sequentially with a running CRC-32C.
final class DirectoryFileWriter: ImageFileWriter {
    let path: String
    let name: String
    let fd: Int32
    private weak var writer: SnapshotWriter?
    private(set) var size: UInt64 = 0
    private var crc: UInt32 = 0

    init(writer: SnapshotWriter, name: String) throws {
        self.writer = writer
        self.name = name
        path = "\(writer.tempDir)/\(name)"
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 { throw SSIError.sys("create \(path)", errno: errno) }
    }

    init(path: String) throws {
        self.path = path
        name = (path as NSString).lastPathComponent
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 { throw SSIError.sys("create \(path)", errno: errno) }
    }

    deinit { close(fd) }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        crc = CRC32C.update(crc, bytes)
        try writeAll(fd, bytes, what: "write \(path)", whenFull: "free space in the snapshot directory")
        size += UInt64(bytes.count)
    }

    func sync() throws {
        if fsync(fd) != 0 { throw SSIError.sys("fsync \(path)", errno: errno) }
    }

    func finish(sync: Bool) throws -> FileEntry {
        if sync { try self.sync() }
        let entry = FileEntry(name: name, size: size, crc32c: crc)
        writer?.entries.append(entry)
        return entry
    }
}

/// A verified snapshot of the version store, ready for restart.
public struct Snapshot: ImageReader, Sendable {
    public let directory: String
    public let manifest: Manifest
    /// Version 7: the processes' page runs of pooled pages files point into the pool file.
    public let processes: [ProcessImage]
    /// The page pool file, when the version keeps pages there.
    public let poolPath: String?
    /// The check of the pool's pages still to run (`load` with `deferPageCheck`); nil when
    /// every byte was checked already or is not to be.
    public var pageCheck: DeferredPageCheck? = nil

    public var location: String { directory }

    /// A pooled pages file opens as the pool file itself: `processes` name pool offsets.
    public func open(_ name: String) throws -> any ImageFileReader {
        if let poolPath, manifest.pooled?.contains(where: { $0.name == name }) == true { return try DirectoryFileReader(path: poolPath) }
        guard manifest.files.contains(where: { $0.name == name }) else {
            throw SSIError(.corrupt, "\(directory)/manifest.json does not list \(name)")
        }
        return try DirectoryFileReader(path: "\(directory)/\(name)")
    }

    /// Refuses, naming the file, anything truncated, corrupt, of another format version, or
    /// not a SwiftSSI snapshot at all. Nothing is used before everything checks out.
    public static func load(directory dir: String, verify checkBytes: Bool = true, deferPageCheck: Bool = false) throws -> Snapshot {
        let mpath = "\(dir)/manifest.json"
        let mbytes: [UInt8]
        // A manifest lists files and processes: a few MB for the largest application. One of
        // gigabytes (a damaged or planted file) is refused before it is read into memory.
        var mst = stat()
        if stat(mpath, &mst) == 0, mst.st_size > 64 << 20 {
            throw SSIError(.corrupt, "\(mpath) is \(mst.st_size) bytes, far more than a SwiftSSI manifest (64 MiB at most): \(dir) is not a sound snapshot", hint: "restart another version")
        }
        do { mbytes = try ProcFS.readBytes(mpath) } catch {
            throw SSIError(.corrupt, "\(mpath) is missing or unreadable: \(dir) is not a complete SwiftSSI snapshot", hint: "restart another version")
        }
        let crcText = (try? ProcFS.read("\(dir)/manifest.crc"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        guard let expected = UInt32(crcText, radix: 16), expected == CRC32C.checksum(mbytes) else {
            throw SSIError(.corrupt, "\(mpath) is corrupt (its checksum in manifest.crc does not match)", hint: "restart another version")
        }
        let manifest = try SnapshotFormat.decodeManifest(mbytes, where: mpath)
        // Registers, syscall numbers and the restorer are this machine's (uname(2) names it
        // as the snapshot does: "x86_64").
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if !manifest.arch.isEmpty, !machine.isEmpty, manifest.arch != machine {
            throw SSIError(.unsupported, "\(dir) is a snapshot of an \(manifest.arch) machine; this one is \(machine)", hint: "restart it on an \(manifest.arch) node")
        }
        for entry in manifest.files {
            try verify(entry, in: dir, bytes: checkBytes)
        }
        var clock = PhaseClock()
        let procs = try SnapshotFormat.decodeProcesses(manifest, where: mpath, read: { try ProcFS.readBytes("\(dir)/\($0)") }, location: dir)
        clock.mark("load: core files")
        guard let pool = try ResolvedPool.load(manifest, dir: dir, verify: checkBytes, deferCheck: deferPageCheck) else { return Snapshot(directory: dir, manifest: manifest, processes: procs, poolPath: nil) }
        clock.mark("load: page pool maps")
        defer { clock.mark("load: runs translated") }
        var snap = Snapshot(directory: dir, manifest: manifest, processes: try procs.map(pool.translate), poolPath: pool.poolPath)
        snap.pageCheck = pool.deferred
        return snap
    }

    static func verify(_ entry: FileEntry, in dir: String, bytes: Bool = true) throws {
        let path = "\(dir)/\(entry.name)"
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SSIError(.corrupt, "\(path) is missing from the snapshot", hint: "restart another version") }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        guard UInt64(st.st_size) == entry.size else {
            throw SSIError(.corrupt, "\(path) is truncated or extended: \(st.st_size) bytes, the manifest says \(entry.size)", hint: "restart another version")
        }
        guard bytes else { return }
        // Large files are checksummed in one piece per core, in parallel, and the pieces'
        // CRCs combined: verifying comes before every restart, so it is on the critical path.
        let pieces = entry.size >= 64 << 20 ? max(1, ProcessInfo.processInfo.activeProcessorCount) : 1
        let pieceSize = (entry.size + UInt64(pieces) - 1) / UInt64(pieces)
        let results = PieceResults(capacity: pieces)
        defer { results.slots.deallocate() }
        let fdCopy = fd
        // The file mapped read-only: each piece is checksummed where it lies (page cache or
        // tmpfs pages), without first copying it into a buffer (pread): half the memory
        // traffic of verifying. pread remains for a file that cannot be mapped. (The size was
        // checked just above; the snapshot is ours and not written any more.)
        let mapped = entry.size > 0 ? mmap(nil, Int(entry.size), PROT_READ, MAP_SHARED, fd, 0) : nil
        if let m = mapped, m != MAP_FAILED {
            defer { munmap(m, Int(entry.size)) }
            let base = MappedBytes(UnsafeRawPointer(m))
            DispatchQueue.concurrentPerform(iterations: pieces) { i in
                let start = UInt64(i) * pieceSize, end = min(entry.size, start + pieceSize)
                let bytes = UnsafeRawBufferPointer(start: base.pointer + Int(start), count: Int(end - start))
                results.slots[i] = (CRC32C.update(0, bytes), 0)
            }
        } else {
            DispatchQueue.concurrentPerform(iterations: pieces) { i in
                let start = UInt64(i) * pieceSize, end = min(entry.size, start + pieceSize)
                results.slots[i] = readPieceCRC(fdCopy, start, end)
            }
        }
        var crc: UInt32 = 0
        for i in 0..<pieces {
            if results.slots[i].errno != 0 { throw SSIError.sys("read \(path)", errno: results.slots[i].errno) }
            let start = UInt64(i) * pieceSize, end = min(entry.size, start + pieceSize)
            crc = i == 0 ? results.slots[i].crc : CRC32C.combine(crc, results.slots[i].crc, lengthOfB: end - start)
        }
        guard crc == entry.crc32c else {
            throw SSIError(.corrupt, "\(path) is corrupt: its CRC-32C is \(String(crc, radix: 16)), the manifest says \(String(entry.crc32c, radix: 16))",
                           hint: "restart another version")
        }
    }
}

/// CRC-32C of bytes [start, end) of `fd`, read with pread; or the errno of a failed read.
private func readPieceCRC(_ fd: Int32, _ start: UInt64, _ end: UInt64) -> (crc: UInt32, errno: Int32) {
    let chunk = 8 << 20
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
    defer { buf.deallocate() }
    var crc: UInt32 = 0
    var off = start
    while off < end {
        let n = pread(fd, buf.baseAddress, Int(min(UInt64(chunk), end - off)), off_t(off))
        if n < 0 { if errno == EINTR { continue }; return (0, errno) }
        if n == 0 { break }
        crc = CRC32C.update(crc, UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        off += UInt64(n)
    }
    return (crc, 0)
}

/// A read-only mapping shared by the pieces of a parallel checksum. @unchecked Sendable: the
/// bytes are only read, and unmapped after concurrentPerform returns.
struct MappedBytes: @unchecked Sendable {
    let pointer: UnsafeRawPointer
    init(_ p: UnsafeRawPointer) { pointer = p }
}

/// One slot per piece of a parallel checksum. @unchecked Sendable: each concurrentPerform
/// iteration writes only its own slot, and the slots are read after concurrentPerform returns.
final class PieceResults: @unchecked Sendable {
    let slots: UnsafeMutableBufferPointer<(crc: UInt32, errno: Int32)>
    init(capacity: Int) {
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: (0, 0))
    }
}

/// A file of a snapshot directory, read with pread(2); restored processes open `path`.
final class DirectoryFileReader: ImageFileReader {
    let path: String?
    let size: UInt64
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SSIError.sys("open \(path)", errno: errno) }
        var st = stat()
        fstat(fd, &st)
        size = UInt64(st.st_size)
    }

    deinit { close(fd) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("read \(path ?? "")", errno: errno) }
            if n == 0 { throw SSIError(.corrupt, "\(path ?? "") is shorter than the snapshot says") }
            done += n
        }
    }
}
