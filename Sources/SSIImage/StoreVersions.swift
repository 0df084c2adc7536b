import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The version store's operations on whole versions: listing what each adds on disk,
// deleting one (its pool pages go only when no other version names them), and reading a
// version as another node must receive it (pooled pages files whole, as the engine wrote
// them: a copy never refers to a pool it does not have).

extension SnapshotStore {
    /// What `ssi snapshots` shows of one version.
    public struct VersionInfo: Sendable, Codable {
        public var app: Int32
        public var version: Int
        public var date: String
        public var description: String
        /// Bytes it added on disk when written (its files, and pool pages new then).
        public var addedBytes: UInt64
        /// Bytes of the snapshot as the engine wrote it.
        public var totalBytes: UInt64
        public var pooled: Bool
    }

    /// The manifest of a committed version, read without verifying the files (listings).
    public func manifest(app: Int32, version: Int) throws -> Manifest {
        let path = "\(directory(app, version: version))/manifest.json"
        do { return try JSONDecoder().decode(Manifest.self, from: Data(ProcFS.readBytes(path))) } catch {
            throw SSIError(.corrupt, "\(path) cannot be read: \(error)", hint: "restart another version")
        }
    }

    public func info(app: Int32, version: Int) -> VersionInfo? {
        guard let m = try? manifest(app: app, version: version) else { return nil }
        return VersionInfo(app: app, version: version, date: m.date, description: m.description, addedBytes: m.addedBytes,
                           totalBytes: m.totalBytes, pooled: m.pooled != nil)
    }

    func unknownVersion(_ app: Int32, _ version: Int) -> SSIError {
        let all = versions(app)
        return SSIError(.notFound, "application \(app) has no snapshot version \(version) (versions: \(all.isEmpty ? "none" : all.map(String.init).joined(separator: ", ")))",
                        hint: "ssi snapshots \(app) lists them")
    }

    /// Deletes version `version` of `app`: the directory goes at once (renamed out of the
    /// versions first, so a reader never sees half of it), then the pool pages that no
    /// other version names. Returns the pool bytes freed, or nil when a checkpoint of the
    /// application was running and the sweep was left to the next delete.
    @discardableResult
    public func delete(app: Int32, version: Int) throws -> UInt64? {
        guard versions(app).contains(version) else { throw unknownVersion(app, version) }
        let dir = directory(app, version: version)
        // A .tmp- name with our PID: if we die before removing it, the next checkpoint of
        // the application removes it (beginWrite).
        let gone = "\(appDirectory(app))/.tmp-\(getpid())-delete-v\(version)-\(UInt32.random(in: 0...UInt32.max))"
        guard rename(dir, gone) == 0 else { throw SSIError.sys("delete \(dir) (rename to \(gone))", errno: errno) }
        try? FileManager.default.removeItem(atPath: gone)
        return try PoolSweep.sweep(appDirectory: appDirectory(app))
    }

    /// The files of a version as another node receives them: every file of the version
    /// but the maps, and each pooled pages file whole (size and CRC-32C as the engine
    /// wrote it). The manifest comes too, for `SnapshotWriter.commit(copying:)`.
    public func portable(app: Int32, version: Int) throws -> (manifest: Manifest, files: [FileEntry]) {
        guard versions(app).contains(version) else { throw unknownVersion(app, version) }
        let m = try manifest(app: app, version: version)
        let maps = Set((m.pooled ?? []).map(\.map))
        let pooled = (m.pooled ?? []).map { FileEntry(name: $0.name, size: $0.size, crc32c: $0.crc32c) }
        // Pages first: a receiver holds nothing of a version until its commit anyway.
        return (m, pooled + m.files.filter { !maps.contains($0.name) })
    }

    /// `length` bytes at `offset` of one file of `portable(app:version:)`.
    public func readPortable(app: Int32, version: Int, name: String, offset: UInt64, length: Int) throws -> [UInt8] {
        guard !name.contains("/"), !name.hasPrefix(".") else { throw SSIError(.invalidArgument, "bad snapshot file name \(name)") }
        let dir = directory(app, version: version)
        let m = try manifest(app: app, version: version)
        let reader: any ImageFileReader
        if let p = m.pooled?.first(where: { $0.name == name }) {
            reader = try mapSlice(dir: dir, p, offset: offset, length: length)
        } else {
            guard m.files.contains(where: { $0.name == name }) else { throw SSIError(.notFound, "\(dir)/manifest.json does not list \(name)") }
            reader = try DirectoryFileReader(path: "\(dir)/\(name)")
        }
        let n = Int(min(UInt64(length), reader.size > offset ? reader.size - offset : 0))
        var out = [UInt8](repeating: 0, count: n)
        try out.withUnsafeMutableBytes { try reader.read(into: $0, at: offset) }
        return out
    }

    /// A reader of a pooled pages file that loaded only the map entries of the pages in
    /// [offset, offset + length) (a copy reads the file chunk by chunk).
    private func mapSlice(dir: String, _ p: PooledFile, offset: UInt64, length: Int) throws -> any ImageFileReader {
        let pages = (p.size + SnapshotFormat.pageSize - 1) / SnapshotFormat.pageSize
        let first = min(offset / SnapshotFormat.pageSize, pages)
        let end = min((offset + UInt64(length) + SnapshotFormat.pageSize - 1) / SnapshotFormat.pageSize, pages)
        let mapReader = try DirectoryFileReader(path: "\(dir)/\(p.map)")
        var bytes = [UInt8](repeating: 0, count: Int(end - first) * PageMap.entrySize)
        try bytes.withUnsafeMutableBytes { try mapReader.read(into: $0, at: first * UInt64(PageMap.entrySize)) }
        let slice = try PageMap.decode(bytes, where: "\(dir)/\(p.map)")
        return try PooledContentReader(slots: slice.slots, firstPage: first, size: min(p.size, end * SnapshotFormat.pageSize),
                                       poolPath: PagePool.dataPath(appDirectory: (dir as NSString).deletingLastPathComponent))
    }
}
