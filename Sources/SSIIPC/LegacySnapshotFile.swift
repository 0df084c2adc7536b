import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The IPC snapshot file of format version 1, which SwiftSSI wrote before IPC snapshots
/// became archives (docs/ipc.md, "Version 1"). Still read, never written.
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
final class LegacySnapshotFile {
    static let version: UInt32 = 1
    static let trailerMagic: [UInt8] = Array("END\n".utf8)
    static let headerSize = 40
    static let trailerSize = 8

    let path: String
    let info: IPCSnapshotInfo
    let payloadOffset: Int64
    let payloadLength: UInt64
    private let fd: Int32

    private static func bad(_ path: String, _ why: String, hint: String = "the snapshot is damaged; use another copy") -> SSIError {
        SSIError(.corrupt, "\(path) is \(why)", hint: hint)
    }

    /// Opens and verifies a version 1 file: header, sizes, whole-file CRC, metadata.
    init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SSIError.sys("cannot open \(path)", errno: errno) }
        do {
            var st = stat()
            fstat(fd, &st)
            let (kind, m, p) = try LegacySnapshotFile.readHeader(fd, path: path, size: UInt64(st.st_size))
            try LegacySnapshotFile.checkCRC(fd, path: path, end: UInt64(LegacySnapshotFile.headerSize) + m + p)
            let meta = try LegacySnapshotFile.pread(fd, count: Int(m), at: off_t(LegacySnapshotFile.headerSize), path: path)
            let decoded: IPCSnapshotInfo
            do { decoded = try JSONDecoder().decode(IPCSnapshotInfo.self, from: Data(meta)) } catch {
                throw LegacySnapshotFile.bad(path, "corrupt: unreadable metadata (\(error))")
            }
            guard decoded.format == IPCSnapshotFormat.formatName, decoded.kind == kind else { throw LegacySnapshotFile.bad(path, "corrupt: its metadata does not match its header") }
            info = decoded
            payloadOffset = Int64(LegacySnapshotFile.headerSize) + Int64(m)
            payloadLength = p
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Checks the header against the file's size; returns the kind and the metadata and
    /// payload lengths.
    private static func readHeader(_ fd: Int32, path: String, size: UInt64) throws -> (IPCKind, UInt64, UInt64) {
        let head = try pread(fd, count: min(Int(size), headerSize), at: 0, path: path)
        guard head.count == headerSize else {
            throw bad(path, "truncated: \(size) bytes, shorter than the \(headerSize)-byte header")
        }
        guard readLE(head, 32, as: UInt32.self) == CRC32C.checksum(Array(head[0..<32])) else { throw bad(path, "corrupt: its header checksum does not match") }
        let version = readLE(head, 8, as: UInt32.self)
        guard version == LegacySnapshotFile.version else {
            throw SSIError(.unsupported, "\(path) is an IPC snapshot of format version \(version); this ssi reads versions 1 and \(IPCSnapshotFormat.version)",
                           hint: "restore it with the ssi that wrote it")
        }
        guard let kind = IPCKind(code: readLE(head, 12, as: UInt32.self)) else {
            throw bad(path, "corrupt: unknown object kind \(readLE(head, 12, as: UInt32.self))")
        }
        let m = readLE(head, 16, as: UInt64.self), p = readLE(head, 24, as: UInt64.self)
        let (expectedSize, o1) = UInt64(headerSize + trailerSize).addingReportingOverflow(m)
        let (total, o2) = expectedSize.addingReportingOverflow(p)
        guard !o1, !o2, m < 1 << 32 else { throw bad(path, "corrupt: impossible section lengths") }
        guard size == total else {
            throw bad(path, size < total ? "truncated: \(size) bytes where its header announces \(total)" : "corrupt: \(size) bytes where its header announces \(total)",
                      hint: "the snapshot is damaged or was not completely copied; use another copy")
        }
        return (kind, m, p)
    }

    /// The whole-file CRC, checked before anything is created from a damaged file.
    private static func checkCRC(_ fd: Int32, path: String, end: UInt64) throws {
        var crc: UInt32 = 0
        let chunk = 4 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        var off: UInt64 = 0
        while off < end {
            let want = Int(min(UInt64(chunk), end - off))
            let n = Glibc.pread(fd, buf.baseAddress, want, off_t(off))
            if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("cannot read \(path)", errno: errno) }
            if n == 0 { throw bad(path, "truncated (it shrank while being read)") }
            crc = CRC32C.update(crc, UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            off += UInt64(n)
        }
        let trailer = try pread(fd, count: trailerSize, at: off_t(end), path: path)
        guard trailer.count == trailerSize, Array(trailer[4..<8]) == trailerMagic, readLE(trailer, 0, as: UInt32.self) == crc else {
            throw bad(path, "corrupt: its CRC-32C does not match its content")
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
