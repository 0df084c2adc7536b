import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// What a reader does with an archive's files as they go by.
protocol ArchiveVisitor {
    mutating func beginFile(_ name: String) throws
    /// The next bytes of the current file; `archiveOffset` is where they sit in the archive.
    mutating func data(_ bytes: UnsafeRawBufferPointer, archiveOffset: UInt64) throws
}

/// Reads an archive front to back from an fd, checking every checksum on the way; nothing
/// read is trusted before its checksum. Errors name `location`.
struct ArchiveParser {
    let fd: Int32
    let location: String
    private(set) var offset: UInt64 = 0
    private var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ArchiveFormat.maxData, alignment: 4096)

    init(fd: Int32, location: String) {
        self.fd = fd
        self.location = location
    }

    func deallocate() { buffer.deallocate() }

    func corrupt(_ why: String) -> SSIError {
        SSIError(.corrupt, "\(location) is corrupt: \(why)", hint: "the file is damaged or was not completely copied; use another copy")
    }

    var truncated: SSIError {
        SSIError(.corrupt, "\(location) is truncated: it ends at byte \(offset), before its end record",
                 hint: "the file is damaged or was not completely copied; use another copy")
    }

    /// Fills the first `count` bytes of the buffer; throws `truncated` at end of file.
    private mutating func fill(_ count: Int) throws -> UnsafeRawBufferPointer {
        var done = 0
        while done < count {
            let n = Glibc.read(fd, buffer.baseAddress! + done, count - done)
            if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("read \(location)", errno: errno) }
            if n == 0 { throw truncated }
            done += n
        }
        offset += UInt64(count)
        return UnsafeRawBufferPointer(rebasing: buffer[0..<count])
    }

    private mutating func bytes(_ count: Int) throws -> [UInt8] { Array(try fill(count)) }

    /// Checks the header; the caller has checked the magic if it wants its own message.
    mutating func readHeader() throws {
        let h = try bytes(ArchiveFormat.headerSize)
        guard Array(h[0..<8]) == ArchiveFormat.magic else {
            throw SSIError(.corrupt, "\(location) is not a SwiftSSI archive (no SSI-ARC magic at its start)")
        }
        guard readLE(h, 16, as: UInt32.self) == CRC32C.checksum(Array(h[0..<16])) else { throw corrupt("its header checksum does not match") }
        let version = readLE(h, 8, as: UInt32.self)
        guard version == ArchiveFormat.version else {
            throw SSIError(.unsupported, "\(location) is an archive of container version \(version); this ssi reads version \(ArchiveFormat.version)",
                           hint: "read it with the SwiftSSI release that wrote it")
        }
    }

    private mutating func record() throws -> (ArchiveFormat.Tag, UInt64) {
        let at = offset
        let h = try bytes(ArchiveFormat.recordHeaderSize)
        guard readLE(h, 12, as: UInt32.self) == CRC32C.checksum(Array(h[0..<12])) else {
            throw corrupt("its CRC-32C does not match its content (record header at byte \(at))")
        }
        guard let tag = ArchiveFormat.Tag(rawValue: readLE(h, 0, as: UInt32.self)) else { throw corrupt("unknown record at byte \(at)") }
        return (tag, readLE(h, 4, as: UInt64.self))
    }

    /// Reads every record after the header, handing files to `visitor`. Returns the manifest
    /// (checked against the files) and its JSON bytes.
    mutating func readRecords<V: ArchiveVisitor>(_ visitor: inout V) throws -> (ContainerManifest, [UInt8]) {
        var current: (name: String, size: UInt64, crc: UInt32)? = nil
        var entries = [FileEntry]()
        while true {
            let (tag, length) = try record()
            switch tag {
            case .file:
                guard current == nil, length < 4096 else { throw corrupt("a file starts inside another") }
                let name = String(decoding: try bytes(Int(length)), as: UTF8.self)
                current = (name, 0, 0)
                try visitor.beginFile(name)
            case .data:
                guard current != nil, length <= UInt64(ArchiveFormat.maxData) else { throw corrupt("data outside a file at byte \(offset)") }
                let at = offset
                let chunk = try fill(Int(length))
                current!.crc = CRC32C.update(current!.crc, chunk)
                current!.size += length
                try visitor.data(chunk, archiveOffset: at)
            case .done:
                guard let c = current, length == 12 else { throw corrupt("a file ends that did not start") }
                let b = try bytes(12)
                guard readLE(b, 0, as: UInt64.self) == c.size, readLE(b, 8, as: UInt32.self) == c.crc else {
                    throw corrupt("its CRC-32C does not match its content (file \(c.name))")
                }
                entries.append(FileEntry(name: c.name, size: c.size, crc32c: c.crc))
                current = nil
            case .manifest:
                guard current == nil, length >= 4, length < 1 << 30 else { throw corrupt("misplaced manifest") }
                let body = try bytes(Int(length))
                let json = Array(body.dropLast(4))
                guard readLE(body, body.count - 4, as: UInt32.self) == CRC32C.checksum(json) else {
                    throw corrupt("its CRC-32C does not match its content (manifest)")
                }
                guard case (.end, 0) = try record() else { throw corrupt("no end record after the manifest") }
                let manifest: ContainerManifest
                do { manifest = try JSONDecoder().decode(ContainerManifest.self, from: Data(json)) } catch { throw corrupt("unreadable manifest (\(error))") }
                guard manifest.files == entries else { throw corrupt("its manifest does not list the files it holds") }
                return (manifest, json)
            case .end:
                throw truncated
            }
        }
    }
}

/// An archive kept as one file (a SysV IPC snapshot): verified whole when opened, then its
/// files are read at any offset.
public final class ArchiveFile {
    public let path: String
    public let manifest: ContainerManifest
    /// The manifest's JSON, for the caller to decode its own fields.
    public let manifestJSON: [UInt8]
    private let fd: Int32
    /// name -> (offset in the file, archive offset, length) of each DATA record.
    private var chunks: [String: [(UInt64, UInt64, UInt64)]] = [:]

    private struct Indexer: ArchiveVisitor {
        var chunks: [String: [(UInt64, UInt64, UInt64)]] = [:]
        var current = ""
        var size: UInt64 = 0
        mutating func beginFile(_ name: String) throws { current = name; size = 0; chunks[name] = [] }
        mutating func data(_ bytes: UnsafeRawBufferPointer, archiveOffset: UInt64) throws {
            chunks[current, default: []].append((size, archiveOffset, UInt64(bytes.count)))
            size += UInt64(bytes.count)
        }
    }

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SSIError.sys("cannot open \(path)", errno: errno) }
        var parser = ArchiveParser(fd: fd, location: path)
        defer { parser.deallocate() }
        do {
            try parser.readHeader()
            var indexer = Indexer()
            (manifest, manifestJSON) = try parser.readRecords(&indexer)
            chunks = indexer.chunks
            var st = stat()
            fstat(fd, &st)
            if UInt64(st.st_size) != parser.offset { throw parser.corrupt("\(UInt64(st.st_size) - parser.offset) bytes follow its end record") }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    public func size(of name: String) -> UInt64? { manifest.files.first { $0.name == name }?.size }

    /// Reads `buffer.count` bytes of file `name` at `offset`.
    public func read(_ name: String, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard let list = chunks[name] else { throw SSIError(.corrupt, "\(path) holds no file \(name)") }
        var want = offset, done = 0
        for (start, at, length) in list where done < buffer.count && start + length > want {
            let skip = want - start
            let n = Int(min(length - skip, UInt64(buffer.count - done)))
            var got = 0
            while got < n {
                let r = pread(fd, buffer.baseAddress! + done + got, n - got, off_t(at + skip) + off_t(got))
                if r < 0 { if errno == EINTR { continue }; throw SSIError.sys("cannot read \(path)", errno: errno) }
                if r == 0 { throw SSIError(.corrupt, "\(path) is truncated (it shrank while being read)") }
                got += r
            }
            done += n
            want += UInt64(n)
        }
        if done < buffer.count { throw SSIError(.corrupt, "\(path): file \(name) is shorter than asked") }
    }
}
