import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Pre-copy checkpoint: the pages are copied while the application runs, then, round after
// round, only those it wrote since (DirtyTracker: userfaultfd asynchronous write-protection
// read with PAGEMAP_SCAN); the application is frozen only for the last, small round, in
// which the final dump (Memory.swift) takes a precopied page as it is when /proc/PID/pagemap
// shows it still write-protected (not written since it was copied) and copies the rest.
//
// The pages of each process go to its pages file as they are copied; a page copied again
// later is appended again and the index points at the latest copy (the older bytes stay in
// the file, unused: a snapshot written with pre-copy may be somewhat bigger than one
// written frozen, never different in content). Nothing of the format changes: a VMA's page
// runs already name their offset in the file.
//
// Used by `ssi checkpoint` into the version store (a directory file per process can be
// written in any order); by default when the application holds at least
// `Precopy.autoThreshold` of anonymous memory and is left running, always with --precopy,
// never with --no-precopy. An application already frozen (-c) is dumped as it is.

/// The pages of one process copied so far, and the tracker that says which changed since.
final class PrecopiedPages {
    let pid: Int32
    let tracker: DirtyTracker
    let pages: any ImageFileWriter
    /// The areas of /proc/PID/maps given to the tracker.
    let areas: [MapsEntry]
    /// Where the latest copy of each page of the tracked areas is in `pages`.
    var index: PageIndex
    /// Pages taken by reference from the previous version (IncrementalBase).
    var referenced: UInt64 = 0
    /// Ranges a round found no longer tracked: their copies are forgotten.
    var lost: [(UInt64, UInt64)] = []
    /// /proc/PID/maps and the VmFlags of /proc/PID/smaps at the end of the last round,
    /// while the application ran: reading smaps walks every page table (20+ ms for 1 GiB),
    /// so the frozen round reuses these flags when maps has not changed since.
    var mapsAfterRounds: String? = nil
    var flagsAfterRounds: [UInt64: [String]] = [:]
    /// The process exited during the rounds (a short-lived child of the application): no
    /// more rounds for it; the final dump finds its zombie, or nothing.
    var exited = false

    init(pid: Int32, tracker: DirtyTracker, pages: any ImageFileWriter, areas: [MapsEntry]) {
        self.pid = pid; self.tracker = tracker; self.pages = pages; self.areas = areas
        index = PageIndex(areas.map { ($0.start, $0.end) })
    }
}

/// Offset in the pages file of the latest copy of each page, one flat array per area (a
/// 1 GiB area is 262144 entries: a hash table of that size costs tens of ms to fill and
/// to read, and the read is in the frozen window).
struct PageIndex {
    static let none = UInt64.max
    private(set) var starts: [UInt64] = []
    private(set) var ends: [UInt64] = []
    private(set) var offsets: [[UInt64]] = []

    init(_ areas: [(UInt64, UInt64)]) {
        for (s, e) in areas.sorted(by: { $0.0 < $1.0 }) {
            starts.append(s); ends.append(e)
            offsets.append([UInt64](repeating: PageIndex.none, count: Int((e - s) / SnapshotFormat.pageSize)))
        }
    }

    /// The area holding `addr`, by binary search.
    func area(_ addr: UInt64) -> Int? {
        var lo = 0, hi = starts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if starts[mid] <= addr { lo = mid + 1 } else { hi = mid }
        }
        let i = lo - 1
        return i >= 0 && addr < ends[i] ? i : nil
    }

    /// Records that `count` pages from `addr` were copied at `offset`, consecutively.
    mutating func set(_ addr: UInt64, count: Int, offset: UInt64) {
        var a = addr, off = offset, left = count
        while left > 0, let i = area(a) {
            let first = Int((a - starts[i]) / SnapshotFormat.pageSize)
            let n = min(left, offsets[i].count - first)
            for k in 0..<n { offsets[i][first + k] = off + UInt64(k) * SnapshotFormat.pageSize }
            a += UInt64(n) * SnapshotFormat.pageSize; off += UInt64(n) * SnapshotFormat.pageSize; left -= n
        }
    }

    /// Forgets the copies of [start, end).
    mutating func clear(_ start: UInt64, _ end: UInt64) {
        var a = start
        while a < end, let i = area(a) {
            let first = Int((a - starts[i]) / SnapshotFormat.pageSize)
            let last = Int((min(end, ends[i]) - starts[i]) / SnapshotFormat.pageSize)
            for k in first..<last { offsets[i][k] = PageIndex.none }
            a = min(end, ends[i])
        }
    }
}

final class Precopy {
    /// Below this much anonymous memory a plain frozen dump is about as short.
    static let autoThreshold: UInt64 = 64 << 20
    /// The application is frozen once a round finds less than this written, or after
    /// `maxRounds` rounds (an application writing faster than we copy never converges).
    static let stopBelow: UInt64 = 4 << 20
    static let maxRounds = 8

    private(set) var processes: [Int32: PrecopiedPages] = [:]
    /// Bytes copied in each round, for the profile and the result.
    private(set) var rounds: [UInt64] = []

    /// Whether a checkpoint of `app` with these options copies memory first.
    static func wanted(app: Int32, options: CheckpointEngine.CheckpointOptions, frozen: Bool) -> Bool {
        if frozen || options.precopy == false { return false }
        if options.precopy == true { return true }
        // --kill: the application ends right after, so only the wall time counts, and a
        // frozen dump is shorter than pre-copy rounds plus the last one. SIGSTOP is the
        // migration's: the application goes on elsewhere, and its frozen time is what counts.
        if let k = options.killSignal, k != .stop { return false }
        let tree = (try? ProcessTree.collect(root: app))?.pids ?? [app]
        let anon = tree.reduce(UInt64(0)) { acc, pid in
            let line = (try? ProcFS.read("/proc/\(pid)/status"))?.split(separator: "\n").first { $0.hasPrefix("RssAnon:") }
            return acc + (line.flatMap { UInt64($0.split(separator: " ").dropFirst().first ?? "") } ?? 0) * 1024
        }
        return anon >= autoThreshold
    }

    /// Tracks and copies every process of `app` into `writer`'s pages files, round after
    /// round, while it runs. Throws (nothing is left tracked, the application runs on) if
    /// the kernel cannot track writes. With `base` (the previous version's, kept by this
    /// process: IncrementalBase.swift), the first round copies only what each process wrote
    /// since that version and takes its other pages from the pool by reference; every
    /// tracker of `base` is either used here or stopped.
    init(app: Int32, writer: any ImageWriter, base: IncrementalBase? = nil) throws {
        var since = [Int32: DirtyTracker.Scan]()
        defer {
            for (pid, k) in base?.processes ?? [:] where since[pid] == nil { k.tracker.stop() }
        }
        // The pages copied from a base are those written since the previous version: they are
        // compared among themselves, not with every page of every version (whose maps would
        // be read from disk first: 3-7 ms for one version of 256 MiB, more with each).
        if let base, let w = writer as? SnapshotWriter, w.versionExists(base.version) { w.compareWithVersions = false }
        // A fresh init's memory is not saved (FreshInit.swift): nothing to copy ahead.
        let freshRoot = FreshInit.detect(root: app) != nil
        for pid in try ProcessTree.collect(root: app).pids {
            if freshRoot && pid == app { continue }
            guard let st = try? ProcStat.read(pid: pid), st.state != "Z" else { continue }
            // Private writable areas: where a process's own pages are (shared ones live in
            // their file or shmem object, read-only ones hardly change and are read whole).
            let areas = MapsEntry.parse(try ProcFS.read("/proc/\(pid)/maps"))
                .filter { !$0.shared && $0.write && ProcessDumper.classify($0) != nil }
            // The pages file first: in a pooled store it takes the pool's session lock, after
            // which the base's version, if it is still there, keeps its slots to the commit.
            let pages = try writer.createFile("pages-\(pid).img")
            if let base, let k = base.processes[pid], k.startTime == st.startTime, k.tracker.isTracking,
               (pages as? PooledPagesFile)?.pool == base.pool, (writer as? SnapshotWriter)?.versionExists(base.version) == true,
               let scan = try? k.tracker.scan(rearm: true, within: areas.map { ($0.start, $0.end) }) {
                // (A failed scan: the process called execve(2), its old mm is gone.)
                since[pid] = scan
                processes[pid] = PrecopiedPages(pid: pid, tracker: k.tracker, pages: pages, areas: areas)
                continue
            }
            // A kept tracker not used goes first: a range is registered with one userfaultfd
            // at a time (EBUSY), so the new one would track nothing.
            base?.processes[pid]?.tracker.stop()
            let tracker: DirtyTracker
            do { tracker = try DirtyTracker.start(pid: ProcessID(pid), areas: areas.map { ($0.start, $0.end) }) } catch {
                // A child that exited meanwhile is no reason to fail: it has no pages to copy.
                guard Precopy.isGone(pid) else { throw error }
                try pages.finish(sync: false)
                continue
            }
            processes[pid] = PrecopiedPages(pid: pid, tracker: tracker, pages: pages, areas: areas)
        }
        var clock = PhaseClock()
        var first = UInt64(0)
        for p in processes.values {
            if let scan = since[p.pid], let k = base?.processes[p.pid] {
                first += try copySince(p, kept: k, scan: scan)
            } else {
                first += try copyPresent(p)
            }
        }
        rounds.append(first)
        referencedBytes = processes.values.reduce(0) { $0 + $1.referenced * SnapshotFormat.pageSize }
        clock.mark("precopy: round 1, \(first >> 20) MiB" + (since.isEmpty ? "" : ", \(referencedBytes >> 20) MiB from the previous version"))
        while rounds.count < Precopy.maxRounds {
            try CheckpointEngine.stopIfInterrupted()
            var bytes = UInt64(0)
            for p in processes.values { bytes += try copyWritten(p) }
            rounds.append(bytes)
            clock.mark("precopy: round \(rounds.count), \(bytes >> 10) KiB")
            if bytes < Precopy.stopBelow { break }
        }
        // The rounds' bytes reach their file before the freeze (sendAndDrain).
        try sendAndDrain(writer)
        clock.mark("precopy: drained")
        for p in processes.values {
            p.mapsAfterRounds = try? ProcFS.read("/proc/\(p.pid)/maps")
            p.flagsAfterRounds = (try? ProcessDumper(pid: p.pid).vmFlags()) ?? [:]
        }
        clock.mark("precopy: smaps")
        // One more short round: what the application wrote during the drain and the smaps
        // read (50-100 ms of it when a target node writes the rounds into fresh page cache:
        // 1-3 MB at 20 MB/s) goes now, while it runs, instead of in the frozen dump, where a
        // 1 GiB application's 2.6 MB cost 7 ms to copy here and 12 ms to store on the target.
        // What is left for the freeze is what it writes in this round's few ms.
        var last = UInt64(0)
        for p in processes.values { last += try copyWritten(p) }
        if last > 0 {
            rounds.append(last)
            try sendAndDrain(writer)
            clock.mark("precopy: last round, \(last >> 10) KiB, drained")
        }
    }

    /// The rounds' bytes to their files, before the freeze: a writer to another node holds
    /// up to 4 MiB of each file before it sends them (3.4 MiB of a last round went with the
    /// frozen round's and were written into the target's fresh page cache inside the freeze:
    /// 28 ms), and the target writes them from a queue (up to 16 MiB behind: tens of ms the
    /// freeze would otherwise wait).
    private func sendAndDrain(_ writer: any ImageWriter) throws {
        for p in processes.values { try p.pages.flush() }
        try writer.drain()
    }

    /// Pages taken from the previous version by reference in round 1 (never read).
    private(set) var referencedBytes: UInt64 = 0

    /// Lifts every protection: the application runs as before.
    func stop() { for p in processes.values { p.tracker.stop() } }

    /// Whether process `pid` has exited: reaped, a zombie, or on its way out with its
    /// memory already released (no mappings left: exit_mm).
    static func isGone(_ pid: Int32) -> Bool {
        guard let st = try? ProcStat.read(pid: pid), st.state != "Z", st.state != "X" else { return true }
        return (try? ProcFS.read("/proc/\(pid)/maps"))?.isEmpty ?? true
    }

    /// Round 1: every present page of the tracked areas (they are protected already, so a
    /// write during the copy shows in the next round).
    private func copyPresent(_ p: PrecopiedPages) throws -> UInt64 {
        let pm = open("/proc/\(p.pid)/pagemap", O_RDONLY | O_CLOEXEC)
        guard pm >= 0 else { return 0 }
        defer { close(pm) }
        var runs = [(UInt64, UInt64)]()
        let tracked = Set(p.tracker.ranges.map(\.start))
        for m in p.areas where tracked.contains(m.start) {
            runs += (try? ProcessDumper(pid: p.pid).presentRuns(pagemap: pm, vma: m, fileBacked: ProcessDumper.classify(m) == .file)) ?? []
        }
        return try copy(runs, of: p)
    }

    /// Round 1 from the previous version: `scan` (taken when the pages file was made, and
    /// protecting again what it found) and the pages the base found written right after its
    /// version are copied; every other page of an area of the version (or of a part of one)
    /// still tracked is appended by reference to its slot in the pool; areas new or changed
    /// are tracked from now and copied whole.
    private func copySince(_ p: PrecopiedPages, kept: IncrementalBase.Kept, scan: DirtyTracker.Scan) throws -> UInt64 {
        guard let pooled = p.pages as? PooledPagesFile else { return try copyPresent(p) }
        let page = SnapshotFormat.pageSize
        let written = DirtyTracker.normalized(scan.written + kept.written)
        // An area of the version's, or a part of one (an area split by a munmap(2) or an
        // mprotect(2) of a neighbour keeps its registration and its protection), whose scan
        // just now found it still under the tracking.
        // Each known area: its bounds, and the version's area it lies in (its pages from `first`).
        var known = [(start: UInt64, end: UInt64, kept: IncrementalBase.KeptArea, first: Int)]()
        var fresh = [MapsEntry]()
        for m in p.areas {
            if let a = kept.areas.first(where: { $0.start <= m.start && m.end <= $0.end }),
               p.tracker.ranges.contains(where: { $0.start <= m.start && m.end <= $0.end }),
               !scan.lost.contains(where: { $0.start < m.end && m.start < $0.end }) {
                known.append((m.start, m.end, a, Int((m.start - a.start) / page)))
            } else {
                fresh.append(m)
            }
        }
        // Every unwritten page with a slot, by reference, in one batch.
        var slots = [UInt64](), hashes = [UInt64]()
        var runs = [(address: UInt64, count: Int, first: Int)]()
        var writtenRuns = [(UInt64, UInt64)]()
        for a in known {
            var next = written.firstIndex { $0.0 + $0.1 * page > a.start } ?? written.count
            // k counts the known area's pages; the version's area holds page k at a.first + k.
            var k = 0
            let n = Int((a.end - a.start) / page)
            let isRef = { (k: Int) in a.kept.slots[a.first + k] != IncrementalBase.none }
            while k < n {
                let addr = a.start + UInt64(k) * page
                if next < written.count, written[next].0 <= addr {
                    // Written since: copied below, whole run at once (clipped to the area).
                    let end = min(a.end, written[next].0 + written[next].1 * page)
                    writtenRuns.append((addr, (end - addr) / page))
                    k = Int((end - a.start) / page)
                    next += 1
                    continue
                }
                let stop = next < written.count ? min(a.end, written[next].0) : a.end
                let last = Int((stop - a.start) / page)
                while k < last {
                    if !isRef(k) { k += 1; continue }
                    let from = k
                    while k < last && isRef(k) { k += 1 }
                    runs.append((a.start + UInt64(from) * page, k - from, slots.count))
                    slots += a.kept.slots[(a.first + from)..<(a.first + k)]
                    hashes += a.kept.hashes[(a.first + from)..<(a.first + k)]
                }
            }
        }
        let offset = pooled.size
        try slots.withUnsafeBufferPointer { s in try hashes.withUnsafeBufferPointer { h in try pooled.appendPooled(slots: s, hashes: h) } }
        for r in runs { p.index.set(r.address, count: r.count, offset: offset + UInt64(r.first) * page) }
        p.referenced = UInt64(slots.count)
        var bytes = try copy(writtenRuns, of: p)
        // New or changed areas: tracked from now, then copied as a first round would.
        let added = Set(p.tracker.track(fresh.map { ($0.start, $0.end) }).map(\.0))
        let pm = open("/proc/\(p.pid)/pagemap", O_RDONLY | O_CLOEXEC)
        if pm >= 0 {
            defer { close(pm) }
            var present = [(UInt64, UInt64)]()
            for m in fresh where added.contains(m.start) {
                present += (try? ProcessDumper(pid: p.pid).presentRuns(pagemap: pm, vma: m, fileBacked: ProcessDumper.classify(m) == .file)) ?? []
            }
            bytes += try copy(present, of: p)
        }
        return bytes
    }

    /// Later rounds: the pages written since the last round, protected again.
    private func copyWritten(_ p: PrecopiedPages) throws -> UInt64 {
        guard !p.exited else { return 0 }
        let scan: DirtyTracker.Scan
        do { scan = try p.tracker.scan(rearm: true, within: p.areas.map { ($0.start, $0.end) }) } catch {
            // PAGEMAP_SCAN fails with ESRCH once the process has released its memory on the
            // way out (a child of a shell script, of a program that spawns workers): it is
            // dropped from the rounds, and its pages file ends here (a migration's target
            // waits for every file's end before its commit). The final dump finds its zombie.
            // (ESRCH also follows an execve, with a new memory: that one still fails the
            // rounds, and the checkpoint falls back to a frozen dump.)
            guard Precopy.isGone(p.pid) else { throw error }
            p.exited = true
            p.tracker.stop()
            try p.pages.finish(sync: false)
            return 0
        }
        for (start, end) in scan.lost {
            // Unmapped or replaced: forget its copies, the final dump reads the area whole
            // (finalRuns refuses any area that overlaps a lost range: its pages that were
            // not written since would otherwise be taken from copies just forgotten).
            p.index.clear(start, end)
            p.lost.append((start, end))
        }
        return try copy(scan.written, of: p)
    }

    /// Appends the runs' pages to the process's pages file and indexes them. A run the
    /// process unmapped meanwhile cannot be read (EIO): it is skipped, and the final dump
    /// finds what is there then. Runs are packed into each buffer one after the other: the
    /// written pages of an incremental round are hundreds of one-page runs, and a buffer
    /// each (one pool write and one hash pass per buffer) cost about 10 us per run.
    private func copy(_ runs: [(UInt64, UInt64)], of p: PrecopiedPages) throws -> UInt64 {
        guard !runs.isEmpty else { return 0 }
        let mem = open("/proc/\(p.pid)/mem", O_RDONLY | O_CLOEXEC)
        guard mem >= 0 else { return 0 }
        defer { close(mem) }
        let page = Int(SnapshotFormat.pageSize)
        let chunk = PipelinedAppender.bufferSize
        let out = PipelinedAppender(p.pages)
        var buf = try out.acquire()
        var used = 0
        var placed = [(address: UInt64, count: Int, at: Int)]()
        var total = UInt64(0)
        func submit() {
            for r in placed { p.index.set(r.address, count: r.count, offset: out.size + UInt64(r.at)) }
            out.submit(buf, count: used)
            placed = []
            used = 0
        }
        for (addr, count) in runs {
            var done = UInt64(0)
            let bytes = count * SnapshotFormat.pageSize
            while done < bytes {
                if used == chunk {
                    submit()
                    // Between two buffers, while the application runs: a place to stop.
                    if Interrupts.pending { try out.drain(); try CheckpointEngine.stopIfInterrupted() }
                    buf = try out.acquire()
                }
                let n = Int(min(UInt64(chunk - used), bytes - done))
                let got = pread(mem, buf.baseAddress! + used, n, off_t(Int64(bitPattern: addr + done)))
                let whole = got > 0 ? got - got % page : 0
                guard whole > 0 else { break }
                placed.append((addr + done, whole / page, used))
                used += whole
                done += UInt64(whole)
                total += UInt64(whole)
                if whole < n { break }
            }
        }
        if used > 0 { submit() } else { out.giveBack() }
        try out.drain()
        return total
    }
}

extension ProcessDumper {
    /// The page runs of area `m` in the final, frozen round of a pre-copy checkpoint, or nil
    /// when the area is not tracked as a whole (new, or replaced since: the caller saves it
    /// from /proc/PID/pagemap as without pre-copy). A page written since its last copy (or
    /// dropped, or never copied but written) is copied now; every other copied page is
    /// taken from its copy. One written-only PAGEMAP_SCAN walk: classifying every page
    /// (present, zero page...) with PAGEMAP_SCAN or /proc/PID/pagemap took 20-40 ms for
    /// 1 GiB, frozen.
    func finalRuns(_ pre: PrecopiedPages, vma m: MapsEntry, copier: PageCopier) throws -> [PageRun]? {
        // Guard regions inside (madvise MADV_GUARD_INSTALL, before or during the rounds):
        // the area is saved from /proc/PID/pagemap, which records them (pageRuns).
        guard !pre.lost.contains(where: { $0.0 < m.end && m.start < $0.1 }), !pre.tracker.hasGuards(in: m.start, m.end),
              let slot = pre.index.area(m.start), m.end <= pre.index.ends[slot],
              let written = try pre.tracker.written(in: m.start, m.end) else { return nil }
        let page = SnapshotFormat.pageSize
        let areaStart = pre.index.starts[slot]
        var reused = [PageRun]()
        var next = 0
        pre.index.offsets[slot].withUnsafeBufferPointer { copies in
            var k = Int((m.start - areaStart) / page)
            let last = Int((m.end - areaStart) / page)
            while k < last {
                let addr = areaStart + UInt64(k) * page
                // Skip the written runs (sorted, as the walk returns them).
                while next < written.count, written[next].0 + written[next].1 * page <= addr { next += 1 }
                if next < written.count, written[next].0 <= addr {
                    k = Int((written[next].0 + written[next].1 * page - areaStart) / page)
                    continue
                }
                let off = copies[k]
                if off == PageIndex.none { k += 1; continue }
                // The stretch of pages copied one after the other, up to the next written
                // run, at once: page by page through `reused`, a 1 GiB area took 3-3.6 ms
                // of the frozen time.
                let limit = next < written.count ? min(last, Int((written[next].0 - areaStart) / page)) : last
                let from = k
                k += 1
                while k < limit, copies[k] == off &+ UInt64(k - from) &* page { k += 1 }
                let count = UInt64(k - from)
                if let r = reused.last, r.address + r.count * page == addr, r.fileOffset &+ r.count &* page == off {
                    reused[reused.count - 1].count += count
                } else {
                    reused.append(PageRun(address: addr, count: count, fileOffset: off))
                }
            }
        }
        return reused + (try copier.copy(written))
    }
}
