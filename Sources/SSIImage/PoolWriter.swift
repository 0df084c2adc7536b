import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// One snapshot writer's use of its application's page pool, from its first pages file to
/// its commit or abort (PagePool.swift says how sessions share the pool).
///
/// @unchecked Sendable: every mutable field is used under `lock` (the pages files of a
/// pre-copy checkpoint are appended to from their own writer threads).
final class PoolSession: @unchecked Sendable {
    let appDirectory: String
    let pool: PoolMapping
    private let sessionLock: LockFile
    private let allocLock: LockFile
    private let lock = NSLock()
    private var known: HashSlots
    /// Slot ranges this session added to the pool: punched out again if it aborts.
    private var added: [(first: UInt64, count: UInt64)] = []
    private var released = false

    /// `readVersions`: new pages are compared with those of every committed version (their
    /// maps read from disk); false, only with the session's own.
    init(appDirectory: String, readVersions: Bool = true) throws {
        self.appDirectory = appDirectory
        let dir = PagePool.directory(appDirectory: appDirectory)
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw SSIError.sys("mkdir \(dir)", errno: errno, hint: "set SSI_CHKPT_DIR to a writable directory, or run as root") }
        sessionLock = try PoolSession.lockPresent("\(dir)/session.lock")
        allocLock = try LockFile("\(dir)/alloc.lock")
        pool = try PoolMapping(path: PagePool.dataPath(appDirectory: appDirectory), writable: true)
        known = readVersions ? PoolSession.knownPages(appDirectory: appDirectory, poolSlots: pool.fileSize / SnapshotFormat.pageSize) : HashSlots()
    }

    deinit { release() }

    /// The session lock, held shared, on the lock file that is still the pool's: an unused
    /// pool is removed under the exclusive lock (PoolSweep.removeIfUnused), so a lock had
    /// on a file unlinked meanwhile is taken again on the new pool's.
    static func lockPresent(_ path: String) throws -> LockFile {
        for _ in 0..<100 {
            let dir = (path as NSString).deletingLastPathComponent
            if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw SSIError.sys("mkdir \(dir)", errno: errno) }
            let lock = try LockFile(path)
            try lock.lock(LOCK_SH)
            var a = stat(), b = stat()
            if fstat(lock.fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev { return lock }
        }
        throw SSIError(.busy, "the page pool \(path) keeps being removed under this checkpoint", hint: "try again")
    }

    /// What the committed versions hold: hash -> slot, from their maps. A map that cannot be
    /// read only costs a second copy of its pages (every candidate is compared anyway).
    static func knownPages(appDirectory: String, poolSlots: UInt64) -> HashSlots {
        var table = HashSlots(capacity: Int(min(poolSlots, 1 << 24)))
        for dir in PoolSweep.versionDirectories(appDirectory) {
            guard let m = try? JSONDecoder().decode(Manifest.self, from: Data(ProcFS.readBytes("\(dir)/manifest.json"))) else { continue }
            for p in m.pooled ?? [] {
                guard let map = try? PageMap.decode(ProcFS.readBytes("\(dir)/\(p.map)"), where: p.map) else { continue }
                for i in map.slots.indices where map.slots[i] < poolSlots { table.insert(map.hashes[i], map.slots[i]) }
            }
        }
        return table
    }

    /// Stores whole pages whose hashes are given: each one's slot and hash go into `map`.
    /// Returns the bytes written to the pool (pages whose content it did not hold).
    func store(_ bytes: UnsafeRawBufferPointer, hashes: [UInt64], into map: inout PageMap) throws -> UInt64 {
        let page = PagePool.page
        let n = bytes.count / page
        precondition(n * page == bytes.count, "the pool stores whole pages")
        lock.lock()
        defer { lock.unlock() }
        func at(_ i: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[(i * page)..<((i + 1) * page)]) }
        var fresh = [Int]()
        var freshByHash = [UInt64: Int]()
        // For each page: an equal page in the pool, or an equal new page of this batch, or new.
        var source = [Int](repeating: -1, count: n)
        var slots = [UInt64](repeating: 0, count: n)
        for i in 0..<n {
            let p = at(i)
            let h = hashes[i]
            if let s = known.find(h), let old = try pool.page(s), memcmp(old.baseAddress!, p.baseAddress!, page) == 0 {
                slots[i] = s
            } else if let j = freshByHash[h], memcmp(at(j).baseAddress!, p.baseAddress!, page) == 0 {
                source[i] = j
            } else {
                if freshByHash[h] == nil { freshByHash[h] = i }
                source[i] = i
                fresh.append(i)
            }
        }
        if !fresh.isEmpty {
            let first = try allocate(UInt64(fresh.count))
            try write(fresh.map(at), at: first)
            for (k, i) in fresh.enumerated() {
                slots[i] = first + UInt64(k)
                known.insert(hashes[i], slots[i])
            }
        }
        for i in 0..<n where source[i] >= 0 { slots[i] = slots[source[i]] }
        map.slots += slots
        map.hashes += hashes
        return UInt64(fresh.count * page)
    }

    /// Hands out `count` consecutive slots at the end of the pool (alloc.lock held for one
    /// ftruncate(2), so concurrent sessions get disjoint slots).
    private func allocate(_ count: UInt64) throws -> UInt64 {
        try allocLock.lock(LOCK_EX)
        defer { allocLock.unlock() }
        let first = (pool.fileSize + SnapshotFormat.pageSize - 1) / SnapshotFormat.pageSize
        if ftruncate(pool.fd, off_t((first + count) * SnapshotFormat.pageSize)) != 0 {
            throw SSIError.sys("extend the page pool \(pool.path)", errno: errno, hint: errno == ENOSPC || errno == EFBIG ? "free space in the snapshot directory" : nil)
        }
        added.append((first, count))
        return first
    }

    /// The new pages, written where they are: one pwrite(2) per stretch of pages that lie
    /// next to each other in `pages`' memory (a batch of new pages is usually one stretch of
    /// the buffer received). Gathering them into one buffer first cost a copy of every byte
    /// a migration sends.
    private func write(_ pages: [UnsafeRawBufferPointer], at first: UInt64) throws {
        let page = PagePool.page
        var k = 0
        while k < pages.count {
            var n = 1
            while k + n < pages.count, pages[k + n].baseAddress == pages[k].baseAddress! + n * page { n += 1 }
            try writeAll(pages[k].baseAddress!, count: n * page, at: off_t((first + UInt64(k)) * SnapshotFormat.pageSize))
            k += n
        }
    }

    private func writeAll(_ base: UnsafeRawPointer, count: Int, at offset: off_t) throws {
        try pwriteAll(pool.fd, base, count: count, at: offset, what: "write the page pool \(pool.path)", whenFull: "free space in the snapshot directory")
    }

    /// Which pool file this is: a slot means the same bytes only in the same file.
    var identity: PoolIdentity {
        var st = stat()
        fstat(pool.fd, &st)
        return PoolIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Whether every slot lies inside the pool file (a slot past its end was never written).
    func holds(_ slots: UnsafeBufferPointer<UInt64>) -> Bool {
        let n = pool.fileSize / SnapshotFormat.pageSize
        return !slots.contains { $0 >= n }
    }

    func sync() throws {
        if fsync(pool.fd) != 0 { throw SSIError.sys("fsync \(pool.path)", errno: errno) }
    }

    /// The snapshot was abandoned: its new pages go (no committed version refers to them:
    /// other sessions only reuse pages of committed versions and their own).
    func abort() {
        RecentPageMaps.forget(pool: PagePool.dataPath(appDirectory: appDirectory))
        lock.lock()
        for r in added {
            _ = FileSpace.punchHole(pool.fd, offset: r.first * SnapshotFormat.pageSize, length: r.count * SnapshotFormat.pageSize)
        }
        added = []
        lock.unlock()
        release()
        PoolSweep.removeIfUnused(appDirectory: appDirectory)
    }

    /// Lets sweeps run again (the version is committed, or abandoned).
    func release() {
        guard !released else { return }
        released = true
        sessionLock.unlock()
    }
}

/// A pages file written into the pool: the engine appends its pages as to any file; the
/// version keeps only its map.
final class PooledPagesWriter: PooledPagesFile {
    let name: String
    let mapName: String
    private let session: PoolSession
    private weak var writer: SnapshotWriter?
    private(set) var size: UInt64 = 0
    private var crc: UInt32 = 0
    private var map = PageMap(slots: [], hashes: [])
    private var mapFile: (any ImageFileWriter)? = nil
    /// A partial page, kept until the rest arrives (the engine appends whole pages).
    private var tail: [UInt8] = []
    private var added: UInt64 = 0

    init(writer: SnapshotWriter, session: PoolSession, name: String) {
        self.writer = writer
        self.session = session
        self.name = name
        mapName = PooledPagesWriter.mapName(name)
    }

    static func isPagesFile(_ name: String) -> Bool { name.hasPrefix("pages-") && name.hasSuffix(".img") }
    static func mapName(_ name: String) -> String { String(name.dropLast(4)) + ".map" }

    /// The file's CRC and the pages' hashes come from one pass (CRC32C.pages); bytes held
    /// in `tail` enter the CRC when their page is complete, or at finish.
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        size += UInt64(bytes.count)
        var rest = bytes
        if !tail.isEmpty {
            let take = min(PagePool.page - tail.count, rest.count)
            tail += UnsafeRawBufferPointer(rebasing: rest[0..<take])
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            if tail.count == PagePool.page { try tail.withUnsafeBytes { try storeWhole($0) }; tail = [] }
        }
        let whole = rest.count / PagePool.page * PagePool.page
        if whole > 0 { try storeWhole(UnsafeRawBufferPointer(rebasing: rest[0..<whole])) }
        if whole < rest.count { tail += UnsafeRawBufferPointer(rebasing: rest[whole...]) }
    }

    private func storeWhole(_ pages: UnsafeRawBufferPointer) throws {
        var hashes = [UInt64](repeating: 0, count: pages.count / PagePool.page)
        crc = hashes.withUnsafeMutableBufferPointer { CRC32C.pages(crc, pages, hashes: $0) }
        let before = map.slots.count
        added += try session.store(pages, hashes: hashes, into: &map)
        try appendMap(from: before)
    }

    var pool: PoolIdentity { session.identity }

    /// Pages the pool holds already, by slot and hash (an incremental checkpoint's pages not
    /// written since the previous version, whose map names them): nothing is read or
    /// written but the map; the file's CRC follows from the hashes (CRC32C.fromHashes), as
    /// if the pages' bytes had been appended. The slots must be named by a committed
    /// version: the session lock held since the first pages file keeps the sweep from
    /// freeing them.
    func appendPooled(slots: UnsafeBufferPointer<UInt64>, hashes: UnsafeBufferPointer<UInt64>) throws {
        precondition(slots.count == hashes.count, "one hash per slot")
        guard slots.count > 0 else { return }
        guard tail.isEmpty else { throw SSIError(.state, "\(name): pages by reference after a partial page") }
        guard session.holds(slots) else {
            throw SSIError(.corrupt, "\(name): a page named by the previous version lies past the end of the page pool \(session.pool.path)",
                           hint: "checkpoint again: the next one reads every page")
        }
        crc = CRC32C.fromHashes(crc, hashes)
        size += UInt64(slots.count) * SnapshotFormat.pageSize
        let before = map.slots.count
        map.slots += slots
        map.hashes += hashes
        try appendMap(from: before)
    }

    /// A last partial page: its bytes into the CRC, then stored padded with zeros.
    private func flushTail() throws {
        crc = tail.withUnsafeBytes { CRC32C.update(crc, $0) }
        tail += [UInt8](repeating: 0, count: PagePool.page - tail.count)
        let before = map.slots.count
        added += try tail.withUnsafeBytes { try session.store($0, hashes: [PagePool.hash($0)], into: &map) }
        tail = []
        try appendMap(from: before)
    }

    /// The map file grows with the pages: its entries from `first` on are written as they are
    /// made, so that the finish (in a migration, while the application is frozen) writes only
    /// the last batch's, not the 4 MiB of a 1 GiB process's map at once.
    private func appendMap(from first: Int) throws {
        guard let writer, first < map.slots.count else { return }
        if mapFile == nil { mapFile = try writer.createFile(mapName) }
        try PageMap(slots: Array(map.slots[first...]), hashes: Array(map.hashes[first...])).encoded().withUnsafeBytes { try mapFile?.append($0) }
    }

    /// Ends the map in the version and records the file as pooled.
    func finish(sync: Bool) throws -> FileEntry {
        if !tail.isEmpty { try flushTail() }
        if sync { try session.sync() }
        guard let writer else { throw SSIError(.state, "\(name): the snapshot it belonged to was abandoned") }
        if mapFile == nil { mapFile = try writer.createFile(mapName) }
        let mapEntry = try mapFile?.finish(sync: sync)
        writer.pooled.append(PooledFile(name: name, size: size, crc32c: crc, map: mapName, addedBytes: added))
        writer.pageMaps[name] = PoolPages(slots: map.slots, hashes: map.hashes)
        if !writer.durable, let mapEntry {
            RecentPageMaps.put(RecentPageMaps.key(pool: PagePool.dataPath(appDirectory: session.appDirectory), name: name, size: size, crc: crc,
                                                  mapCRC: mapEntry.crc32c), map)
        }
        return FileEntry(name: name, size: size, crc32c: crc)
    }
}

/// The identity of an application's page pool file (device and inode).
public struct PoolIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64
}

/// A pages file written into the page pool, which also takes pages the pool holds already by
/// slot and hash, without their bytes (an incremental checkpoint, IncrementalBase.swift).
public protocol PooledPagesFile: ImageFileWriter {
    var pool: PoolIdentity { get }
    func appendPooled(slots: UnsafeBufferPointer<UInt64>, hashes: UnsafeBufferPointer<UInt64>) throws
}

/// For each page of a pooled pages file, in file order: its slot in the pool and its hash.
public struct PoolPages: Sendable {
    public let slots: [UInt64]
    public let hashes: [UInt64]
}
