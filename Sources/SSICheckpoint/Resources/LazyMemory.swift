import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The pages of a restored process filled after it runs again (RestartOptions.lazyMemory:
/// the target of a migration, where every page is on this node already and the time to copy
/// 1 GiB into place, 0.4 to 1.6 s here, was most of the application's frozen time).
///
/// How (userfaultfd(2), ioctl_userfaultfd(2)): each private anonymous area of a process that
/// has no children in the image is mapped and registered in missing mode on a userfaultfd of
/// the process (made by an injected userfaultfd(2), taken with pidfd_getfd(2)), and its page
/// runs are noted instead of copied. One thread of ours then copies them in, a chunk at a
/// time (UFFDIO_COPY from the image file mapped here), from that moment on: while the rest of
/// the restore goes on (whose injected calls and clone3 may touch those pages: the kernel
/// holds the faulting access until we copy the page) and after the processes run again.
/// Between chunks it reads the userfaultfd's messages:
/// - a page fault: the run holding that page is copied from there first (64 pages), or a
///   zero page if the image holds none there (a page the process never touched);
/// - fork (UFFD_FEATURE_EVENT_FORK): the child's areas stay registered on a new userfaultfd
///   we receive, and what was still to come for the parent is to come for the child too (the
///   pages copied already are shared copy-on-write, UFFDIO_COPY finds them: EEXIST);
/// - mremap (EVENT_REMAP): the runs of the moved range are moved with it;
/// - madvise DONTNEED/REMOVE, munmap (EVENT_REMOVE, EVENT_UNMAP): the runs of the range are
///   dropped, so that what the process threw away is not filled again with old bytes.
/// While such a message waits to be read the kernel refuses UFFDIO_COPY (EAGAIN,
/// mmap_changing), so no copy can land on a range the process changed meanwhile.
/// Once a process's runs are all copied, its userfaultfd is closed: the kernel unregisters
/// every area (userfaultfd_release) and the process is as any other.
///
/// What a parent forks during the restore (its children) is made from memory filled before,
/// as always: only processes with no children in the image are filled this way, and only
/// areas of 16 MiB of pages or more, not locked, not wiped on fork (Memory.swift, fillPages).
/// Until its area is filled, /proc/PID/smaps shows "um" in its VmFlags.
/// A checkpoint of any application on this node waits first until every fill is done
/// (`waitForAll`): the dirty-page tracker of pre-copy cannot register an area already
/// registered here (EBUSY), and a dump must read the process's real pages.
/// If this daemon dies before a fill is done, its userfaultfds close and the pages still to
/// come read as zeros: the fill of 1 GiB takes about a second after the resume.
public final class LazyMemory: @unchecked Sendable {
    struct Run { var address: UInt64; var length: UInt64; var offset: UInt64 }

    /// An image file mapped read-only here: the bytes copied in.
    final class Source {
        let base: UnsafeRawPointer
        let size: UInt64
        init?(path: String, size: UInt64) {
            guard size > 0 else { return nil }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            guard let p = mmap(nil, Int(size), PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
            base = UnsafeRawPointer(p)
            self.size = size
        }
        deinit { munmap(UnsafeMutableRawPointer(mutating: base), Int(size)) }
    }

    /// One address space (mm) still being filled: its userfaultfd (ours), the runs still to
    /// copy, sorted by address and disjoint.
    final class Space {
        let fd: Int32
        let pid: Int32
        let source: Source
        /// The runs still to copy are `runs[head...]`: those copied leave the front in bulk,
        /// not one by one (a pre-copied GiB has tens of thousands of runs, and taking each
        /// from the front of the array moved all the others every time).
        private var runs: [Run]
        private var head = 0
        var pending: [Run] {
            get { head == 0 ? runs : Array(runs[head...]) }
            set { runs = newValue; head = 0 }
        }
        var hasPending: Bool { head < runs.count }
        /// Noting the runs, before the fill starts (in place: `pending.append` would copy
        /// the whole array each time).
        func note(_ r: Run) { runs.append(r) }
        func sortRuns() { runs.sort { $0.address < $1.address } }
        /// The first run still to copy; a caller that copied part of it puts back the rest.
        var first: Run {
            get { runs[head] }
            set {
                if newValue.length > 0 { runs[head] = newValue; return }
                head += 1
                if head >= 4096 && head * 2 >= runs.count { runs.removeFirst(head); head = 0 }
            }
        }
        /// The pending run holding address `a`, if any.
        func run(containing a: UInt64) -> Run? {
            LazyMemory.index(runs, from: head, containing: a).map { runs[$0] }
        }
        /// Faults whose copy the kernel refused for a pending mm change: tried again once the
        /// messages are read.
        var retry: [UInt64] = []
        var dead = false
        private var closed = false
        init(fd: Int32, pid: Int32, source: Source, pending: [Run]) { (self.fd, self.pid, self.source, self.runs) = (fd, pid, source, pending) }
        /// Closing the last reference unregisters every area of it (userfaultfd_release).
        func close() { if !closed { closed = true; _ = Glibc.close(fd) } }
        /// A restore that failed before the process was handed over closes it here.
        deinit { close() }
    }

    /// Areas with fewer bytes of pages are copied before the process runs.
    static let smallestArea: UInt64 = 16 << 20
    static let chunk: UInt64 = 1 << 20
    static let faultAhead: UInt64 = 64 * SnapshotFormat.pageSize

    private let lock = NSCondition()
    private var incoming: [Space] = []
    private var restoreEnded = false
    private var aborted = false
    private var running = false
    private var bytes: UInt64 = 0
    private var faults = 0
    private var started = DispatchTime.now()
    /// The filling thread's longest turn, for the profile (waits for a message included:
    /// a fault waits less than that).
    private var longestTurn: UInt64 = 0
    private var longestCopy: UInt64 = 0, longestDrop: UInt64 = 0, longestFault: UInt64 = 0

    init() {}

    // MARK: the restore's side

    /// A userfaultfd of `inj`'s process that reports forks, remaps and removals, ours; nil
    /// when the kernel refuses one (the caller fills the pages before the process runs).
    static func userfaultfd(_ inj: Injector) throws -> Int32? {
        let r = try inj.raw(.userfaultfd, UInt64(O_CLOEXEC | O_NONBLOCK))
        guard r >= 0 else { return nil }
        defer { _ = try? inj.raw(.close, UInt64(r)) }
        let mine = try FDTransfer.copy(fd: Int32(r), from: inj.pid)
        guard Userfaultfd.enableEvents(mine) else { close(mine); return nil }
        return mine
    }

    /// Registers area [start, end) of `space` and notes its runs; false if the kernel
    /// refuses the area (the caller copies it now).
    func add(_ space: Space, start: UInt64, end: UInt64, runs: [PageRun]) throws -> Bool {
        guard Userfaultfd.registerMissing(space.fd, start, length: end - start) else { return false }
        for r in runs {
            let len = r.count * SnapshotFormat.pageSize
            guard r.fileOffset + len <= space.source.size else {
                throw SSIError(.corrupt, "the pages file of PID \(space.pid) is shorter than its page index")
            }
            space.note(Run(address: r.address, length: len, offset: r.fileOffset))
        }
        return true
    }

    /// The process's areas are all noted: from now on its faults are served and its runs
    /// copied, by the filling thread (started with the first one).
    func begin(_ space: Space) {
        space.sortRuns()
        lock.lock()
        incoming.append(space)
        let start = !running
        if start {
            running = true
            started = DispatchTime.now()
            LazyMemory.active.add(1)
        }
        lock.unlock()
        if start {
            let t = Thread { [self] in serve() }
            t.name = "ssi-lazy-memory"
            t.start()
        }
    }

    /// No more processes will be added: the thread ends once every run is copied. With
    /// `failed`, the restore's processes are being killed: it stops at once.
    func end(failed: Bool) {
        lock.lock()
        restoreEnded = true
        if failed { aborted = true }
        lock.unlock()
    }

    // MARK: every fill of this process

    /// Fills still running in this process (a daemon), and their end.
    private final class Active: @unchecked Sendable {
        let cond = NSCondition()
        var count = 0
        func add(_ n: Int) { cond.lock(); count += n; if count == 0 { cond.broadcast() }; cond.unlock() }
    }
    private static let active = Active()

    /// Waits until no restored process of ours has pages still to come (at most `seconds`).
    public static func waitForAll(seconds: Double = 60) {
        let a = active
        let deadline = Date().addingTimeInterval(seconds)
        a.cond.lock()
        while a.count > 0 && a.cond.wait(until: deadline) {}
        a.cond.unlock()
    }

    // MARK: the filling thread

    private func serve() {
        var spaces: [Space] = []
        var turn = DispatchTime.now().uptimeNanoseconds
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            longestTurn = max(longestTurn, now - turn)
            turn = now
            lock.lock()
            spaces += incoming
            incoming.removeAll()
            let stop = aborted, ended = restoreEnded
            lock.unlock()
            if stop { break }
            for s in spaces where !s.dead { readMessages(s, into: &spaces) }
            for s in spaces where !s.dead && !s.retry.isEmpty {
                let again = s.retry
                s.retry.removeAll()
                for a in again { serveFault(s, a) }
            }
            // Done: its userfaultfd closed, which unregisters its areas.
            for s in spaces where s.dead || (!s.hasPending && s.retry.isEmpty) { s.close() }
            spaces.removeAll { $0.dead || (!$0.hasPending && $0.retry.isEmpty) }
            if spaces.isEmpty {
                if ended { break }
                usleep(1000)
                continue
            }
            // Up to a chunk of the first space's first runs, then the messages again.
            if let s = spaces.first(where: { $0.hasPending }) {
                copyChunk(s)
            } else {
                waitForMessages(spaces, nanoseconds: 10_000_000)
            }
        }
        for s in spaces { s.close() }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e6
        if PhaseClock.enabled {
            FileHandle.standardError.write(Data(String(format: "ssi: profile: lazy memory: %llu MiB in %.1f ms, %d faults served, longest turn %.1f ms (longest copy %.1f, page drop %.1f, fault's copy %.1f)\n", bytes >> 20, ms, faults, Double(longestTurn) / 1e6, Double(longestCopy) / 1e6, Double(longestDrop) / 1e6, Double(longestFault) / 1e6).utf8))
        }
        LazyMemory.active.add(-1)
    }

    /// Until a message comes from any of `spaces`, for `nanoseconds` at most (rounded up to
    /// poll(2)'s milliseconds).
    private func waitForMessages(_ spaces: [Space], nanoseconds: UInt64) {
        var fds = spaces.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        _ = poll(&fds, nfds_t(fds.count), Int32(min((nanoseconds + 999_999) / 1_000_000, 1000)))
    }

    /// Up to `chunk` bytes of `s`'s first runs (a pre-copied area's runs are often a few
    /// pages each: one copy per run would make a turn of each).
    private func copyChunk(_ s: Space) {
        var copied: UInt64 = 0
        while copied < Self.chunk && s.hasPending && !s.dead {
            var run = s.first
            let c0 = DispatchTime.now().uptimeNanoseconds
            let n = Self.copyWithin(s, to: run.address, offset: run.offset, count: min(run.length, Self.chunk - copied))
            let c1 = DispatchTime.now().uptimeNanoseconds
            longestCopy = max(longestCopy, c1 - c0)
            var advance: UInt64 = 0
            switch n {
            case let n where n > 0:
                advance = UInt64(n); bytes += UInt64(n); copied += UInt64(n)
                // The source pages the copy mapped into the daemon go again now (MADV_DONTNEED
                // only unmaps a shared file mapping), not all at the munmap: 35 ms per GiB with
                // the daemon's mm locked for writing, which every other thread of it waits on.
                madvise(UnsafeMutableRawPointer(mutating: s.source.base + Int(run.offset)), n, MADV_DONTNEED)
                longestDrop = max(longestDrop, DispatchTime.now().uptimeNanoseconds - c1)
            case -Int(EEXIST):                                     // served by a fault already
                advance = SnapshotFormat.pageSize; copied += advance
            case -Int(EAGAIN), -Int(EINTR): return                 // an mm change to read first
            case -Int(ESRCH): s.dead = true; return                // the process is gone (exit, exec)
            // This very page is in no registered area any more (its runs were cut by the
            // event that said so: this is one we missed); the rest of the run is not lost.
            case -Int(ENOENT), -Int(EINVAL): advance = SnapshotFormat.pageSize
            default:
                warn("PID \(s.pid): copying its pages at 0x\(String(run.address, radix: 16)) after the restart failed: \(String(cString: strerror(Int32(-n)))); those pages read as zeros")
                advance = run.length
            }
            run.address += advance; run.offset += advance; run.length -= min(advance, run.length)
            s.first = run
        }
    }

    private func readMessages(_ s: Space, into spaces: inout [Space]) {
        while true {
            switch Userfaultfd.next(s.fd) {
            case .empty: return
            case .failed(let e):
                if e != EINTR { s.dead = true }
                return
            case .event(.fault(let address)): faults += 1; serveFault(s, address)
            case .event(.fork(let fd)):
                // What was still to come for the parent is to come for the child, but in the
                // areas it did not inherit as they are: a wiped one reads zeros (its faults
                // get zero pages), a DONTFORK one is not there.
                var runs = s.pending
                for (start, end) in Self.notInherited(pid: s.pid) { runs = Self.cut(runs, start, end) }
                spaces.append(Space(fd: fd, pid: 0, source: s.source, pending: runs))
            case .event(.remap(let from, let to, let length)): remap(s, from: from, to: to, length: length)
            case .event(.removed(let start, let end)): s.pending = Self.cut(s.pending, start, end)
            case .event(.other): break
            }
        }
    }

    /// The page at `address`: its run from there (up to 64 pages), or a zero page.
    private func serveFault(_ s: Space, _ address: UInt64) {
        let page = address & ~(SnapshotFormat.pageSize - 1)
        var n: Int
        if let r = s.run(containing: page) {
            let off = page - r.address
            let f0 = DispatchTime.now().uptimeNanoseconds
            n = Self.copyWithin(s, to: page, offset: r.offset + off, count: min(r.length - off, Self.faultAhead))
            longestFault = max(longestFault, DispatchTime.now().uptimeNanoseconds - f0)
            if n > 0 { bytes += UInt64(n) }
        } else {
            n = Userfaultfd.zeroPage(s.fd, at: page, count: SnapshotFormat.pageSize)
        }
        switch n {
        case -Int(EAGAIN), -Int(EINTR): s.retry.append(page)
        case -Int(ESRCH): s.dead = true
        default: break   // done, or there already (EEXIST: the copy woke the faulting thread)
        }
    }

    /// UFFDIO_COPY of `count` bytes from the image at `offset` to `address`, cut short to
    /// the area it starts in. The kernel copies only into one registered VMA: a range that
    /// crosses into the next (an area the process split since with mprotect, or two areas
    /// merged when the image was made and split again) fails whole with ENOENT
    /// (mfill_atomic, validate_dst_vma), which once dropped the rest of a run, megabytes
    /// of the process's memory left to read as zeros. Halved until it fits (a few tries at
    /// an area's end); ENOENT for a single page: that page is in no registered area.
    static func copyWithin(_ s: Space, to address: UInt64, offset: UInt64, count: UInt64) -> Int {
        var count = count
        while true {
            let n = Userfaultfd.copy(s.fd, to: address, from: s.source.base + Int(offset), count: count)
            let page = SnapshotFormat.pageSize
            guard n == -Int(ENOENT) || n == -Int(EINVAL), count > page else { return n }
            count = max(page, (count / 2) & ~(page - 1))
        }
    }

    /// The areas of process `pid` that a child does not get as they are at fork: MADV_DONTFORK
    /// (no such area in the child) and MADV_WIPEONFORK (empty in the child), from the "dc"
    /// and "wf" of their VmFlags (proc(5)). Read just after the fork event (the parent goes
    /// on once it is read): a flag changed in between by another thread of the parent is
    /// missed. A child of a child (its space has no pid here) keeps every run.
    static func notInherited(pid: Int32) -> [(UInt64, UInt64)] {
        guard pid > 0, let text = try? ProcFS.read("/proc/\(pid)/smaps") else { return [] }
        var out: [(UInt64, UInt64)] = []
        var current: (UInt64, UInt64)? = nil
        for line in text.split(separator: "\n") {
            if line.hasPrefix("VmFlags:") {
                let flags = line.split(separator: " ")
                if let c = current, flags.contains("dc") || flags.contains("wf") { out.append(c) }
                continue
            }
            // An area's first line: "start-end perms offset dev inode [name]".
            guard let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
                  let start = UInt64(line[..<dash], radix: 16), let end = UInt64(line[line.index(after: dash)..<space], radix: 16) else { continue }
            current = (start, end)
        }
        return out
    }

    private func remap(_ s: Space, from: UInt64, to: UInt64, length: UInt64) {
        var moved: [Run] = []
        var kept = Self.cut(s.pending, from, from + length, removed: &moved)
        for var r in moved { r.address = r.address - from + to; kept.append(r) }
        s.pending = kept.sorted { $0.address < $1.address }
    }

    static func cut(_ runs: [Run], _ start: UInt64, _ end: UInt64) -> [Run] {
        var removed: [Run] = []
        return cut(runs, start, end, removed: &removed)
    }

    /// `runs` without [start, end); the parts taken out go to `removed`.
    static func cut(_ runs: [Run], _ start: UInt64, _ end: UInt64, removed: inout [Run]) -> [Run] {
        var out: [Run] = []
        for r in runs {
            let rs = r.address, re = r.address + r.length
            if re <= start || rs >= end { out.append(r); continue }
            if rs < start { out.append(Run(address: rs, length: start - rs, offset: r.offset)) }
            let ms = max(rs, start), me = min(re, end)
            removed.append(Run(address: ms, length: me - ms, offset: r.offset + (ms - rs)))
            if re > end { out.append(Run(address: end, length: re - end, offset: r.offset + (end - rs))) }
        }
        return out
    }

    /// The index of the run of `runs[from...]` holding `a` (sorted, disjoint runs).
    static func index(_ runs: [Run], from: Int = 0, containing a: UInt64) -> Int? {
        var lo = from, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if runs[mid].address + runs[mid].length <= a { lo = mid + 1 } else { hi = mid }
        }
        return lo < runs.count && runs[lo].address <= a ? lo : nil
    }
}
