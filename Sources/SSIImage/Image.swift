import Foundation
import SSISystem

// The seam between the engine and where a snapshot lives. The engine writes a snapshot
// through an `ImageWriter`, file by file and one file at a time (pages go out batch by batch
// while they are read from the process), and a restart reads one through an `ImageReader`.
// The local version store (SnapshotStore: a directory per version) is one implementation;
// an archive over any fd (Archive.swift: a pipe, a socket to a peer, a single file) is
// another, so that migration can send an image to a peer without a temporary copy.

/// One file of a snapshot being written: bytes appended in order, with a running CRC-32C.
public protocol ImageFileWriter: AnyObject {
    /// Bytes appended so far (the offset of the next byte).
    var size: UInt64 { get }
    func append(_ bytes: UnsafeRawBufferPointer) throws
    /// Ends the file and records it, with its size and CRC, in the snapshot being written.
    /// `sync`: the bytes must be on stable storage before this returns; otherwise they are
    /// by `commit` (the checkpoint passes false while the application is stopped).
    @discardableResult
    func finish(sync: Bool) throws -> FileEntry
    /// Sends on what it holds back, without ending the file: a writer that buffers bytes on
    /// their way to another node (RemoteFileWriter) sends them now.
    func flush() throws
}

extension ImageFileWriter {
    public func flush() throws {}
}

/// Where the engine writes a snapshot.
public protocol ImageWriter: AnyObject {
    /// Where the snapshot goes, for messages and results ("/var/chkpt/42/.tmp-...", "fd 7").
    var location: String { get }
    /// Starts the next file; the previous one must be finished.
    func createFile(_ name: String) throws -> any ImageFileWriter
    /// Writes the manifest (`arch` names the register file: the injection library's
    /// Arch.name) and makes the snapshot whole. Returns its version and manifest.
    func commit(description: String, processes: [Int32], arch: String, date: Date) throws -> (Int, Manifest)
    /// Forgets everything written; nothing of it is left as a snapshot.
    func abort()
    /// Returns once what was written so far is where it goes, not in a queue on its way: a
    /// pre-copy calls it before the application is frozen, so that the freeze does not wait
    /// for its rounds' bytes (a writer to another node queues them there).
    func drain() throws
}

extension ImageWriter {
    public func drain() throws {}

    /// A whole file at once.
    public func addFile(_ name: String, _ bytes: [UInt8], sync: Bool = true) throws {
        let f = try createFile(name)
        try bytes.withUnsafeBytes { (b) throws in try f.append(b) }
        try f.finish(sync: sync)
    }

    /// A value as sorted JSON, not indented (core files: SnapshotFormat.encoder).
    public func addJSON<T: Encodable>(_ name: String, _ value: T) throws {
        do { try addFile(name, Array(try SnapshotFormat.encoder(compact: true).encode(value))) } catch let e as SSIError { throw e } catch {
            throw SSIError(.system, "cannot encode \(name): \(error)")
        }
    }

    /// A process's core file, and before it its blob file when it has long byte strings
    /// (version 11, SchemaBlobs.swift).
    public func addCore(_ image: ProcessImage) throws {
        let name = "core-\(image.pid).json"
        let sink = BlobSink()
        let enc = SnapshotFormat.encoder(compact: true)
        enc.userInfo[Blobs.key] = sink
        let json: Data
        do { json = try enc.encode(image) } catch { throw SSIError(.system, "cannot encode \(name): \(error)") }
        if !sink.bytes.isEmpty { try addFile(Blobs.fileName(image.pid), sink.bytes) }
        try addFile(name, Array(json))
    }

    public func commit(description: String, processes: [Int32], arch: String) throws -> (Int, Manifest) {
        try commit(description: description, processes: processes, arch: arch, date: Date())
    }
}

/// One file of a snapshot being read. Bytes are read at offsets; an implementation over a
/// stream serves them in increasing order only (a restart reads pages in the order the
/// checkpoint wrote them).
public protocol ImageFileReader: AnyObject {
    var size: UInt64 { get }
    /// A path that other processes (the one being restored) can open and pread themselves,
    /// when the file is on a local file system; nil for an image in memory or on the wire.
    var path: String? { get }
    /// Fills `buffer` with the bytes at `offset`; throws if the file is shorter.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
}

/// A verified snapshot, ready for restart: every file was checked against the manifest
/// before anything is created.
public protocol ImageReader {
    /// Where the snapshot is, for messages ("/var/chkpt/42/v3").
    var location: String { get }
    var manifest: Manifest { get }
    /// Every process, root first, parents before their children.
    var processes: [ProcessImage] { get }
    func open(_ name: String) throws -> any ImageFileReader
}

extension ImageFileReader {
    /// The whole file.
    public func readAll() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(size))
        try out.withUnsafeMutableBytes { try read(into: $0, at: 0) }
        return out
    }
}

extension SnapshotFormat {
    /// Manifests are indented for people; core files are not (`compact`): a process's page
    /// index can hold tens of thousands of runs, and half its bytes were indentation, written,
    /// sent and read back inside a migration's frozen time. Readers take either.
    static func encoder(compact: Bool = false) -> JSONEncoder {
        let enc = JSONEncoder()
        enc.outputFormatting = compact ? [.sortedKeys] : [.sortedKeys, .prettyPrinted]
        return enc
    }

    /// The running kernel's release (uname -r), recorded in manifests.
    static func kernelRelease() -> String {
        var uts = utsname()
        uname(&uts)
        return withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Decodes and checks a manifest: format, version, file names. `where` names it in errors.
    static func decodeManifest(_ bytes: [UInt8], where mpath: String) throws -> Manifest {
        let manifest: Manifest
        do { manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes)) } catch {
            throw SSIError(.corrupt, "\(mpath) is not a SwiftSSI manifest: \(error)")
        }
        guard manifest.format == SnapshotFormat.magic else { throw SSIError(.corrupt, "\(mpath): not a SwiftSSI snapshot (format \(manifest.format))") }
        guard SnapshotFormat.readable.contains(manifest.formatVersion) else {
            throw SSIError(.corrupt, "\(mpath): snapshot format version \(manifest.formatVersion), this ssi reads versions \(SnapshotFormat.readable.lowerBound)-\(SnapshotFormat.readable.upperBound)",
                           hint: "restart it with the SwiftSSI release that wrote it")
        }
        for entry in manifest.files where entry.name.contains("/") || entry.name.hasPrefix(".") {
            throw SSIError(.corrupt, "\(mpath) names a file outside the snapshot: \(entry.name)")
        }
        return manifest
    }

    /// The core files the manifest lists, decoded, root first.
    static func decodeProcesses(_ manifest: Manifest, where mpath: String, read: (String) throws -> [UInt8], location: String) throws -> [ProcessImage] {
        var procs = [ProcessImage]()
        for pid in manifest.processes {
            let name = "core-\(pid).json"
            guard manifest.files.contains(where: { $0.name == name }) else { throw SSIError(.corrupt, "\(mpath) does not list \(name)") }
            let blobs = Blobs.fileName(pid)
            // Decoded already as it arrived (a migration's target), from these very bytes.
            if let core = manifest.files.first(where: { $0.name == name }),
               let image = RecentCores.take(core: core, blobs: manifest.files.first { $0.name == blobs }) {
                procs.append(image)
                continue
            }
            let dec = JSONDecoder()
            if manifest.files.contains(where: { $0.name == blobs }) { dec.userInfo[Blobs.key] = BlobSource(bytes: try read(blobs), name: "\(location)/\(blobs)") }
            do { procs.append(try dec.decode(ProcessImage.self, from: Data(try read(name)))) } catch let e as SSIError { throw e } catch {
                throw SSIError(.corrupt, "\(location)/\(name) does not decode: \(error)")
            }
        }
        return procs
    }
}
