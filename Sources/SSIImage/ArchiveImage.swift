import Foundation
import SSISystem

/// A snapshot written as an archive to any fd: what migration sends to a peer, page batch by
/// page batch, with no temporary copy on either side of the engine.
public final class ArchiveImageWriter: ImageWriter {
    private let archive: ArchiveWriter
    public let app: Int32
    /// The version the snapshot announces (the receiver may store it under another).
    public let version: Int

    public init(fd: Int32, location: String, app: Int32, version: Int) throws {
        archive = try ArchiveWriter(fd: fd, location: location)
        self.app = app
        self.version = version
    }

    public var location: String { archive.location }

    public func createFile(_ name: String) throws -> any ImageFileWriter { try archive.createFile(name) }

    public func commit(description: String, processes: [Int32], arch: String, date: Date) throws -> (Int, Manifest) {
        var manifest: Manifest? = nil
        try archive.finish { files in
            let m = Manifest(appID: app, version: version, description: description, date: ISOTime.string(from: date),
                             arch: arch, kernel: SnapshotFormat.kernelRelease(), processes: processes, files: files)
            manifest = m
            return Array(try SnapshotFormat.encoder().encode(m))
        }
        return (version, manifest!)
    }

    /// Nothing to undo on a stream: a receiver that saw no manifest keeps nothing.
    public func abort() {}
}

/// A snapshot received as an archive (from a pipe, a socket) and held in memory, verified
/// whole before it is used: the reader side of ArchiveImageWriter.
public final class MemoryImage: ImageReader {
    public let location: String
    public let manifest: Manifest
    public let processes: [ProcessImage]
    private let files: [String: [UInt8]]

    private struct Collector: ArchiveVisitor {
        var files: [String: [UInt8]] = [:]
        var current = ""
        mutating func beginFile(_ name: String) throws { current = name; files[name] = [] }
        mutating func data(_ bytes: UnsafeRawBufferPointer, archiveOffset: UInt64) throws { files[current]!.append(contentsOf: bytes) }
    }

    /// Reads an archive from `fd` up to its end record (the fd may stay open for more).
    public init(receivingFrom fd: Int32, location: String) throws {
        self.location = location
        var parser = ArchiveParser(fd: fd, location: location)
        defer { parser.deallocate() }
        try parser.readHeader()
        var collector = Collector()
        let (_, json) = try parser.readRecords(&collector)
        files = collector.files
        manifest = try SnapshotFormat.decodeManifest(json, where: "\(location) (manifest)")
        let files = collector.files
        processes = try SnapshotFormat.decodeProcesses(manifest, where: "\(location) (manifest)", read: { files[$0] ?? [] }, location: location)
    }

    public func open(_ name: String) throws -> any ImageFileReader {
        guard let bytes = files[name] else { throw SSIError(.corrupt, "\(location) holds no file \(name)") }
        return MemoryFileReader(bytes: bytes)
    }
}

final class MemoryFileReader: ImageFileReader {
    let bytes: [UInt8]
    var size: UInt64 { UInt64(bytes.count) }
    var path: String? { nil }

    init(bytes: [UInt8]) { self.bytes = bytes }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset + UInt64(buffer.count) <= size else { throw SSIError(.corrupt, "a file of the image is shorter than the snapshot says") }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + buffer.count)])) }
    }
}
