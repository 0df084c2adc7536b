import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Reading a pooled version: every page it names is checked against its recorded hash
// before anything is restored, and the processes' page runs are pointed into the pool
// file, so that the engine reads (or UFFDIO_COPYs) straight from the pool as it does from a
// pages file. Deleting a version frees the pool slots no other version names.

/// The pooled files of one version, resolved against the pool.
struct ResolvedPool {
    let poolPath: String
    /// Per pooled file name: the slot of each of its pages.
    let slots: [String: [UInt64]]
    /// The page check left for later (`deferCheck`), nil when done or not asked for.
    let deferred: DeferredPageCheck?

    /// Reads every map, checks each page's slot and content, naming the version and page
    /// that fail. `dir` is the version directory, inside its application's directory. With
    /// `deferCheck`, the pages' check is returned in `deferred` instead of done here.
    static func load(_ manifest: Manifest, dir: String, verify checkBytes: Bool = true, deferCheck: Bool = false) throws -> ResolvedPool? {
        guard let pooled = manifest.pooled, !pooled.isEmpty else { return nil }
        let appDir = (dir as NSString).deletingLastPathComponent
        let path = PagePool.dataPath(appDirectory: appDir)
        let what = "snapshot v\(manifest.version) of application \(manifest.appID) (\(dir))"
        guard access(path, R_OK) == 0 else {
            throw SSIError(.corrupt, "\(what) keeps its pages in the page pool \(path), which is missing",
                           hint: "a version directory copied alone lacks its pages: copy the application's whole directory, or restart another version")
        }
        let pool = try PoolMapping(path: path, writable: false)
        try pool.remap()
        var slots = [String: [UInt64]]()
        var later: [(name: String, map: PageMap)] = []
        for p in pooled {
            // The map just written by this daemon (a migration's target), or read from its file.
            let mapCRC = manifest.files.first { $0.name == p.map }?.crc32c
            let map = try mapCRC.flatMap { RecentPageMaps.take(RecentPageMaps.key(pool: path, name: p.name, size: p.size, crc: p.crc32c, mapCRC: $0)) }
                ?? PageMap.decode(try ProcFS.readBytes("\(dir)/\(p.map)"), where: "\(dir)/\(p.map)")
            let pages = (p.size + SnapshotFormat.pageSize - 1) / SnapshotFormat.pageSize
            guard UInt64(map.slots.count) == pages else {
                throw SSIError(.corrupt, "\(what): \(p.map) names \(map.slots.count) pages, \(p.name) has \(pages)", hint: "restart another version")
            }
            if checkBytes && deferCheck { later.append((p.name, map)) } else if checkBytes { try verify(map, of: p.name, pool: pool, what: what) }
            slots[p.name] = map.slots
        }
        return ResolvedPool(poolPath: path, slots: slots, deferred: later.isEmpty ? nil : DeferredPageCheck(pool: pool, maps: later, what: what))
    }

    /// Each page's hash against the pool's bytes, in one piece per core (verifying comes
    /// before every restart, as for a pages file's CRC).
    static func verify(_ map: PageMap, of name: String, pool: PoolMapping, what: String) throws {
        let count = map.slots.count
        guard count > 0 else { return }
        let poolSlots = UInt64(pool.length) / SnapshotFormat.pageSize
        let pieces = count >= 16384 ? max(1, ProcessInfo.processInfo.activeProcessorCount) : 1
        let per = (count + pieces - 1) / pieces
        let bad = FirstBadPage(pieces: pieces)
        let base = MappedBytes(pool.base ?? UnsafeRawPointer(bitPattern: 1)!)
        map.slots.withUnsafeBufferPointer { slotsBuf in
            map.hashes.withUnsafeBufferPointer { hashBuf in
                let (s, h) = (SendableBuffer(slotsBuf), SendableBuffer(hashBuf))
                DispatchQueue.concurrentPerform(iterations: pieces) { k in
                    var (low, high) = (UInt64.max, UInt64(0))
                    // The pages read went into our page tables: each piece drops the range it
                    // read once done (MADV_DONTNEED on a shared file mapping only unmaps, the
                    // mm's lock taken shared), so the pool's munmap has nothing left to tear
                    // down (35 ms per GiB on one thread, while a restore waits).
                    defer { if low <= high, high < poolSlots { Self.unmapPages(base, low, high) } }
                    for i in (k * per)..<min(count, (k + 1) * per) {
                        let slot = s.buffer[i]
                        let ok = slot < poolSlots && PagePool.hash(UnsafeRawBufferPointer(start: base.pointer + Int(slot * SnapshotFormat.pageSize), count: PagePool.page)) == h.buffer[i]
                        if !ok { bad.index[k] = i; return }
                        (low, high) = (min(low, slot), max(high, slot))
                    }
                }
            }
        }
        for k in 0..<pieces where bad.index[k] >= 0 {
            let i = bad.index[k]
            let slot = map.slots[i]
            if slot >= poolSlots {
                throw SSIError(.corrupt, "\(what): page \(i) of \(name) is missing from the page pool (slot \(slot), the pool \(pool.path) has \(poolSlots))",
                               hint: "restart another version")
            }
            throw SSIError(.corrupt, "\(what): page \(i) of \(name) is corrupt in the page pool (slot \(slot) of \(pool.path): its content hash differs from the one recorded)",
                           hint: "restart another version; versions sharing that page are damaged too")
        }
    }

    /// Drops our page-table entries of pool slots `low...high` (madvise(2) MADV_DONTNEED).
    static func unmapPages(_ base: MappedBytes, _ low: UInt64, _ high: UInt64) {
        let start = UnsafeMutableRawPointer(mutating: base.pointer + Int(low * SnapshotFormat.pageSize))
        madvise(start, Int((high - low + 1) * SnapshotFormat.pageSize), MADV_DONTNEED)
    }

    /// The process with its page runs pointing into the pool file (runs split where
    /// consecutive pages of the pages file are not consecutive in the pool).
    func translate(_ image: ProcessImage) throws -> ProcessImage {
        guard let slots = slots[image.pagesFile] else { return image }
        let page = SnapshotFormat.pageSize
        var out = image
        // A run's pages are walked stretch by stretch (pages whose slots follow each other),
        // not page by page through the runs array: a pre-copied 1 GiB process has 262,144
        // pages, and appending or growing the last run for each took 3-11 ms of a migration's
        // frozen time.
        try slots.withUnsafeBufferPointer { s in
            for v in out.vmas.indices {
                let pages = out.vmas[v].pages
                var runs = [PageRun]()
                runs.reserveCapacity(pages.count)
                for run in pages {
                    let first = run.fileOffset / page
                    guard run.fileOffset % page == 0, first <= UInt64(s.count), run.count <= UInt64(s.count) - first else {
                        throw SSIError(.corrupt, "PID \(image.pid): a page run at 0x\(String(run.address, radix: 16)) lies outside \(image.pagesFile)", hint: "restart another version")
                    }
                    let base = Int(first), n = Int(run.count)
                    var k = 0
                    while k < n {
                        let from = k
                        let slot = s[base + k]
                        k += 1
                        while k < n, s[base + k] == slot &+ UInt64(k - from) { k += 1 }
                        let address = run.address + UInt64(from) * page, offset = slot &* page, count = UInt64(k - from)
                        if let last = runs.last, last.address + last.count * page == address, last.fileOffset &+ last.count &* page == offset {
                            runs[runs.count - 1].count += count
                        } else {
                            runs.append(PageRun(address: address, count: count, fileOffset: offset))
                        }
                    }
                }
                out.vmas[v].pages = runs
            }
        }
        return out
    }
}

/// The pages of a pooled version still to be checked against their recorded hashes
/// (Snapshot.load with `deferPageCheck`): a restart runs the check while it rebuilds the
/// processes, which read the same pool, and lets none of them run before it passes
/// (RestartSession). For 1 GiB the check is a fifth of a second (the CRC of every page, the
/// faults of mapping the pool and the unmapping), which no longer adds to the restore's.
/// @unchecked Sendable: nothing in it changes after init; the pool is mapped read-only.
public final class DeferredPageCheck: @unchecked Sendable {
    let pool: PoolMapping
    let maps: [(name: String, map: PageMap)]
    let what: String

    init(pool: PoolMapping, maps: [(name: String, map: PageMap)], what: String) {
        (self.pool, self.maps, self.what) = (pool, maps, what)
    }

    /// Checks every page; throws naming the first bad one (ResolvedPool.verify).
    public func run() throws {
        for m in maps { try ResolvedPool.verify(m.map, of: m.name, pool: pool, what: what) }
    }
}

/// The first bad page found by each piece of a parallel check, or -1. @unchecked Sendable:
/// each piece writes only its own element, read after concurrentPerform returns.
final class FirstBadPage: @unchecked Sendable {
    let index: UnsafeMutableBufferPointer<Int>
    init(pieces: Int) {
        index = .allocate(capacity: pieces)
        index.initialize(repeating: -1)
    }
    deinit { index.deallocate() }
}

/// Read-only buffers shared by the pieces of a parallel check. @unchecked Sendable: only
/// read, and only while the enclosing withUnsafeBufferPointer runs.
struct SendableBuffer<T>: @unchecked Sendable {
    let buffer: UnsafeBufferPointer<T>
    init(_ b: UnsafeBufferPointer<T>) { buffer = b }
}

/// A pooled pages file read as the engine wrote it (pulls to another node read it so): each
/// page from its slot. Served at any offset.
final class PooledContentReader: ImageFileReader {
    let size: UInt64
    var path: String? { nil }
    /// The slots of pages `firstPage...`: a reader may hold only part of a map.
    private let slots: [UInt64]
    private let firstPage: UInt64
    private let pool: PoolMapping

    init(slots: [UInt64], firstPage: UInt64 = 0, size: UInt64, poolPath: String) throws {
        (self.slots, self.firstPage, self.size) = (slots, firstPage, size)
        pool = try PoolMapping(path: poolPath, writable: false)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset + UInt64(buffer.count) <= size else { throw SSIError(.corrupt, "\(pool.path): read past the end of a pooled pages file") }
        var done = 0
        while done < buffer.count {
            let o = offset + UInt64(done)
            guard o / SnapshotFormat.pageSize >= firstPage else { throw SSIError(.corrupt, "\(pool.path): read before the loaded part of a map") }
            let index = Int(o / SnapshotFormat.pageSize - firstPage), within = Int(o % SnapshotFormat.pageSize)
            let n = min(PagePool.page - within, buffer.count - done)
            let at = off_t(slots[index] * SnapshotFormat.pageSize) + off_t(within)
            let r = pread(pool.fd, buffer.baseAddress! + done, n, at)
            if r < 0 { if errno == EINTR { continue }; throw SSIError.sys("read \(pool.path)", errno: errno) }
            if r < n { throw SSIError(.corrupt, "\(pool.path) is shorter than its maps say (slot \(slots[index]))") }
            done += n
        }
    }
}

/// Freeing the pool slots no committed version names (mark and sweep).
enum PoolSweep {
    /// Committed version directories of an application (v<N>; temporary ones are not).
    static func versionDirectories(_ appDirectory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: appDirectory)) ?? []
        return names.filter { $0.hasPrefix("v") && Int($0.dropFirst()) != nil }.map { "\(appDirectory)/\($0)" }
    }

    /// Removes the pool of an application that has no version (its first checkpoint
    /// failed), when no other checkpoint of it is running.
    static func removeIfUnused(appDirectory: String) {
        let dir = PagePool.directory(appDirectory: appDirectory)
        guard versionDirectories(appDirectory).isEmpty, let lock = try? LockFile("\(dir)/session.lock"), lock.tryLock(LOCK_EX, seconds: 0) else { return }
        defer { lock.unlock() }
        if versionDirectories(appDirectory).isEmpty { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Punches out every slot no version names (the file keeps its size, so slot numbers
    /// never move; a punched slot reads as zeros, which its recorded hash would refuse). Waits a little for checkpoints in progress
    /// (their pages are not named yet); returns nil if one is still running (its commit
    /// leaves the pool as it was; the next delete sweeps), else the bytes freed. A version
    /// whose maps cannot be read stops the sweep: nothing is freed that it might name.
    static func sweep(appDirectory: String) throws -> UInt64? {
        let dir = PagePool.directory(appDirectory: appDirectory)
        guard access(PagePool.dataPath(appDirectory: appDirectory), F_OK) == 0 else { return 0 }
        let lock = try LockFile("\(dir)/session.lock")
        guard lock.tryLock(LOCK_EX, seconds: 2) else { return nil }
        defer { lock.unlock() }
        let pool = try PoolMapping(path: PagePool.dataPath(appDirectory: appDirectory), writable: true)
        let total = pool.fileSize / SnapshotFormat.pageSize
        var live = [Bool](repeating: false, count: Int(total))
        for v in versionDirectories(appDirectory) {
            let m: Manifest
            do { m = try JSONDecoder().decode(Manifest.self, from: Data(ProcFS.readBytes("\(v)/manifest.json"))) } catch {
                throw SSIError(.corrupt, "\(v)/manifest.json cannot be read, so the page pool was not swept (nothing was freed): \(error)",
                               hint: "delete that version too, or repair it; space is freed by the next delete")
            }
            for p in m.pooled ?? [] {
                let map = try PageMap.decode(try ProcFS.readBytes("\(v)/\(p.map)"), where: "\(v)/\(p.map)")
                for s in map.slots where s < total { live[Int(s)] = true }
            }
        }
        let before = pool.allocatedBytes
        var i = 0
        while i < live.count {
            guard !live[i] else { i += 1; continue }
            var j = i
            while j < live.count && !live[j] { j += 1 }
            let e = FileSpace.punchHole(pool.fd, offset: UInt64(i) * SnapshotFormat.pageSize, length: UInt64(j - i) * SnapshotFormat.pageSize)
            if e != 0 { throw SSIError.sys("free pages of \(pool.path) (fallocate PUNCH_HOLE)", errno: e) }
            i = j
        }
        return before - min(before, pool.allocatedBytes)
    }
}
