import Foundation
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// The page pool of one application (issue 16, incremental versions): every saved page of
// every version of the application is kept once, in `<appid>/pool/pages.img`, at a slot
// (offset / 4096). A version's pages files are then tables (`pages-<pid>.map`): for each
// page of the file the engine wrote, the slot that holds it and its content hash. A new
// version writes only the pages whose content is not in the pool yet.
//
// Identity of content: a page's hash (two CRC-32C, one per half) finds a candidate slot,
// and the candidate is used only if its bytes are equal (memcmp against the pool file
// mapped read-only): a hash collision costs a second copy, never a wrong page.
//
// Concurrency (flock(2) on two lock files, advisory, per open file description):
//  - every writer session holds `session.lock` shared from its first pages file to its
//    commit or abort; a sweep (freeing the slots no version uses) takes it exclusive, so
//    it never frees a page a checkpoint in progress has just found in the pool;
//  - slots are handed out under `alloc.lock`, held for one ftruncate(2): several sessions
//    (two checkpoints of one application, a pull) append to the pool side by side.
// Nothing is ever rewritten in place: a slot, once written, keeps its bytes until a sweep
// punches it out (fallocate(2) FALLOC_FL_PUNCH_HOLE), when no version refers to it.

public enum PagePool {
    public static let directoryName = "pool"
    public static let dataName = "pages.img"
    static let page = Int(SnapshotFormat.pageSize)

    /// The content hash of one page: CRC-32C of its first half, then of its second half.
    /// Two independent 32-bit checks: a flipped bit anywhere changes it.
    public static func hash(_ page: UnsafeRawBufferPointer) -> UInt64 {
        // The page check of a restore hashes every page this way: one call, no file CRC
        // (cssi_crc32c_page_hash; the file CRC's constants used to be computed per call,
        // six times the cost of the hash itself).
        precondition(page.count == PagePool.page, "a page is 4096 bytes")
        return CRC32C.pageHash(page.baseAddress!)
    }

    public static func directory(appDirectory: String) -> String { "\(appDirectory)/\(directoryName)" }
    public static func dataPath(appDirectory: String) -> String { "\(directory(appDirectory: appDirectory))/\(dataName)" }
}

/// A map file: for each page of a pages file, its slot in the pool and its hash, 16 bytes
/// little-endian (slot u64, hash u64).
struct PageMap: Sendable {
    var slots: [UInt64]
    var hashes: [UInt64]

    static let entrySize = 16

    func encoded() -> [UInt8] {
        // Stored in place: two small arrays per entry (littleEndianBytes) cost 40 ms for the
        // 280k pages of a 1 GiB migration, written while the application is frozen.
        var out = [UInt8](repeating: 0, count: slots.count * PageMap.entrySize)
        out.withUnsafeMutableBytes { raw in
            for i in slots.indices {
                raw.storeBytes(of: slots[i].littleEndian, toByteOffset: i * PageMap.entrySize, as: UInt64.self)
                raw.storeBytes(of: hashes[i].littleEndian, toByteOffset: i * PageMap.entrySize + 8, as: UInt64.self)
            }
        }
        return out
    }

    static func decode(_ b: [UInt8], where path: String) throws -> PageMap {
        guard b.count % entrySize == 0 else { throw SSIError(.corrupt, "\(path) is not a page map (\(b.count) bytes, not a multiple of \(entrySize))") }
        let n = b.count / entrySize
        return b.withUnsafeBytes { raw in
            PageMap(slots: (0..<n).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * entrySize, as: UInt64.self)) },
                    hashes: (0..<n).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * entrySize + 8, as: UInt64.self)) })
        }
    }
}

/// Content hash -> slot, open addressing on flat arrays (a Dictionary of a few hundred
/// thousand pages costs tens of ms to fill, on the checkpoint's path).
struct HashSlots {
    private var keys: [UInt64]
    private var values: [UInt64]
    private var mask: Int
    private(set) var count = 0
    static let empty = UInt64.max

    init(capacity: Int = 1024) {
        var n = 1024
        while n < capacity * 2 { n <<= 1 }
        keys = [UInt64](repeating: 0, count: n)
        values = [UInt64](repeating: HashSlots.empty, count: n)
        mask = n - 1
    }

    func find(_ key: UInt64) -> UInt64? {
        var i = Int(truncatingIfNeeded: key ^ (key >> 29)) & mask
        while values[i] != HashSlots.empty {
            if keys[i] == key { return values[i] }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Keeps the first slot seen for a hash.
    mutating func insert(_ key: UInt64, _ slot: UInt64) {
        if (count + 1) * 2 > keys.count { grow() }
        var i = Int(truncatingIfNeeded: key ^ (key >> 29)) & mask
        while values[i] != HashSlots.empty {
            if keys[i] == key { return }
            i = (i + 1) & mask
        }
        keys[i] = key
        values[i] = slot
        count += 1
    }

    private mutating func grow() {
        let (oldKeys, oldValues) = (keys, values)
        keys = [UInt64](repeating: 0, count: oldKeys.count * 2)
        values = [UInt64](repeating: HashSlots.empty, count: oldKeys.count * 2)
        mask = keys.count - 1
        count = 0
        for i in oldKeys.indices where oldValues[i] != HashSlots.empty { insert(oldKeys[i], oldValues[i]) }
    }
}

/// An open lock file; flock(2) on it.
final class LockFile {
    let fd: Int32
    init(_ path: String) throws {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 { throw SSIError.sys("open \(path)", errno: errno) }
    }
    deinit { close(fd) }

    /// Blocks until the lock is had (flock(2) is restarted by hand after a signal: EINTR).
    func lock(_ op: Int32) throws {
        while flock(fd, op) != 0 {
            if errno != EINTR { throw SSIError.sys("flock", errno: errno) }
        }
    }

    /// Tries for up to `seconds`; false if another holder kept it.
    func tryLock(_ op: Int32, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while flock(fd, op | LOCK_NB) != 0 {
            if errno != EWOULDBLOCK && errno != EINTR { return false }
            if Date() > deadline { return false }
            usleep(20_000)
        }
        return true
    }

    func unlock() { _ = flock(fd, LOCK_UN) }
}

/// The pool file opened for reading, mapped read-only (MAP_SHARED: writes made with
/// pwrite(2) through the page cache are seen at once).
final class PoolMapping {
    let path: String
    let fd: Int32
    private(set) var base: UnsafeRawPointer? = nil
    private(set) var length = 0

    init(path: String, writable: Bool) throws {
        self.path = path
        fd = open(path, (writable ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0o600)
        if fd < 0 { throw SSIError.sys("open \(path)", errno: errno) }
    }

    deinit {
        unmap()
        close(fd)
    }

    var fileSize: UInt64 {
        var st = stat()
        fstat(fd, &st)
        return UInt64(st.st_size)
    }

    /// Bytes the file takes on disk (punched holes take none).
    var allocatedBytes: UInt64 {
        var st = stat()
        fstat(fd, &st)
        return UInt64(st.st_blocks) * 512
    }

    private func unmap() {
        if let b = base { munmap(UnsafeMutableRawPointer(mutating: b), length) }
        base = nil
        length = 0
    }

    /// Maps the file as it is now (again, if it grew).
    func remap() throws {
        unmap()
        let size = Int(fileSize)
        guard size > 0 else { return }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { throw SSIError.sys("mmap \(path)", errno: errno) }
        base = UnsafeRawPointer(p)
        length = size
    }

    /// The bytes of `slot`, mapping again if the file grew past the mapping.
    func page(_ slot: UInt64) throws -> UnsafeRawBufferPointer? {
        let end = Int((slot + 1) * SnapshotFormat.pageSize)
        if end > length { try remap() }
        guard let b = base, end <= length else { return nil }
        return UnsafeRawBufferPointer(start: b + end - PagePool.page, count: PagePool.page)
    }
}

/// The page maps a migration's target has just written, kept in memory for the restore that
/// follows at once (ResolvedPool.load), so that it does not read and decode them again while
/// the application is frozen: a 1 GiB process's map is 4 MiB, 10-15 ms to read into fresh
/// memory on a virtual machine. Only non-durable writes (a migration's image) put maps here;
/// each is taken once, and only the last few are kept.
enum RecentPageMaps {
    private static let maps = Mutex<[(key: String, map: PageMap)]>([])
    static let kept = 8

    /// A pooled pages file, by its pool, its name, size and CRC, and its map file's CRC, as
    /// the manifest lists them: a map kept here is used only for a map file of the very same
    /// content (same slots), never for another version's.
    static func key(pool: String, name: String, size: UInt64, crc: UInt32, mapCRC: UInt32) -> String { "\(pool)|\(name)|\(size)|\(crc)|\(mapCRC)" }

    static func put(_ key: String, _ map: PageMap) {
        maps.withLock { maps in
            maps.removeAll { $0.key == key }
            maps.append((key, map))
            if maps.count > kept { maps.removeFirst(maps.count - kept) }
        }
    }

    /// An abandoned snapshot's maps go: their new pages are gone from the pool.
    static func forget(pool: String) {
        maps.withLock { $0.removeAll { $0.key.hasPrefix(pool + "|") } }
    }

    static func take(_ key: String) -> PageMap? {
        maps.withLock { maps in maps.firstIndex { $0.key == key }.map { maps.remove(at: $0).map } }
    }
}
