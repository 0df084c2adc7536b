import CSSILinux
import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The IPC snapshot file (docs/ipc.md, "File format"). Version 2 is an archive, the same
/// container and checksums as snapshots sent over a stream (SSIImage, Archive.swift):
///
///     ipc.json   the metadata: JSON (IPCSnapshotInfo), sorted keys
///     payload    messages, or pages (empty for semaphores)
///     manifest   {"format": "swiftssi-ipc", "formatVersion": 2, "kind": ..., "files": [...]}
///
/// Version 1 files, a format of their own (LegacySnapshotFile.swift), are still read.
public enum IPCSnapshotFormat {
    /// Version 1's magic, at the start of the files it wrote.
    public static let legacyMagic: [UInt8] = Array("SSI-IPC\n".utf8)
    public static let formatName = "swiftssi-ipc"
    public static let version: UInt32 = 2
    static let infoFile = "ipc.json"
    static let payloadFile = "payload"
}

/// The manifest of an IPC archive.
struct IPCManifest: Codable {
    var format: String
    var formatVersion: Int
    var kind: IPCKind
    var files: [FileEntry]
}

/// The metadata of an IPC snapshot: which object, its identity and permissions, and
/// per-kind facts about its content.
public struct IPCSnapshotInfo: Codable, Sendable, Equatable {
    public var format: String
    public var formatVersion: Int
    public var kind: IPCKind
    public var key: Int32
    public var id: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// Creator ids: informative only, a restored object's creator is whoever restores it.
    public var cuid: UInt32
    public var cgid: UInt32
    /// The 9 permission bits.
    public var mode: UInt32
    public var date: String
    public var kernel: String
    public var queue: QueueInfo?
    public var semaphores: SemaphoreInfo?
    public var segment: SegmentInfo?

    public struct QueueInfo: Codable, Sendable, Equatable {
        /// msg_qbytes: the most bytes (and messages) the queue may hold.
        public var qbytes: UInt64
        public var messages: Int
        /// Sum of the message texts.
        public var bytes: UInt64
        /// msg_stime, msg_rtime, msg_lspid, msg_lrpid when the queue was saved: informative,
        /// no interface sets them on restore. Absent in files written before they were
        /// recorded; readers that do not know them ignore them (JSON keys).
        public var sendTime: Int64?
        public var receiveTime: Int64?
        public var lastSender: Int32?
        public var lastReceiver: Int32?
        /// How the messages were read: "copy" (msgrcv MSG_COPY) or "drain" (received and sent back).
        public var readBy: String?
    }

    public struct SemaphoreInfo: Codable, Sendable, Equatable {
        public var values: [UInt16]
    }

    public struct SegmentInfo: Codable, Sendable, Equatable {
        /// shm_segsz, as given to shmget.
        public var size: UInt64
        public var pageSize: Int
        /// The saved pages as runs [first page, page count], in order; the payload holds
        /// them concatenated, pageSize bytes each.
        public var runs: [[UInt64]]
        public var pages: UInt64
        /// SHM_LOCK was in effect.
        public var locked: Bool
        /// IPC_RMID had been called while processes were attached (SHM_DEST).
        public var markedForRemoval: Bool
        public var attached: UInt64
    }

    init(kind: IPCKind, perm: cssi_ipc_perm, id: Int32) {
        format = IPCSnapshotFormat.formatName
        formatVersion = Int(IPCSnapshotFormat.version)
        self.kind = kind
        key = perm.key
        self.id = id
        uid = perm.uid; gid = perm.gid; cuid = perm.cuid; cgid = perm.cgid
        mode = perm.mode & 0o777
        date = ISOTime.now()
        var u = utsname()
        uname(&u)
        kernel = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// One line for users: "message queue id 0 key 0x00001234".
    public var objectDescription: String { "\(kind.name) id \(id) key \(hexKey(key))" }
}

/// Writes a snapshot: created with O_EXCL and mode 0600; `abort()` (or a throw from the
/// caller before `finish()`) removes it.
final class IPCSnapshotWriter {
    let path: String
    private var fd: Int32
    private let archive: ArchiveWriter
    private let payload: ArchiveFileWriter
    private let kind: IPCKind
    private var payloadLeft: UInt64
    private var finished = false

    init(path: String, info: IPCSnapshotInfo, payloadLength: UInt64) throws {
        self.path = path
        kind = info.kind
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let meta = try Array(enc.encode(info))
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            let e = errno
            switch e {
            case EEXIST: throw SSIError(.busy, "\(path) already exists", hint: "choose another file name, or remove it first; a snapshot is never overwritten", errno: e)
            case ENOENT: throw SSIError(.notFound, "cannot create \(path): its directory does not exist", hint: "create the directory first", errno: e)
            default: throw SSIError.sys("cannot create \(path)", errno: e)
            }
        }
        payloadLeft = payloadLength
        // The umask can only clear bits of 0600; fchmod makes the mode exact anyway.
        fchmod(fd, 0o600)
        do {
            archive = try ArchiveWriter(fd: fd, location: path)
            let f = try archive.createFile(IPCSnapshotFormat.infoFile)
            try meta.withUnsafeBytes { try f.append($0) }
            try f.finish(sync: false)
            payload = try archive.createFile(IPCSnapshotFormat.payloadFile)
        } catch {
            close(fd)
            unlink(path)
            finished = true
            throw error
        }
    }

    deinit { if !finished { abort() } }

    /// Payload bytes: counted against the length announced at creation.
    func writePayload(raw: UnsafeRawBufferPointer) throws {
        precondition(UInt64(raw.count) <= payloadLeft, "payload longer than announced")
        payloadLeft -= UInt64(raw.count)
        try payload.append(raw)
    }

    /// Writes the manifest and makes the file durable. Returns its size.
    func finish() throws -> UInt64 {
        precondition(payloadLeft == 0, "payload shorter than announced")
        try payload.finish(sync: false)
        try archive.finish { files in
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            return Array(try enc.encode(IPCManifest(format: IPCSnapshotFormat.formatName, formatVersion: Int(IPCSnapshotFormat.version),
                                                    kind: kind, files: files)))
        }
        if fsync(fd) < 0 { throw SSIError.sys("cannot write \(path) to disk (fsync)", errno: errno) }
        var st = stat()
        fstat(fd, &st)
        close(fd)
        fd = -1
        finished = true
        return UInt64(st.st_size)
    }

    func abort() {
        if fd >= 0 { close(fd); fd = -1 }
        if !finished { unlink(path) }
        finished = true
    }
}

/// Opens and fully verifies a snapshot, of either version, before anything is restored
/// from it.
final class IPCSnapshotReader {
    let path: String
    let info: IPCSnapshotInfo
    let payloadLength: UInt64
    private let archive: ArchiveFile?
    private let legacy: LegacySnapshotFile?

    init(path: String, expecting expected: IPCKind?) throws {
        self.path = path
        let notIPC = "give a file written by `ssi ipc checkpoint`"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            throw SSIError.sys("cannot open \(path)", errno: e, hint: e == ENOENT ? notIPC : nil)
        }
        var st = stat()
        fstat(fd, &st)
        let magic = (try? LegacySnapshotFile.pread(fd, count: 8, at: 0, path: path)) ?? []
        close(fd)
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw SSIError(.invalidArgument, "\(path) is not a regular file", hint: notIPC) }
        if magic == IPCSnapshotFormat.legacyMagic {
            let file = try LegacySnapshotFile(path: path)
            legacy = file
            archive = nil
            info = file.info
            payloadLength = file.payloadLength
        } else if magic == ArchiveFormat.magic {
            let (file, decoded) = try IPCSnapshotReader.openArchive(path)
            archive = file
            legacy = nil
            info = decoded
            payloadLength = file.size(of: IPCSnapshotFormat.payloadFile) ?? 0
        } else {
            throw SSIError(.corrupt, "\(path) is not a SwiftSSI IPC snapshot (no SwiftSSI magic at its start)", hint: notIPC)
        }
        if let expected, expected != info.kind {
            throw SSIError(.invalidArgument, "\(path) holds a \(info.kind.name), not a \(expected.name)",
                           hint: "restore it with `ssi ipc restart \(info.kind.option) \(path)`" + (expected == .sharedMemory && info.kind == .messageQueue ? " (Kerrighed's manual wrote -m for message queues; SwiftSSI uses -q)" : ""))
        }
        try validate()
    }

    /// A version 2 file: the archive, verified whole, and its metadata.
    private static func openArchive(_ path: String) throws -> (ArchiveFile, IPCSnapshotInfo) {
        let file = try ArchiveFile(path: path)
        guard file.manifest.format == IPCSnapshotFormat.formatName else {
            throw SSIError(.corrupt, "\(path) is not a SwiftSSI IPC snapshot (it holds a \(file.manifest.format))", hint: "give a file written by `ssi ipc checkpoint`")
        }
        guard file.manifest.formatVersion == Int(IPCSnapshotFormat.version) else {
            throw SSIError(.unsupported, "\(path) is an IPC snapshot of format version \(file.manifest.formatVersion); this ssi reads versions 1 and \(IPCSnapshotFormat.version)",
                           hint: "restore it with the ssi that wrote it")
        }
        func bad(_ why: String) -> SSIError { SSIError(.corrupt, "\(path) is corrupt: \(why)", hint: "the snapshot is damaged; use another copy") }
        guard let metaSize = file.size(of: IPCSnapshotFormat.infoFile), file.size(of: IPCSnapshotFormat.payloadFile) != nil, metaSize < 1 << 30 else {
            throw bad("it lacks its metadata or its payload")
        }
        var meta = [UInt8](repeating: 0, count: Int(metaSize))
        try meta.withUnsafeMutableBytes { try file.read(IPCSnapshotFormat.infoFile, into: $0, at: 0) }
        let decoded: IPCSnapshotInfo
        do { decoded = try JSONDecoder().decode(IPCSnapshotInfo.self, from: Data(meta)) } catch { throw bad("unreadable metadata (\(error))") }
        let manifestKind = (try? JSONDecoder().decode(IPCManifest.self, from: Data(file.manifestJSON)))?.kind
        guard decoded.format == IPCSnapshotFormat.formatName, manifestKind == decoded.kind else { throw bad("its metadata does not match its manifest") }
        return (file, decoded)
    }

    /// Consistency of the metadata with the payload, so that restore cannot fail half way
    /// because of the file.
    private func validate() throws {
        func bad(_ why: String) -> SSIError { SSIError(.corrupt, "\(path) is corrupt: \(why)", hint: "the snapshot is damaged; use another copy") }
        switch info.kind {
        case .messageQueue:
            guard let q = info.queue, payloadLength == q.bytes + 16 * UInt64(q.messages) else { throw bad("message queue sizes do not add up") }
        case .semaphoreArray:
            guard let s = info.semaphores, !s.values.isEmpty, payloadLength == 0 else { throw bad("no semaphore values") }
        case .sharedMemory:
            guard let g = info.segment, g.pageSize > 0, g.pageSize & (g.pageSize - 1) == 0 else { throw bad("no segment description") }
            let pageCount = (g.size + UInt64(g.pageSize) - 1) / UInt64(g.pageSize)
            var next: UInt64 = 0, total: UInt64 = 0
            for r in g.runs {
                guard r.count == 2, r[0] >= next, r[1] > 0, r[0] + r[1] <= pageCount else { throw bad("page runs out of order or past the segment's end") }
                next = r[0] + r[1]
                total += r[1]
            }
            guard total == g.pages, payloadLength == total * UInt64(g.pageSize) else { throw bad("page count does not match the payload") }
        }
    }

    /// Reads `count` payload bytes at payload offset `offset` into `dest`.
    func readPayload(into dest: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws {
        if let archive {
            try archive.read(IPCSnapshotFormat.payloadFile, into: UnsafeMutableRawBufferPointer(start: dest, count: count), at: offset)
        } else if let legacy {
            try legacy.readPayload(into: dest, count: count, at: offset)
        }
    }
}
