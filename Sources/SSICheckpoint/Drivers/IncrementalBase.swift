import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Incremental checkpoints that read only what the application wrote (issue 16).
//
// The page pool (PagePool.swift) already stores each distinct page once across versions,
// but finding that a page is unchanged means reading and hashing it: a second checkpoint of
// 256 MiB still read all 256 MiB. A pre-copy checkpoint tracks the pages the application
// writes (DirtyTracker: userfaultfd asynchronous write-protection); instead of lifting that
// tracking when it ends, it leaves it armed and keeps, per process, each tracked page's slot
// and hash in the version it just wrote. The next checkpoint of the application made by the
// same process (the node daemon for every cluster application, ssi-bench, any long-lived
// user of the engine; not two separate `ssi checkpoint` commands, since closing the
// userfaultfd ends the tracking) asks the tracker which pages were written since, copies
// only those, and takes every other page by reference: its slot and hash go into the new
// version's map (PooledPagesFile.appendPooled), nothing is read.
//
// When a base is not used (safe in every case, never wrong):
// - the process is not the one tracked (its start time differs: the PID was reused), or it
//   called execve(2) (its old mm is gone: PAGEMAP_SCAN on the tracker's pagemap fails), or an
//   area was unmapped, replaced or resized (the tracker reports it lost, or its bounds
//   differ): that area, or that process, is copied whole;
// - the version the references point into was deleted meanwhile, or the pool was replaced:
//   checked once the checkpoint holds the pool's session lock (which the sweep that frees
//   slots waits for), so a slot found valid stays valid until the commit.
// A page dropped since (MADV_DONTNEED) counts as written for the tracker (DirtyTracker.written),
// so a stale reference is never taken for it.
//
// Cost: while a base is kept, the application's first write to each page after a checkpoint
// takes a minor fault that the kernel resolves at once (the price of soft-dirty tracking).
// `SSI_INCREMENTAL=off` keeps no base. A base ends when the application is checkpointed with
// --kill, migrated, or exits (dropped by the next checkpoint of this process).

/// What one checkpoint leaves for the next checkpoint of the same application.
final class IncrementalBase: @unchecked Sendable {
    struct Key: Hashable {
        let store: String
        let app: Int32
        let root: Int32
    }

    /// A tracked area [start, end) of the version: each page's slot in the pool (`none`: not
    /// in the version) and its hash.
    struct KeptArea {
        let start: UInt64
        let end: UInt64
        var slots: [UInt64]
        var hashes: [UInt64]
    }

    /// One process: its tracker, still armed, and each tracked area's pages in the version.
    final class Kept {
        let pid: Int32
        let startTime: UInt64
        let tracker: DirtyTracker
        var areas: [KeptArea]
        /// Pages written since the version was taken, found when the tracker was re-armed
        /// right after it (the last, frozen round's pages, and any written since the freeze).
        var written: [(UInt64, UInt64)]

        init(pid: Int32, startTime: UInt64, tracker: DirtyTracker, areas: [KeptArea], written: [(UInt64, UInt64)]) {
            (self.pid, self.startTime, self.tracker, self.areas, self.written) = (pid, startTime, tracker, areas, written)
        }
    }

    static let none = UInt64.max
    /// Bases kept at most; the oldest goes first (each holds a userfaultfd and 16 bytes per
    /// tracked page).
    static let limit = 32

    let version: Int
    let pool: PoolIdentity
    let rootStart: UInt64
    var processes: [Int32: Kept]
    private let made: Int64

    private init(version: Int, pool: PoolIdentity, rootStart: UInt64, processes: [Int32: Kept]) {
        (self.version, self.pool, self.rootStart, self.processes) = (version, pool, rootStart, processes)
        made = Clock.monotonicNanoseconds()
    }

    /// Closes every tracker still held: the protection is lifted.
    func stop() { for k in processes.values { k.tracker.stop() } }

    static var enabled: Bool { !["off", "0", "no"].contains(ProcessInfo.processInfo.environment["SSI_INCREMENTAL"] ?? "") }

    // MARK: the bases of this process

    private static let lock = NSLock()
    nonisolated(unsafe) private static var bases: [Key: IncrementalBase] = [:]

    /// Takes the base kept for `key`, if its root is still the process it was made for.
    static func take(_ key: Key) -> IncrementalBase? {
        lock.lock()
        let base = bases.removeValue(forKey: key)
        lock.unlock()
        guard let base else { return nil }
        guard (try? ProcStat.read(pid: key.root))?.startTime == base.rootStart else { base.stop(); return nil }
        return base
    }

    /// Keeps `base` for `key`, dropping bases whose application has exited and, past
    /// `limit`, the oldest.
    static func put(_ key: Key, _ base: IncrementalBase) {
        lock.lock()
        var gone = [IncrementalBase]()
        if let old = bases.updateValue(base, forKey: key) { gone.append(old) }
        for (k, b) in bases where (try? ProcStat.read(pid: k.root))?.startTime != b.rootStart {
            gone.append(b)
            bases.removeValue(forKey: k)
        }
        while bases.count > limit, let oldest = bases.min(by: { $0.value.made < $1.value.made }) {
            gone.append(oldest.value)
            bases.removeValue(forKey: oldest.key)
        }
        lock.unlock()
        for b in gone { b.stop() }
    }

    /// Drops every base of the application rooted at `root` (it is migrated or killed: its
    /// trackers would also keep another tracker from registering its areas).
    static func drop(root: Int32) {
        lock.lock()
        let keys = bases.keys.filter { $0.root == root }
        let gone = keys.compactMap { bases.removeValue(forKey: $0) }
        lock.unlock()
        for b in gone { b.stop() }
    }

    // MARK: making one

    /// The base a committed pre-copy checkpoint leaves: its trackers, re-armed now that the
    /// application runs again, and each tracked page's slot and hash in `version`, from the
    /// processes' page runs and the pages files' maps. Nil (and the trackers stopped) when
    /// the snapshot was not written into a page pool.
    static func make(precopy: Precopy, images: [ProcessImage], writer: SnapshotWriter, version: Int, root: Int32) -> IncrementalBase? {
        guard let rootStart = (try? ProcStat.read(pid: root))?.startTime,
              let pool = precopy.processes.values.lazy.compactMap({ ($0.pages as? PooledPagesFile)?.pool }).first else { return nil }
        let imageByFile = Dictionary(images.map { ($0.pagesFile, $0) }, uniquingKeysWith: { a, _ in a })
        var kept = [Int32: Kept]()
        for p in precopy.processes.values {
            let name = "pages-\(p.pid).img"
            guard p.tracker.isTracking, (p.pages as? PooledPagesFile)?.pool == pool,
                  let img = imageByFile[name], let map = writer.pageMaps[name],
                  let start = (try? ProcStat.read(pid: p.pid))?.startTime else { p.tracker.stop(); continue }
            // Everything written since the tracker was last re-armed, re-armed now: the final
            // round's pages (read frozen, counted again: harmless) and any written since.
            guard let scan = try? p.tracker.scan(rearm: true, within: img.vmas.map { ($0.start, $0.end) }) else { p.tracker.stop(); continue }
            // The version's areas inside a tracked range (a part unmapped and mapped again
            // since the tracking started is inside one too, but the next checkpoint's scan
            // finds it unregistered and reads it whole).
            var areas = [KeptArea]()
            for vma in img.vmas where p.tracker.ranges.contains(where: { $0.start <= vma.start && vma.end <= $0.end })
                && !scan.lost.contains(where: { $0.start < vma.end && vma.start < $0.end }) {
                let n = Int((vma.end - vma.start) / SnapshotFormat.pageSize)
                var slots = [UInt64](repeating: none, count: n), hashes = [UInt64](repeating: 0, count: n)
                var whole = true
                for run in vma.pages {
                    let first = Int((run.address - vma.start) / SnapshotFormat.pageSize)
                    let inFile = Int(run.fileOffset / SnapshotFormat.pageSize)
                    guard first >= 0, first + Int(run.count) <= n, inFile + Int(run.count) <= map.slots.count else { whole = false; break }
                    for k in 0..<Int(run.count) {
                        slots[first + k] = map.slots[inFile + k]
                        hashes[first + k] = map.hashes[inFile + k]
                    }
                }
                if whole { areas.append(KeptArea(start: vma.start, end: vma.end, slots: slots, hashes: hashes)) }
            }
            kept[p.pid] = Kept(pid: p.pid, startTime: start, tracker: p.tracker, areas: areas, written: scan.written)
        }
        guard !kept.isEmpty else { return nil }
        return IncrementalBase(version: version, pool: pool, rootStart: rootStart, processes: kept)
    }
}
