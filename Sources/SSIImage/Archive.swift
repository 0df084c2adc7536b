import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The single-stream container: named files, each with its size and CRC-32C, then a
/// manifest, written front to back with no seek, so that it can go down a pipe or a socket
/// as it is produced, or be kept as one file (SysV IPC snapshots). docs/snapshot-format.md,
/// "Archive", describes it for humans.
///
///     header   "SSI-ARC\n" | container version u32 (1) | 0 u32 | CRC-32C of bytes 0..<16 | 0 u32
///     record   tag u32 | body length u64 | CRC-32C of the 12 bytes before   (16 bytes), then the body:
///       FILE   the file's name; starts a file (one at a time)
///       DATA   the next bytes of that file
///       DONE   size u64 | CRC-32C u32 of the file's bytes; ends it
///       MNFT   the manifest, JSON with "format", "formatVersion" and "files" (every file's
///              name, size and CRC-32C), then the CRC-32C of that JSON (u32)
///       END.   empty; nothing follows
///
/// All numbers little-endian.
public enum ArchiveFormat {
    public static let magic: [UInt8] = Array("SSI-ARC\n".utf8)
    public static let version: UInt32 = 1
    static let headerSize = 24
    static let recordHeaderSize = 16
    /// DATA records carry at most this much, so that a reader's buffer stays small.
    static let maxData = 8 << 20

    enum Tag: UInt32 {
        case file = 0x454C_4946   // "FILE"
        case data = 0x4154_4144   // "DATA"
        case done = 0x454E_4F44   // "DONE"
        case manifest = 0x5446_4E4D   // "MNFT"
        case end = 0x2E44_4E45    // "END."
    }

    static func header() -> [UInt8] {
        var h = magic + le(version) + le(UInt32(0))
        h += le(CRC32C.checksum(h)) + le(UInt32(0))
        return h
    }

    static func recordHeader(_ tag: Tag, _ length: UInt64) -> [UInt8] {
        let h = le(tag.rawValue) + le(length)
        return h + le(CRC32C.checksum(h))
    }
}

extension FixedWidthInteger {
    /// The value's bytes, little-endian (the byte order of every number in SwiftSSI's files).
    public var littleEndianBytes: [UInt8] { withUnsafeBytes(of: littleEndian) { Array($0) } }
}

func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { v.littleEndianBytes }

/// A little-endian number read at byte `at` of `b`.
public func readLE<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, as: T.Type) -> T {
    var v: T = 0
    for i in 0..<MemoryLayout<T>.size { v |= T(b[at + i]) << (8 * i) }
    return v
}

/// The container's view of a manifest: what every manifest written in an archive holds.
public struct ContainerManifest: Decodable, Sendable {
    public var format: String
    public var formatVersion: Int
    public var files: [FileEntry]
}

/// Writes an archive to an fd (a file, a pipe, a socket), front to back.
public final class ArchiveWriter {
    let fd: Int32
    /// Names the destination in messages.
    public let location: String
    public private(set) var entries: [FileEntry] = []
    private var open: ArchiveFileWriter? = nil
    private var ended = false

    /// Writes the header at once.
    public init(fd: Int32, location: String) throws {
        self.fd = fd
        self.location = location
        try write(ArchiveFormat.header())
    }

    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try writeAll(fd, bytes, what: "write \(location)", whenFull: "free some space, or write elsewhere")
    }

    /// Starts the next file; the previous one must be finished.
    public func createFile(_ name: String) throws -> ArchiveFileWriter {
        precondition(open == nil && !ended, "archive files are written one at a time, before the manifest")
        let nameBytes = Array(name.utf8)
        try write(ArchiveFormat.recordHeader(.file, UInt64(nameBytes.count)) + nameBytes)
        let f = ArchiveFileWriter(archive: self, name: name)
        open = f
        return f
    }

    fileprivate func finished(_ entry: FileEntry) throws {
        try write(ArchiveFormat.recordHeader(.done, 12) + le(entry.size) + le(entry.crc32c))
        entries.append(entry)
        open = nil
    }

    /// Writes the manifest (made from the files written) and the end record.
    public func finish(manifest: ([FileEntry]) throws -> [UInt8]) throws {
        precondition(open == nil && !ended, "the manifest comes once, after every file")
        let json = try manifest(entries)
        try write(ArchiveFormat.recordHeader(.manifest, UInt64(json.count + 4)) + json + le(CRC32C.checksum(json)))
        try write(ArchiveFormat.recordHeader(.end, 0))
        ended = true
    }
}

/// One file of an archive being written.
public final class ArchiveFileWriter: ImageFileWriter {
    private let archive: ArchiveWriter
    public let name: String
    public private(set) var size: UInt64 = 0
    private var crc: UInt32 = 0
    private var done = false

    fileprivate init(archive: ArchiveWriter, name: String) { self.archive = archive; self.name = name }

    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(!done, "append after finish")
        var off = 0
        while off < bytes.count {
            let n = min(bytes.count - off, ArchiveFormat.maxData)
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[off..<(off + n)])
            try archive.write(ArchiveFormat.recordHeader(.data, UInt64(n)))
            try archive.write(chunk)
            crc = CRC32C.update(crc, chunk)
            off += n
        }
        size += UInt64(bytes.count)
    }

    /// `sync` has no meaning on a stream: the receiver decides where the bytes go.
    @discardableResult
    public func finish(sync: Bool) throws -> FileEntry {
        precondition(!done, "finish twice")
        done = true
        let entry = FileEntry(name: name, size: size, crc32c: crc)
        try archive.finished(entry)
        return entry
    }
}
