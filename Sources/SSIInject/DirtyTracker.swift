import CSSILinux
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The pages a running process writes, tracked from outside: the machinery of a pre-copy
/// checkpoint and of a live migration's pre-copy (copy memory while the application runs,
/// then only what it wrote since, round after round).
///
/// How (cssi_dirty.h): a userfaultfd is created inside the process (userfaultfd(2) acts on
/// the mm of its caller, so an injected call), taken with pidfd_getfd(2) and closed there;
/// from here its areas are registered in write-protect mode with UFFD_FEATURE_WP_ASYNC
/// (Linux 6.7): a write to a protected page is resolved by the kernel at once, the writer
/// never blocks, and the page is only marked written. PAGEMAP_SCAN (ioctl_pagemap_scan(2))
/// on /proc/PID/pagemap lists the written pages and protects them again in the same walk,
/// so no write falls between the two. Soft-dirty bits would do the same, but
/// CONFIG_MEM_SOFT_DIRTY is often not built. /proc/PID/pagemap also shows the protection of
/// each page (bit 57, PM_UFFD_WP, Documentation/admin-guide/mm/pagemap.rst): a present page
/// without it was written since it was last protected.
///
/// Closing the userfaultfd (the last reference is ours) unregisters every area and removes
/// the protection (userfaultfd_release): the process is left as it was.
public final class DirtyTracker {
    public let pid: ProcessID
    private var uffd: Int32
    private let pagemap: Int32
    /// The areas registered, [start, end), ascending.
    public private(set) var ranges: [(start: UInt64, end: UInt64)] = []

    /// What a scan found: runs of written pages (address, number of pages), and the areas
    /// that could not be scanned (unmapped or replaced since they were registered: their
    /// pages must be read again whole).
    public struct Scan {
        public var written: [(UInt64, UInt64)] = []
        public var lost: [(start: UInt64, end: UInt64)] = []
        public var writtenBytes: UInt64 { written.reduce(0) { $0 + $1.1 } * 4096 }
    }

    private init(pid: ProcessID, uffd: Int32, pagemap: Int32) {
        self.pid = pid
        self.uffd = uffd
        self.pagemap = pagemap
    }

    deinit {
        stop()
        close(pagemap)
    }

    /// Starts tracking `areas` ([start, end), page aligned) of the running process `pid`:
    /// its main thread is stopped for three injected syscalls, then let go; every page of
    /// the areas is then write-protected, so that the next scan reports the pages written
    /// from now on. Areas the kernel refuses to register are left out of `ranges`.
    /// Throws, naming the process, when the kernel cannot track writes at all.
    public static func start(pid: ProcessID, areas: [(UInt64, UInt64)]) throws -> DirtyTracker {
        let pm = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        if pm < 0 { throw SSIError.sys("open /proc/\(pid)/pagemap", errno: errno) }
        let fd: Int32
        do { fd = try takeUserfaultfd(pid) } catch { close(pm); throw error }
        let tracker = DirtyTracker(pid: pid, uffd: fd, pagemap: pm)
        let api = cssi_uffd_enable_wp_async(fd)
        if api < 0 {
            throw SSIError(.unsupported, "cannot track the pages PID \(pid) writes: userfaultfd asynchronous write-protection (Linux 6.7) is refused: \(String(cString: strerror(-api)))",
                           hint: "checkpoint without --precopy")
        }
        for (start, end) in areas where end > start {
            guard cssi_uffd_register_wp(fd, start, end - start) == 0 else { continue }
            // Protecting an area also covers its pages not populated yet (WP_UNPOPULATED).
            if cssi_uffd_writeprotect(fd, start, end - start, 1) == 0 {
                tracker.ranges.append((start, end))
            } else {
                _ = cssi_uffd_unregister(fd, start, end - start)
            }
        }
        tracker.ranges.sort { $0.start < $1.start }
        return tracker
    }

    /// Whether the userfaultfd is still open and the process still has the address space it
    /// was made for: after an execve(2) the old mm is gone, and PAGEMAP_SCAN on the pagemap
    /// opened before fails with ESRCH whatever the range (fs/proc/task_mmu.c takes the mm
    /// before it walks anything), so a walk of one page at address 0 tells.
    public var isTracking: Bool {
        guard uffd >= 0 else { return false }
        var region = cssi_page_region()
        var walkEnd: UInt64 = 0
        return cssi_pagemap_scan_written(pagemap, 0, 4096, 0, &region, 1, &walkEnd) >= 0
    }

    /// Adds `areas` (mapped since the tracking started, or changed) to the tracking, as
    /// `start` does, without stopping the process: the userfaultfd's ioctls act on the mm it
    /// was created for, whoever calls them (userfaultfd(2)). An older range overlapping a new
    /// area keeps only its parts outside it. Returns the areas added.
    public func track(_ areas: [(UInt64, UInt64)]) -> [(UInt64, UInt64)] {
        guard uffd >= 0 else { return [] }
        var added = [(UInt64, UInt64)]()
        for (start, end) in areas where end > start {
            guard cssi_uffd_register_wp(uffd, start, end - start) == 0 else { continue }
            if cssi_uffd_writeprotect(uffd, start, end - start, 1) == 0 {
                // The parts of an older range outside the new area stay tracked (an area
                // split by a munmap(2) in its middle keeps its registration on both sides).
                var kept = [(start: UInt64, end: UInt64)]()
                for r in ranges {
                    guard r.start < end && start < r.end else { kept.append(r); continue }
                    if r.start < start { kept.append((r.start, start)) }
                    if end < r.end { kept.append((end, r.end)) }
                }
                ranges = kept
                ranges.append((start, end))
                added.append((start, end))
            } else {
                _ = cssi_uffd_unregister(uffd, start, end - start)
            }
        }
        ranges.sort { $0.start < $1.start }
        return added
    }

    /// A userfaultfd of `pid`'s mm, in ssi: created by an injected userfaultfd(2) in one of
    /// its threads (stopped with PTRACE_SEIZE + PTRACE_INTERRUPT meanwhile, every signal
    /// blocked), copied with pidfd_getfd(2), closed in the process. The main thread unless it
    /// has exited (a zombie leader never enters a ptrace stop): any live thread shares the mm.
    private static func takeUserfaultfd(_ pid: ProcessID) throws -> Int32 {
        let live = ((try? threadIDs(of: pid.rawValue)) ?? [pid.rawValue]).first { (try? ProcStat.read(pid: $0))?.state != "Z" }
        guard let tid = live, let t = try Tracee.seize(ProcessID(tid), of: pid) else {
            throw SSIError(.notFound, "PID \(pid) exited before its pages could be tracked")
        }
        defer { try? t.detach() }
        // A signal the thread dequeued during the injected calls goes back to it before it
        // is let go (after its registers and mask: this runs after the guard's restore).
        defer { HeldSignals.requeue(tid: tid, pid: pid.rawValue) }
        while true {
            let stop = try t.wait()
            if stop.ended { throw SSIError(.state, "PID \(pid) exited before its pages could be tracked") }
            if stop == .interruptStop { break }
            // A signal arrived before our interrupt: deliver it; the interrupt stop follows.
            if case .signal(let sig) = stop { try t.cont(signal: sig) } else { try t.cont() }
        }
        let saved = try t.registers()
        // The interrupt ended an epoll_wait, semop, sigtimedwait or a socket call with a
        // timeout with -EINTR (signal(7): calls a stop interrupts); let go as it is, the
        // thread would return EINTR to a program that got no signal (a child in semop exits
        // on it). Given the restart code instead, after the guard has put the registers
        // back (defers run last first), the kernel re-issues the call on the way out.
        defer { if let fixed = SyscallRestart.restartedAfterStop(saved) { try? t.setRegisters(fixed) } }
        let guardMask = try SignalMaskGuard(tracee: t, saved: saved)
        defer { guardMask.restore() }
        let inj = try Injector(pid: ProcessID(tid), base: saved)
        let flags = UInt64(O_CLOEXEC | O_NONBLOCK) | UInt64(CSSI_UFFD_USER_MODE_ONLY)
        let remote = try inj.call("userfaultfd", .userfaultfd, flags)
        defer { _ = try? inj.raw(.close, remote) }
        // pidfd_open(2) wants the thread-group leader.
        return try FDTransfer.copy(fd: Int32(remote), from: pid)
    }

    /// The pages written in the tracked areas since they were last protected; with `rearm`,
    /// protects them again in the same walk (the next scan then reports only later writes).
    /// With `within`, only the parts of the tracked areas inside those ranges are walked
    /// (the areas a process has now: a part of a tracked area unmapped and mapped again is
    /// then reported lost alone, not with the rest of the area after it).
    public func scan(rearm: Bool, within: [(UInt64, UInt64)]? = nil) throws -> Scan {
        var out = Scan()
        let capacity = 4096
        let vec = UnsafeMutablePointer<cssi_page_region>.allocate(capacity: capacity)
        defer { vec.deallocate() }
        var walk = ranges
        if let within {
            walk = []
            for (s, e) in within { for r in ranges where r.start < e && s < r.end { walk.append((max(s, r.start), min(e, r.end))) } }
        }
        for (start, end) in walk {
            var from = start
            while from < end {
                var walkEnd: UInt64 = 0
                let n = cssi_pagemap_scan_written(pagemap, from, end, rearm ? 1 : 0, vec, capacity, &walkEnd)
                if n < 0 {
                    // EPERM: part of the area is no longer under asynchronous write-protection
                    // (PM_SCAN_CHECK_WPASYNC): it was unmapped or replaced by a new mapping.
                    if n == -Int(EPERM) || n == -Int(ENOENT) || n == -Int(EINVAL) { out.lost.append((from, end)); break }
                    throw SSIError.sys("PAGEMAP_SCAN of PID \(pid) at 0x\(String(from, radix: 16))", errno: Int32(-n))
                }
                for i in 0..<n {
                    let r = vec[i]
                    out.written.append((r.start, (r.end - r.start) / 4096))
                }
                from = DirtyTracker.resume(from: from, walkEnd: walkEnd, last: n > 0 ? vec[n - 1].end : 0)
                if from == 0 { break }
            }
        }
        out.written = DirtyTracker.normalized(out.written)
        return out
    }

    /// Where the next PAGEMAP_SCAN call starts after one that filled its vector, or 0 when
    /// the walk is done. When the vector fills, walk_end can lie before the end of the last
    /// region returned (the walk stopped inside it): starting again from walk_end would
    /// report part of that region twice (seen: the same page taken both from its copy and
    /// copied again), so the next call starts after the last region.
    static func resume(from: UInt64, walkEnd: UInt64, last: UInt64) -> UInt64 {
        let next = max(walkEnd, last)
        return next > from ? next : 0
    }

    /// Runs sorted by address, overlapping or touching ones merged.
    public static func normalized(_ runs: [(UInt64, UInt64)]) -> [(UInt64, UInt64)] {
        var out = [(UInt64, UInt64)]()
        for (a, n) in runs.sorted(by: { $0.0 < $1.0 }) {
            if let last = out.last, a <= last.0 + last.1 * 4096 {
                let end = max(last.0 + last.1 * 4096, a + n * 4096)
                out[out.count - 1].1 = (end - last.0) / 4096
            } else {
                out.append((a, n))
            }
        }
        return out
    }

    /// The runs of pages written in [start, end) since they were last protected (without
    /// protecting them again), or nil if part of it is not tracked (never registered, or
    /// unmapped or replaced since). A page dropped since (MADV_DONTNEED: its page table
    /// entry is cleared) counts as written, as does the zero page mapped by a read after
    /// that: PAGEMAP_SCAN's written-only walk takes any entry without the protection bit
    /// for written (checked by DirtyTrackerTests), so a stale copy is never taken for the page.
    public func written(in start: UInt64, _ end: UInt64) throws -> [(UInt64, UInt64)]? {
        let capacity = 4096
        let vec = UnsafeMutablePointer<cssi_page_region>.allocate(capacity: capacity)
        defer { vec.deallocate() }
        var out = [(UInt64, UInt64)]()
        var from = start
        while from < end {
            var walkEnd: UInt64 = 0
            let n = cssi_pagemap_scan_written(pagemap, from, end, 0, vec, capacity, &walkEnd)
            if n == -Int(EPERM) { return nil }
            if n < 0 { throw SSIError.sys("PAGEMAP_SCAN of PID \(pid) at 0x\(String(from, radix: 16))", errno: Int32(-n)) }
            for i in 0..<n { out.append((vec[i].start, (vec[i].end - vec[i].start) / 4096)) }
            from = DirtyTracker.resume(from: from, walkEnd: walkEnd, last: n > 0 ? vec[n - 1].end : 0)
            if from == 0 { break }
        }
        return DirtyTracker.normalized(out)
    }

    /// Whether [start, end) holds a guard region's marker (madvise(2) MADV_GUARD_INSTALL). A
    /// write scan reports such a page as written, yet it has no page to read (EIO through
    /// /proc/PID/mem), and a pre-copied area's saved pages know nothing of it: such an
    /// area is saved as without pre-copy, guards included. False where the kernel cannot
    /// tell (older than 6.15, which has no scan category for them).
    public func hasGuards(in start: UInt64, _ end: UInt64) -> Bool {
        cssi_pagemap_scan_guard(pagemap, start, end) > 0
    }

    /// Stops tracking: closing the userfaultfd unregisters every area and lifts the
    /// protection. Safe to call twice.
    public func stop() {
        guard uffd >= 0 else { return }
        close(uffd)
        uffd = -1
    }

    /// Bit 57 of a /proc/PID/pagemap entry: the page is still write-protected, i.e. not
    /// written since it was last protected.
    public static let pagemapWriteProtected: UInt64 = 1 << 57
}
