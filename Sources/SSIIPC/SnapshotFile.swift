import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The IPC snapshot file, format version 1 (docs/ipc.md, "File format").
///
///     offset  size  field
///          0     8  magic "SSI-IPC\n"
///          8     4  format version (1), little-endian like every number here
///         12     4  kind: 1 message queue, 2 semaphore array, 3 shared memory segment
///         16     8  M, length of the metadata
///         24     8  P, length of the payload
///         32     4  CRC-32C of bytes 0..<32
///         36     4  zero
///         40     M  metadata: JSON (IPCSnapshotInfo), sorted keys
///       40+M     P  payload: messages, or pages (nothing for semaphores)
///     40+M+P     4  CRC-32C of every byte before it
///     44+M+P     4  "END\n"
public enum IPCSnapshotFormat {
    public static let magic: [UInt8] = Array("SSI-IPC\n".utf8)
    public static let trailerMagic: [UInt8] = Array("END\n".utf8)
    public static let formatName = "swiftssi-ipc"
    public static let version: UInt32 = 1
    static let headerSize = 40
    static let trailerSize = 8
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
        date = ISO8601DateFormatter().string(from: Date())
        var u = utsname()
        uname(&u)
        kernel = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// One line for users: "message queue id 0 key 0x00001234".
    public var objectDescription: String { "\(kind.name) id \(id) key \(hexKey(key))" }
}

extension FixedWidthInteger {
    var littleEndianBytes: [UInt8] { withUnsafeBytes(of: littleEndian) { Array($0) } }
}

func readLE<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, as: T.Type) -> T {
    var v: T = 0
    for i in 0..<MemoryLayout<T>.size { v |= T(b[at + i]) << (8 * i) }
    return v
}

/// Writes a snapshot: created with O_EXCL and mode 0600; `abort()` (or a throw from the
/// caller before `finish()`) removes it.
final class IPCSnapshotWriter {
    let path: String
    private var fd: Int32
    private var crc: UInt32 = 0
    private var payloadLeft: UInt64
    private var finished = false

    init(path: String, info: IPCSnapshotInfo, payloadLength: UInt64) throws {
        self.path = path
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
        var header = IPCSnapshotFormat.magic
        header += IPCSnapshotFormat.version.littleEndianBytes
        header += info.kind.code.littleEndianBytes
        header += UInt64(meta.count).littleEndianBytes
        header += payloadLength.littleEndianBytes
        header += cssi_crc32c(0, header, header.count).littleEndianBytes
        header += UInt32(0).littleEndianBytes
        do {
            try write(header)
            try write(meta)
        } catch { abort(); throw error }
    }

    deinit { if !finished { abort() } }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(raw: $0) }
    }

    /// Writes payload or header bytes, updating the running CRC.
    func write(raw: UnsafeRawBufferPointer) throws {
        guard let base = raw.baseAddress, raw.count > 0 else { return }
        crc = cssi_crc32c(crc, base, raw.count)
        var off = 0
        while off < raw.count {
            let n = Glibc.write(fd, base + off, raw.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw SSIError.sys("cannot write \(path)", errno: errno, hint: errno == ENOSPC ? "free some space, or write the snapshot elsewhere" : nil)
            }
            off += n
        }
    }

    /// Payload bytes: counted against the length announced in the header.
    func writePayload(raw: UnsafeRawBufferPointer) throws {
        precondition(UInt64(raw.count) <= payloadLeft, "payload longer than announced")
        payloadLeft -= UInt64(raw.count)
        try write(raw: raw)
    }

    /// Writes the trailer and makes the file durable.
    func finish() throws -> UInt64 {
        precondition(payloadLeft == 0, "payload shorter than announced")
        try write(crc.littleEndianBytes + IPCSnapshotFormat.trailerMagic)
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

/// Opens and fully verifies a snapshot before anything is restored from it.
final class IPCSnapshotReader {
    let path: String
    let info: IPCSnapshotInfo
    let payloadOffset: Int64
    let payloadLength: UInt64
    private let fd: Int32

    init(path: String, expecting expected: IPCKind?) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            throw SSIError.sys("cannot open \(path)", errno: e, hint: e == ENOENT ? "give the file written by `ssi ipc checkpoint`" : nil)
        }
        do {
            let notIPC = "give a file written by `ssi ipc checkpoint`"
            var st = stat()
            fstat(fd, &st)
            let size = UInt64(st.st_size)
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw SSIError(.invalidArgument, "\(path) is not a regular file", hint: notIPC) }
            let head = try IPCSnapshotReader.pread(fd, count: min(Int(size), IPCSnapshotFormat.headerSize), at: 0, path: path)
            guard head.count >= 8, Array(head[0..<8]) == IPCSnapshotFormat.magic else {
                throw SSIError(.corrupt, "\(path) is not a SwiftSSI IPC snapshot (no SSI-IPC magic at its start)", hint: notIPC)
            }
            guard head.count == IPCSnapshotFormat.headerSize else {
                throw SSIError(.corrupt, "\(path) is truncated: \(size) bytes, shorter than the \(IPCSnapshotFormat.headerSize)-byte header", hint: "the snapshot is damaged; use another copy")
            }
            guard readLE(head, 32, as: UInt32.self) == cssi_crc32c(0, head, 32) else {
                throw SSIError(.corrupt, "\(path) is corrupt: its header checksum does not match", hint: "the snapshot is damaged; use another copy")
            }
            let version = readLE(head, 8, as: UInt32.self)
            guard version == IPCSnapshotFormat.version else {
                throw SSIError(.unsupported, "\(path) is an IPC snapshot of format version \(version); this ssi reads version \(IPCSnapshotFormat.version)",
                               hint: "restore it with the ssi that wrote it")
            }
            guard let kind = IPCKind(code: readLE(head, 12, as: UInt32.self)) else {
                throw SSIError(.corrupt, "\(path) is corrupt: unknown object kind \(readLE(head, 12, as: UInt32.self))", hint: "the snapshot is damaged; use another copy")
            }
            if let expected, expected != kind {
                throw SSIError(.invalidArgument, "\(path) holds a \(kind.name), not a \(expected.name)",
                               hint: "restore it with `ssi ipc restart \(kind.option) \(path)`" + (expected == .sharedMemory && kind == .messageQueue ? " (Kerrighed's manual wrote -m for message queues; SwiftSSI uses -q)" : ""))
            }
            let m = readLE(head, 16, as: UInt64.self), p = readLE(head, 24, as: UInt64.self)
            let (expectedSize, o1) = UInt64(IPCSnapshotFormat.headerSize + IPCSnapshotFormat.trailerSize).addingReportingOverflow(m)
            let (total, o2) = expectedSize.addingReportingOverflow(p)
            guard !o1, !o2, m < 1 << 32 else { throw SSIError(.corrupt, "\(path) is corrupt: impossible section lengths", hint: "the snapshot is damaged; use another copy") }
            guard size == total else {
                throw SSIError(.corrupt, size < total ? "\(path) is truncated: \(size) bytes where its header announces \(total)" : "\(path) is corrupt: \(size) bytes where its header announces \(total)",
                               hint: "the snapshot is damaged or was not completely copied; use another copy")
            }
            // Whole-file CRC first, so that nothing is created from a damaged file.
            var crc: UInt32 = 0
            let chunk = 4 << 20
            let buf = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { buf.deallocate() }
            var off: UInt64 = 0
            let end = total - UInt64(IPCSnapshotFormat.trailerSize)
            while off < end {
                let want = Int(min(UInt64(chunk), end - off))
                let n = Glibc.pread(fd, buf, want, off_t(off))
                if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("cannot read \(path)", errno: errno) }
                if n == 0 { throw SSIError(.corrupt, "\(path) is truncated (it shrank while being read)") }
                crc = cssi_crc32c(crc, buf, n)
                off += UInt64(n)
            }
            let trailer = try IPCSnapshotReader.pread(fd, count: IPCSnapshotFormat.trailerSize, at: off_t(end), path: path)
            guard Array(trailer[4..<8]) == IPCSnapshotFormat.trailerMagic, readLE(trailer, 0, as: UInt32.self) == crc else {
                throw SSIError(.corrupt, "\(path) is corrupt: its CRC-32C does not match its content", hint: "the snapshot is damaged; use another copy")
            }
            let meta = try IPCSnapshotReader.pread(fd, count: Int(m), at: off_t(IPCSnapshotFormat.headerSize), path: path)
            let decoded: IPCSnapshotInfo
            do { decoded = try JSONDecoder().decode(IPCSnapshotInfo.self, from: Data(meta)) } catch {
                throw SSIError(.corrupt, "\(path) is corrupt: unreadable metadata (\(error))", hint: "the snapshot is damaged; use another copy")
            }
            guard decoded.format == IPCSnapshotFormat.formatName, decoded.kind == kind else {
                throw SSIError(.corrupt, "\(path) is corrupt: its metadata does not match its header", hint: "the snapshot is damaged; use another copy")
            }
            info = decoded
            payloadOffset = Int64(IPCSnapshotFormat.headerSize) + Int64(m)
            payloadLength = p
            try validate()
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

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

    static func pread(_ fd: Int32, count: Int, at offset: off_t, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress! + got, count - got, offset + off_t(got)) }
            if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("cannot read \(path)", errno: errno) }
            if n == 0 { break }
            got += n
        }
        out.removeLast(count - got)
        return out
    }

    /// Reads `count` payload bytes at payload offset `offset` into `dest`.
    func readPayload(into dest: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws {
        var got = 0
        while got < count {
            let n = Glibc.pread(fd, dest + got, count - got, off_t(payloadOffset) + off_t(offset) + off_t(got))
            if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("cannot read \(path)", errno: errno) }
            if n == 0 { throw SSIError(.corrupt, "\(path) is truncated (it shrank while being read)") }
            got += n
        }
    }
}
