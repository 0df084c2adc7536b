import Foundation
import SSIImage
import SSIInject
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Memory: the areas of /proc/PID/maps with the pages that must be saved (pagemap decides),
// copied into the image batch by batch; at restart every area is mapped again at its
// address and its pages put back.

// MARK: - dump

extension ProcessDumper {
    static func classify(_ m: MapsEntry) -> VMA.Kind? {
        switch m.name {
        case "[vdso]": return .vdso
        case "[vvar]": return .vvar
        case "[vvar_vclock]": return .vvarVclock
        case "[vsyscall]": return nil
        default:
            if m.name.hasPrefix("/SYSV") { return .sysvShm }
            if m.inode == 0 || m.name == "/dev/zero (deleted)" || m.name.hasPrefix("[anon_shmem") { return .anonymous }
            return .file
        }
    }

    /// Reads /proc/PID/smaps only for the VmFlags lines (the one place they are shown).
    func vmFlags() throws -> [UInt64: [String]] {
        try ProcFS.readBytes("/proc/\(pid)/smaps").withUnsafeBufferPointer { Self.vmFlags(smaps: $0) }
    }

    /// mw: VM_MAYWRITE, which a shared file mapping has only when its file was opened for
    /// writing (mmap(2), EACCES): the restart opens the file the same way. nr: MAP_NORESERVE
    /// (no commit charge: AddressSanitizer's shadow, allocators' reservations larger than
    /// memory). dp: MAP_DROPPABLE (6.11; glibc's getrandom state). sl: sealed (mseal(2), 6.10).
    static let keptFlags: Set<String> = ["gd", "dc", "dd", "hg", "nh", "wf", "rr", "sr", "lo", "lf", "mg", "mw", "nr", "dp", "sl"]

    /// The VmFlags line of each area of /proc/PID/smaps (proc(5)), by the area's start, with
    /// only the flags a restart sets again. Read on the bytes: smaps has some twenty lines per
    /// area, and splitting its text into Strings was the largest part of a small process's
    /// memory dump (perf). An area begins with a line "start-end ..." (hex, then '-'); the
    /// other lines begin "Key:".
    ///
    /// An area's memory protection key (pkeys(7), "ProtectionKey:" just before VmFlags, on
    /// CPUs that have them) joins its flags as "pkN" when it is not 0: it travels with them
    /// (pre-copy's cached flags, a parent's inherited areas) and comes back with
    /// restoreProtectionKeys.
    static func vmFlags(smaps b: UnsafeBufferPointer<UInt8>) -> [UInt64: [String]] {
        var out = [UInt64: [String]]()
        var current: UInt64 = 0
        var key: UInt64 = 0
        let prefix = Array("VmFlags:".utf8)
        let keyPrefix = Array("ProtectionKey:".utf8)
        ProcText.lines(b) { i, end in
            if end - i >= keyPrefix.count && (0..<keyPrefix.count).allSatisfy({ b[i + $0] == keyPrefix[$0] }) {
                var p = i + keyPrefix.count
                ProcText.skipSpaces(b, &p, end)
                key = 0
                while p < end, b[p] >= 48, b[p] <= 57 { key = key * 10 + UInt64(b[p] - 48); p += 1 }
                return
            }
            if end - i >= prefix.count && (0..<prefix.count).allSatisfy({ b[i + $0] == prefix[$0] }) {
                var flags: [String] = key != 0 ? ["pk\(key)"] : []
                key = 0
                var p = i + prefix.count
                while p < end {
                    ProcText.skipSpaces(b, &p, end)
                    let start = p
                    while p < end && b[p] != 32 { p += 1 }
                    if p - start == 2 {
                        let f = String(decoding: UnsafeBufferPointer(rebasing: b[start..<p]), as: UTF8.self)
                        if Self.keptFlags.contains(f) { flags.append(f) }
                    }
                }
                out[current] = flags
                return
            }
            var p = i
            if let start = ProcText.hex(b, &p, end), p < end, b[p] == UInt8(ascii: "-") { current = start }
        }
        return out
    }

    /// Writes the present pages of every VMA to `pages` and returns the VMA list.
    func dumpMemory(to pages: any ImageFileWriter) throws -> [VMA] {
        let mapsText = try ProcFS.read("/proc/\(pid)/maps")
        let maps = MapsEntry.parse(mapsText)
        // A pre-copy read the flags while the application ran; the same maps means the same
        // areas (an madvise(2) that changes a whole area's flags in the few ms between is
        // not seen: docs/speed.md).
        let cached = precopied.flatMap { $0.mapsAfterRounds == mapsText ? $0.flagsAfterRounds : nil }
        let flags = try cached ?? vmFlags()
        areas?.seen[pid] = (mapsText, flags)
        let pm = try OwnedFileDescriptor(opening: "/proc/\(pid)/pagemap", O_RDONLY)
        let parentView = ParentView(parent, known: parent.flatMap { areas?.seen[$0] })
        defer { parentView.close() }
        let copier = try PageCopier(pid: pid, pages: pages)
        var vmas = [VMA]()
        for m in maps {
            // The ring of a Linux AIO context (io_setup(2)) is a mapping of the kernel's aio
            // file system, and the requests in flight live in the kernel: neither can be made
            // again from what /proc shows.
            if m.name.hasPrefix("/[aio]") {
                throw SSIError(.unsupported, "PID \(pid) has a Linux AIO context (io_setup(2); its ring is at 0x\(String(m.start, radix: 16))), which the checkpoint engine does not support yet; nothing was written and the application goes on",
                               hint: "where the program can choose, have it do its I/O with threads instead of libaio (qemu: aio=threads; MySQL: innodb_use_native_aio=0)")
            }
            if m.name.hasPrefix("/secretmem") {
                throw SSIError(.unsupported, "PID \(pid) maps a \(ProcessDumper.secretMemory) at 0x\(String(m.start, radix: 16)); nothing was written and the application goes on",
                               hint: "checkpoint it once it has unmapped that area")
            }
            // A mapping of an anonymous inode (an io_uring ring, a perf_event buffer, a KVM
            // vCPU) belongs to a kernel object no path leads to: it stays mapped after its fd
            // is closed (io_uring_close_ring_fd), and the restart could not map it again.
            if m.name.hasPrefix("anon_inode:") {
                throw SSIError(.unsupported, "PID \(pid) maps \(m.name) at 0x\(String(m.start, radix: 16)) (a kernel object's memory, which the checkpoint engine cannot make again); nothing was written and the application goes on",
                               hint: "checkpoint it once it has unmapped that area (an io_uring program: after io_uring_queue_exit)")
            }
            guard let kind = ProcessDumper.classify(m) else { continue }
            var vma = ProcessDumper.area(m, kind: kind, flags: flags[m.start] ?? [], pid: pid)
            // What must be saved: anonymous memory (private or shared) that is present or
            // swapped; for private file mappings only pages the process changed (COW copies,
            // which pagemap shows as not file-backed); shared file mappings live in their file.
            var wantsPages: Bool
            switch kind {
            case .anonymous: wantsPages = true
            case .file: wantsPages = !m.shared
            default: wantsPages = false
            }
            // A droppable area's content is the kernel's to throw away at any time
            // (mmap(2) MAP_DROPPABLE): glibc keeps its getrandom(3) state there, which two
            // restarts of one snapshot must not share. It comes back empty, as after a drop.
            if vma.vmFlags.contains("dp") { wantsPages = false }
            if wantsPages {
                let runs: [(UInt64, UInt64)]
                // An area the parent has identically (same range, protection, file, offset and
                // flags, none of MADV_DONTFORK/WIPEONFORK) was inherited at fork.
                if let ppm = parentView.pagemap, let pe = parentView.maps[m.start], pe == m, kind != .sysvShm, !m.shared || kind == .anonymous,
                   parentView.flags[m.start] == flags[m.start], !(flags[m.start] ?? []).contains(where: { $0 == "dc" || $0 == "wf" }) {
                    // A shared anonymous area with the parent's very inode (MapsEntry compares
                    // it: the shmem object behind /dev/zero) is one object with the parent's:
                    // kept from the fork at restart, with no page of its own.
                    let (own, drop) = m.shared ? ([], []) : try inheritedRuns(pagemap: pm.rawValue, parentPagemap: ppm, vma: m, fileBacked: kind == .file)
                    runs = own
                    vma.inherited = true
                    vma.dropPages = drop.map { PageRun(address: $0.0, count: $0.1, fileOffset: 0) }
                } else if let pre = precopied, !m.shared, kind == .anonymous, let final = try finalRuns(pre, vma: m, copier: copier) {
                    // Only anonymous areas: in a private file mapping registered for
                    // asynchronous write-protection, a page dropped with MADV_DONTNEED (which
                    // must read the file's bytes again) is replaced by a write-protect marker
                    // that the scan does not report as written, so its old copy would come back
                    // (seen on 6.18). Such an area is saved from /proc/PID/pagemap (below),
                    // which keeps only the pages still the process's own.
                    vma.pages = final
                    vmas.append(vma)
                    continue
                } else if kind == .anonymous && m.shared, let shm = shmemRuns(m) {
                    runs = shm
                } else {
                    let found = try pageRuns(pagemap: pm.rawValue, vma: m, fileBacked: kind == .file)
                    runs = found.keep
                    if !found.guards.isEmpty { vma.guardPages = found.guards.map { [$0.0, $0.1] } }
                }
                vma.pages = try copier.copy(runs)
            }
            vmas.append(vma)
        }
        try copier.finish()
        return vmas
    }

    /// The image of one area of /proc/PID/maps, without its pages.
    static func area(_ m: MapsEntry, kind: VMA.Kind, flags: [String], pid: Int32? = nil) -> VMA {
        var path: String? = nil
        var deletedID: String? = nil
        if kind == .file {
            var st = stat()
            if m.name.hasSuffix(" (deleted)"), let pid,
               stat("/proc/\(pid)/map_files/\(String(m.start, radix: 16))-\(String(m.end, radix: 16))", &st) == 0, st.st_nlink > 0,
               let name = ProcessDumper.linkedName(of: m.name, st) {
                // Mapped by a name since removed but linked elsewhere (glibc's sem_open maps
                // /dev/shm/sem.XXXXXX, links it to sem.NAME and unlinks the first): the file
                // at its other name, shared with every process that opens that name.
                path = name
            } else if m.name.hasSuffix(" (deleted)") {
                deletedID = "\(m.device):\(m.inode)"
                path = String(m.name.dropLast(" (deleted)".count))
            } else {
                path = m.name
            }
        }
        var vma = VMA(start: m.start, end: m.end, read: m.read, write: m.write, exec: m.exec, shared: m.shared, kind: kind,
                      name: m.name, path: path, fileOffset: m.offset, vmFlags: flags)
        if kind == .sysvShm { vma.sysvShmID = Int32(truncatingIfNeeded: m.inode) }
        vma.deletedFileID = deletedID
        if let pid, kind == .file, deletedID == nil, m.exec {
            // The file of an executable area (a program, a library), through map_files: the
            // file the area maps, even if its path names another now. Checked at restart.
            var st = stat()
            if stat("/proc/\(pid)/map_files/\(String(m.start, radix: 16))-\(String(m.end, radix: 16))", &st) == 0 {
                (vma.fileSize, vma.fileMTime) = (Int64(st.st_size), Int64(st.st_mtim.tv_sec))
            }
        }
        return vma
    }

    /// For an area inherited from the parent: the runs of this process's own pages (to save),
    /// and the runs where the parent has a page of its own and this process has none (to
    /// drop at restart). A page present in both with the same page frame (pagemap bits 0-54,
    /// shown to CAP_SYS_ADMIN) is still shared copy-on-write: neither saved nor dropped.
    func inheritedRuns(pagemap: Int32, parentPagemap: Int32, vma: MapsEntry, fileBacked: Bool) throws -> ([(UInt64, UInt64)], [(UInt64, UInt64)]) {
        let n = Int(vma.size / SnapshotFormat.pageSize)
        func entries(_ fd: Int32) throws -> [UInt64] {
            var e = [UInt64](repeating: 0, count: n)
            let got = e.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n * 8, off_t((vma.start / SnapshotFormat.pageSize) * 8)) }
            if got != n * 8 { throw SSIError.sys("read pagemap of the tree of PID \(pid)", errno: errno) }
            return e
        }
        let c = try entries(pagemap), p = try entries(parentPagemap)
        let pfnMask: UInt64 = (1 << 55) - 1
        let own = { (e: UInt64) in Self.holdsPage(e, fileBacked: fileBacked) }
        var save = [Bool](repeating: false, count: n), drop = [Bool](repeating: false, count: n)
        for i in 0..<n {
            let sharedFrame = c[i] & (1 << 63) != 0 && p[i] & (1 << 63) != 0 && c[i] & pfnMask == p[i] & pfnMask && c[i] & pfnMask != 0
            save[i] = own(c[i]) && !sharedFrame
            drop[i] = own(p[i]) && !own(c[i])
        }
        func runs(_ flags: [Bool]) -> [(UInt64, UInt64)] {
            var out = [(UInt64, UInt64)]()
            var start = -1
            for i in 0...n {
                let on = i < n && flags[i]
                if on && start < 0 { start = i }
                if !on && start >= 0 { out.append((vma.start + UInt64(start) * SnapshotFormat.pageSize, UInt64(i - start))); start = -1 }
            }
            return out
        }
        return (runs(save), runs(drop))
    }

    /// Runs of pages to save in one VMA, from /proc/PID/pagemap (bit 63 present, 62 swapped,
    /// 61 file-page or shared-anonymous: Documentation/admin-guide/mm/pagemap.rst).
    /// A shared anonymous area is a shmem object (shared with the processes forked since):
    /// its pages are those of the object, which may be in no page table of this process (a
    /// child touched them, or MADV_DONTNEED dropped the mapping but not the page). They are
    /// found in the object itself: /proc/PID/map_files/START-END opens it, and
    /// lseek(2) SEEK_DATA/SEEK_HOLE, which shmem supports, gives its pages (swapped ones
    /// included); the copier then reads them through the process's mapping. nil if the
    /// object cannot be opened that way.
    func shmemRuns(_ vma: MapsEntry) -> [(UInt64, UInt64)]? {
        let fd = open("/proc/\(pid)/map_files/\(String(vma.start, radix: 16))-\(String(vma.end, radix: 16))", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let page = SnapshotFormat.pageSize
        let first = off_t(vma.offset), last = off_t(vma.offset + vma.size)
        var runs = [(UInt64, UInt64)]()
        var at = first
        while at < last {
            let data = lseek(fd, at, 3 /* SEEK_DATA */)
            if data < 0 || data >= last { break }
            var hole = lseek(fd, data, 4 /* SEEK_HOLE */)
            if hole < 0 || hole > last { hole = last }
            let start: UInt64 = UInt64(data) / page * page
            let end: UInt64 = (UInt64(hole) + page - 1) / page * page
            runs.append((vma.start + (start - vma.offset), (end - start) / page))
            at = off_t(end)
        }
        return runs
    }

    func presentRuns(pagemap: Int32, vma: MapsEntry, fileBacked: Bool) throws -> [(UInt64, UInt64)] {
        try pageRuns(pagemap: pagemap, vma: vma, fileBacked: fileBacked).keep
    }

    /// The runs of pages to save in area `vma`, and its guard regions.
    func pageRuns(pagemap: Int32, vma: MapsEntry, fileBacked: Bool) throws -> (keep: [(UInt64, UInt64)], guards: [(UInt64, UInt64)]) {
        let n = Int(vma.size / SnapshotFormat.pageSize)
        var entries = [UInt64](repeating: 0, count: n)
        let want = n * 8
        let got = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, want, off_t((vma.start / SnapshotFormat.pageSize) * 8)) }
        if got != want { throw SSIError.sys("read /proc/\(pid)/pagemap", errno: errno) }
        var runs = [(UInt64, UInt64)](), guards = [(UInt64, UInt64)]()
        var runStart = -1, guardStart = -1
        for i in 0...n {
            let e = i < n ? entries[i] : 0
            let keep = i < n && Self.holdsPage(e, fileBacked: fileBacked)
            let guarded = i < n && e & Self.guardBit != 0
            if keep && runStart < 0 { runStart = i }
            if !keep && runStart >= 0 {
                runs.append((vma.start + UInt64(runStart) * SnapshotFormat.pageSize, UInt64(i - runStart)))
                runStart = -1
            }
            if guarded && guardStart < 0 { guardStart = i }
            if !guarded && guardStart >= 0 {
                guards.append((vma.start + UInt64(guardStart) * SnapshotFormat.pageSize, UInt64(i - guardStart)))
                guardStart = -1
            }
        }
        return (runs, guards)
    }

    /// pagemap bit 58: the entry is a guard region's marker (Linux 6.15; it also sets bit 62,
    /// "swapped", though no page is behind it, and reading it fails with EIO).
    static let guardBit: UInt64 = 1 << 58

    /// Whether a pagemap entry (Documentation/admin-guide/mm/pagemap.rst: bit 63 present, 62
    /// swapped, 61 file page or shared anonymous, 0-54 the page frame) holds a page to save:
    /// in a file mapping, a private copy (present, not the file's) or a swapped one; else any
    /// page, but a guard marker and the shared zero page, which an area only read maps
    /// (saving it would make every such page real memory at restart: 512 MiB only read came
    /// back as 512 MiB resident).
    static func holdsPage(_ e: UInt64, fileBacked: Bool) -> Bool {
        if e & guardBit != 0 { return false }
        let present = e & (1 << 63) != 0, swapped = e & (1 << 62) != 0, file = e & (1 << 61) != 0
        if fileBacked { return (present && !file) || swapped }
        if present, let zero = ZeroPage.frame, e & ((1 << 55) - 1) == zero { return false }
        return present || swapped
    }
}

/// The page frame of the kernel's shared zero page, which private anonymous memory only
/// read maps (pagemap shows it present): found by reading a fresh page of ssi's own. nil
/// when pagemap hides frames (without CAP_SYS_ADMIN, Documentation/admin-guide/mm/pagemap.rst).
enum ZeroPage {
    static let frame: UInt64? = {
        let size = Int(SnapshotFormat.pageSize)
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { return nil }
        defer { munmap(p, size) }
        // A read fault on an untouched private anonymous page maps the zero page.
        let touched = p.load(as: UInt8.self)
        let fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0, touched == 0 else { return nil }
        defer { close(fd) }
        var e: UInt64 = 0
        let at = off_t(UInt64(UInt(bitPattern: p)) / SnapshotFormat.pageSize * 8)
        guard pread(fd, &e, 8, at) == 8, e & (1 << 63) != 0 else { return nil }
        let frame = e & ((1 << 55) - 1)
        return frame == 0 ? nil : frame
    }()
}

/// The parent's areas, to find those inherited at fork and still identical.
struct ParentView {
    var maps = [UInt64: MapsEntry]()
    var flags = [UInt64: [String]]()
    private var owned: Int32 = -1
    var pagemap: Int32? { owned >= 0 ? owned : nil }

    /// `known`: the parent's maps and VmFlags as its own dump read them (it is stopped, so
    /// they are still its own): smaps is not read again.
    init(_ parent: Int32?, known: (maps: String, flags: [UInt64: [String]])? = nil) {
        guard let parent else { return }
        for e in MapsEntry.parse(known?.maps ?? (try? ProcFS.read("/proc/\(parent)/maps")) ?? "") { maps[e.start] = e }
        flags = known?.flags ?? (try? ProcessDumper(pid: parent).vmFlags()) ?? [:]
        owned = open("/proc/\(parent)/pagemap", O_RDONLY | O_CLOEXEC)
    }

    func close() { if owned >= 0 { Glibc.close(owned) } }
}

/// The maps and VmFlags each process's dump read, by PID, for its children's dumps
/// (ParentView): one checkpoint's, while every process is stopped.
final class DumpedAreas {
    var seen: [Int32: (maps: String, flags: [UInt64: [String]])] = [:]
}

// MARK: - restore

/// Where a restored process gets its pages from.
enum PageSource {
    /// The pages file, opened in the process at this fd: each run is pread straight into
    /// place (one copy, kernel to kernel); with `fast`, runs of fresh anonymous areas are
    /// copied in by UFFDIO_COPY from the file mapped in ssi instead (no zeroing, no faults).
    case file(fd: UInt64, fast: FastFill?)
    /// An image not on a local file system: ssi reads the runs and writes them into the
    /// process (process_vm_writev).
    case image(any ImageFileReader)
}

extension ProcessRestorer {
    /// Opens the pages file in the process when the image has a path for it, above `high`.
    func openPages(high: UInt64) throws -> PageSource {
        let reader = try source.open(image.pagesFile)
        guard let path = reader.path else { return .image(reader) }
        let imagesFD = try inj.call("open pages", .openat, UInt64(AT_FDCWD), try putString(path), UInt64(O_RDONLY | O_CLOEXEC), 0)
        let pagesFD = try inj.call("dup pages fd", .fcntl, imagesFD, UInt64(F_DUPFD_CLOEXEC), high + 1)
        try inj.call("close", .close, imagesFD)
        // A userfaultfd of its own (injected calls: frozen time) only when an area will use it.
        if lazy != nil, image.vmas.contains(where: fillsLazily), let fd = try LazyMemory.userfaultfd(inj) {
            if let src = LazyMemory.Source(path: path, size: reader.size) {
                lazySpace = LazyMemory.Space(fd: fd, pid: pid, source: src, pending: [])
            } else {
                close(fd)
            }
        }
        return .file(fd: pagesFD, fast: try FastFill(path: path, size: reader.size, inj: inj))
    }

    func closePages(_ pages: PageSource) throws {
        if case .file(let fd, _) = pages { try inj.call("close", .close, fd) }
    }

    /// Unmaps everything inherited but the vDSO/vvar (moved afterwards), the scratch area and
    /// the areas this process shares with its parent (VMA.inherited).
    func unmapInherited(_ current: [MapsEntry]) -> [SyscallBatch.Call] {
        // A few munmap calls over whole spans, not one per mapping: the shell may be a copy
        // of ssi (hundreds of mappings: libraries, thread stacks), and every injected call is
        // a round of ptrace stops. munmap(2) over a span with holes is not an error ("It is not
        // an error if the indicated range does not contain any mapped pages"). Kept: the
        // scratch area, the kernel's special mappings (moved by moveVDSO), and areas kept
        // from the parent (VMA.inherited). The calls run in one batch with moveVDSO's.
        let targets = current.filter { !$0.isSpecialKernelMapping && !($0.start >= scratch && $0.end <= scratch + scratchSize) }
        guard let low = targets.map(\.start).min(), let high = targets.map(\.end).max() else { return [] }
        var keep = image.vmas.filter { $0.inherited == true }.map { ($0.start, $0.end) }
        keep.append((scratch, scratch + scratchSize))
        keep += current.filter(\.isSpecialKernelMapping).map { ($0.start, $0.end) }
        var from = low
        var calls = [SyscallBatch.Call]()
        for (ks, ke) in keep.sorted(by: { $0.0 < $1.0 }) where ke > from && ks < high {
            if ks > from { calls.append(SyscallBatch.Call(.munmap, from, ks - from)) }
            from = max(from, ke)
        }
        if from < high { calls.append(SyscallBatch.Call(.munmap, from, high - from)) }
        return calls
    }

    /// Maps each area, writable while we fill it, then gives it its protection. Files are
    /// opened above `high`. The mmap, pread, mprotect and madvise calls of every area are
    /// queued and run as one batch (SyscallBatch); the queue is run first whenever ssi
    /// itself must find an area mapped (its pages filled from outside, a userfaultfd
    /// registration) and before anything that needs the result of a call.
    func restoreMemory(pages: PageSource, high: UInt64) throws {
        var fileFDs = [String: UInt64]()
        var q = CallQueue(pid: pid)
        for v in image.vmas {
            switch v.kind {
            case .vdso, .vvar, .vvarVclock: continue
            case .sysvShm:
                try run(&q)
                try attachSharedMemory(v)
            case .anonymous, .file:
                if v.inherited == true { try refillInherited(v, pages: pages, queue: &q) } else { try mapArea(v, pages: pages, high: high, fileFDs: &fileFDs, queue: &q) }
            }
        }
        for (_, fd) in fileFDs { q.add(SyscallBatch.Call(.close, fd), fails: "close") }
        try run(&q)
    }

    /// Syscalls queued for one batch, each with what to do with its result.
    struct CallQueue {
        let pid: Int32
        var calls: [SyscallBatch.Call] = []
        var checks: [(Int64) throws -> Void] = []

        /// A call whose failure is an error naming `what` (nil: a failure is ignored).
        mutating func add(_ call: SyscallBatch.Call, fails what: String?) {
            let pid = pid
            add(call) { r in
                if let what, r < 0 && r > -4096 { throw SSIError.sys("\(what) in PID \(pid)", errno: Int32(-r)) }
            }
        }

        mutating func add(_ call: SyscallBatch.Call, check: @escaping (Int64) throws -> Void) {
            calls.append(call)
            checks.append(check)
        }
    }

    /// Runs the queued calls and checks their results in order (the first failure is
    /// thrown); empties the queue.
    func run(_ q: inout CallQueue) throws {
        guard !q.calls.isEmpty else { return }
        let (calls, checks) = (q.calls, q.checks)
        q = CallQueue(pid: pid)
        for (r, check) in zip(try runBatch(calls), checks) { try check(r) }
    }

    private func protection(_ v: VMA) -> Int32 { (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) | (v.exec ? PROT_EXEC : 0) }

    /// SysV shared memory is not in the snapshot: the segment is attached again by id.
    private func attachSharedMemory(_ v: VMA) throws {
        guard let id = v.sysvShmID else { return }
        let r = try inj.rawArgs(.shmat, [UInt64(id), v.start, UInt64(v.write ? 0 : SHM_RDONLY) | UInt64(SHM_REMAP)])
        if r < 0 {
            throw SSIError(.notFound, "PID \(pid) had SysV shared memory \(v.name) (id \(id)) attached at 0x\(String(v.start, radix: 16)), and it cannot be attached now: \(String(cString: strerror(Int32(-r))))",
                           hint: "restore the segment first with `ssi ipc restart -m FILE`")
        }
    }

    /// An area kept from the parent: forget the parent's own pages, write ours over it.
    private func refillInherited(_ v: VMA, pages: PageSource, queue q: inout CallQueue) throws {
        let finalProt = protection(v)
        let prot = v.pages.isEmpty ? finalProt : finalProt | PROT_READ | PROT_WRITE
        for d in v.dropPages ?? [] {
            q.add(SyscallBatch.Call(.madvise, d.address, d.count * SnapshotFormat.pageSize, 4), fails: "madvise(DONTNEED)")
        }
        if !v.pages.isEmpty && finalProt != prot { q.add(SyscallBatch.Call(.mprotect, v.start, v.end - v.start, UInt64(prot)), fails: "mprotect") }
        try fillPages(v, pages: pages, queue: &q)
        if !v.pages.isEmpty && finalProt != prot { q.add(SyscallBatch.Call(.mprotect, v.start, v.end - v.start, UInt64(finalProt)), fails: "mprotect") }
        installGuards(v, queue: &q)
    }

    /// The area's guard regions, after its pages (a guard marker refuses a page in its
    /// place): madvise(2) MADV_GUARD_INSTALL (102), which an inherited area may have already
    /// (fork keeps them; installing one again is harmless).
    private func installGuards(_ v: VMA, queue q: inout CallQueue) {
        for g in v.guardPages ?? [] where g.count == 2 {
            q.add(SyscallBatch.Call(.madvise, g[0], g[1] * SnapshotFormat.pageSize, 102), fails: "madvise(MADV_GUARD_INSTALL) 0x\(String(g[0], radix: 16))")
        }
    }

    /// Memory protection keys (pkeys(7)): each area's key ("pkN" among its flags), once the
    /// areas are mapped and before the threads get their registers back. The keys are
    /// allocated first, lowest free first as pkey_alloc(2) gives them, up to the highest
    /// one an area has (a key allocated and used by no area cannot be seen: one above that
    /// is lost, one below comes back allocated). pkey_alloc also opens the new key in the
    /// calling thread's PKRU register, which each thread's saved extended state then sets
    /// back to its own. An area that is execute-only gets the kernel's execute-only key by
    /// mprotect alone, and is left to it.
    func restoreProtectionKeys() throws {
        let keyed: [(VMA, UInt64)] = image.vmas.compactMap { v in
            guard let f = v.vmFlags.first(where: { $0.hasPrefix("pk") }), let k = UInt64(f.dropFirst(2)), k != 0, v.read || v.write else { return nil }
            return (v, k)
        }
        guard let highest = keyed.map(\.1).max() else { return }
        while true {
            // A child forked during the restore has its parent's keys already.
            let k = try inj.raw(.pkey_alloc, 0, 0)
            if k < 0 {
                throw SSIError.sys("pkey_alloc in PID \(pid), whose memory had protection keys up to \(highest)", errno: Int32(-k),
                                   hint: "restart it on a machine whose CPU has protection keys (pku in /proc/cpuinfo)")
            }
            if UInt64(k) == highest { break }
            if UInt64(k) > highest { _ = try inj.raw(.pkey_free, UInt64(k)); break }
        }
        for (v, k) in keyed {
            let r = try inj.raw(.pkey_mprotect, v.start, v.end - v.start, UInt64(protection(v)), k)
            if r < 0 { throw SSIError.sys("pkey_mprotect 0x\(String(v.start, radix: 16))-0x\(String(v.end, radix: 16)) with key \(k) in PID \(pid)", errno: Int32(-r)) }
        }
    }

    /// Seals the areas that were sealed (mseal(2), Linux 6.10): last of all, since a sealed
    /// area refuses mprotect, munmap, MAP_FIXED and the madvise calls that drop pages, and
    /// only in the process itself (a child forked from it during the restore was made
    /// before, and seals its own copies).
    func restoreSeals() throws {
        for v in image.vmas where v.vmFlags.contains("sl") {
            let r = try inj.raw(.mseal, v.start, v.end - v.start, 0)
            if r < 0 { throw SSIError.sys("mseal 0x\(String(v.start, radix: 16))-0x\(String(v.end, radix: 16)) in PID \(pid)", errno: Int32(-r)) }
        }
    }

    private func mapArea(_ v: VMA, pages: PageSource, high: UInt64, fileFDs: inout [String: UInt64], queue q: inout CallQueue) throws {
        let finalProt = protection(v)
        let prot = v.pages.isEmpty ? finalProt : finalProt | PROT_READ | PROT_WRITE
        var flags = MAP_FIXED | (v.shared ? MAP_SHARED : MAP_PRIVATE)
        if v.vmFlags.contains("gd") { flags |= MAP_GROWSDOWN }
        if v.vmFlags.contains("nr") { flags |= 0x4000 /* MAP_NORESERVE */ }
        // MAP_DROPPABLE (0x08) is a mapping type of its own, in place of MAP_PRIVATE.
        if v.vmFlags.contains("dp") && v.kind == .anonymous && !v.shared { flags = MAP_FIXED | 0x08 }
        var fd = UInt64.max
        if v.kind == .anonymous {
            flags |= MAP_ANONYMOUS
        } else if var path = v.path {
            if let id = v.deletedFileID, let p = deletedFiles?.path(id) { path = p }
            let mode = (v.shared && (v.write || v.vmFlags.contains("mw"))) ? O_RDWR : O_RDONLY
            let key = "\(mode):\(path)"
            if let f = fileFDs[key] { fd = f } else {
                // Opened now (its number is needed below); the queue does not depend on it.
                let f0 = try open("open \(path)", path: path, flags: mode | O_CLOEXEC)
                fd = try inj.call("dup", .fcntl, f0, UInt64(F_DUPFD_CLOEXEC), high + 2)
                try inj.call("close", .close, f0)
                fileFDs[key] = fd
            }
        }
        q.add(SyscallBatch.Call(.mmap, v.start, v.end - v.start, UInt64(prot), UInt64(flags), fd, v.fileOffset), fails: "mmap 0x\(String(v.start, radix: 16)) \(v.name)")
        try fillPages(v, pages: pages, queue: &q)
        if finalProt != prot { q.add(SyscallBatch.Call(.mprotect, v.start, v.end - v.start, UInt64(finalProt)), fails: "mprotect") }
        // madvise(2) flags that /proc/PID/smaps shows as VmFlags.
        // MADV_MERGEABLE fails with EINVAL without CONFIG_KSM, as it did for the program.
        let advice: [String: Int32] = ["dc": 10 /* MADV_DONTFORK */, "dd": 16 /* MADV_DONTDUMP */, "hg": 14 /* MADV_HUGEPAGE */,
                                       "nh": 15 /* MADV_NOHUGEPAGE */, "wf": 18 /* MADV_WIPEONFORK */, "rr": 1 /* MADV_RANDOM */,
                                       "sr": 2 /* MADV_SEQUENTIAL */, "mg": 12 /* MADV_MERGEABLE */]
        for f in v.vmFlags { if let a = advice[f] { q.add(SyscallBatch.Call(.madvise, v.start, v.end - v.start, UInt64(a)), fails: nil) } }
        installGuards(v, queue: &q)
        if v.vmFlags.contains("lo") {
            // mlock(2) faults every page in and sets VM_LOCKED ("lo"); it can fail on
            // RLIMIT_MEMLOCK for a process without CAP_IPC_LOCK, as the program's could not.
            // "lf" (VM_LOCKONFAULT): mlock2(2) MLOCK_ONFAULT, pages locked as they are
            // touched, not all faulted in.
            let (pid, start) = (pid, v.start)
            let call = v.vmFlags.contains("lf") ? SyscallBatch.Call(.mlock2, v.start, v.end - v.start, 1 /* MLOCK_ONFAULT */)
                                                : SyscallBatch.Call(.mlock, v.start, v.end - v.start)
            q.add(call) { r in
                if r < 0 { warn("PID \(pid): mlock of 0x\(String(start, radix: 16)) failed again: \(String(cString: strerror(Int32(-r))))") }
            }
        }
    }

    /// Whether area `v` is filled after the process runs again (LazyMemory): a fresh private
    /// anonymous area of 16 MiB of pages or more (below, copying takes a few ms; and a
    /// registered area shows "um" in the VmFlags of /proc/PID/smaps until it is filled), whose
    /// pages are not locked ("lo": mlock faults in every page at once) and that a child forked
    /// meanwhile gets as it is (not "wf", wiped in the child, nor "dc").
    func fillsLazily(_ v: VMA) -> Bool {
        v.kind == .anonymous && !v.shared && v.inherited != true
            && v.pages.reduce(0, { $0 + $1.count }) * SnapshotFormat.pageSize >= LazyMemory.smallestArea
            && !v.vmFlags.contains(where: { ["lo", "wf", "dc"].contains($0) })
    }

    /// The saved pages of one area, put back in place.
    /// The area's pages: queued preads from the pages file, or, when ssi fills them from
    /// outside (later, lazily; with UFFDIO_COPY; from a stream), after the queue has run and
    /// the area exists.
    private func fillPages(_ v: VMA, pages: PageSource, queue q: inout CallQueue) throws {
        switch pages {
        case .file(let pagesFD, let fast):
            if let lazy, let lazySpace, fillsLazily(v) {
                try run(&q)
                if try lazy.add(lazySpace, start: v.start, end: v.end, runs: v.pages) { return }
            }
            // Small areas go with the queued preads: a fast fill runs the queue first, then
            // registers, copies and unregisters (a ptrace round trip and three ioctls per
            // area), 110 us an area that made a restart of 40,000 small areas take 4.4 s.
            if let fast, v.kind == .anonymous, !v.shared, v.inherited != true,
               v.pages.reduce(0, { $0 + $1.count }) * SnapshotFormat.pageSize >= FastFill.smallestArea {
                try run(&q)
                if try fast.fill(v, location: "\(source.location)/\(image.pagesFile)") { return }
            }
            let location = "\(source.location)/\(image.pagesFile)"
            for run in v.pages {
                // A pread from a regular file returns all it asked for short of its end
                // (read(2)), in calls of at most 0x7ffff000 bytes: a shorter answer is a pages
                // file shorter than its index.
                var done: UInt64 = 0
                let total = run.count * SnapshotFormat.pageSize
                while done < total {
                    let n = min(total - done, 1 << 30)
                    let (at, pid) = (run.address + done, pid)
                    q.add(SyscallBatch.Call(.pread64, pagesFD, at, n, run.fileOffset + done)) { r in
                        if r < 0 { throw SSIError.sys("pread pages into 0x\(String(at, radix: 16)) in PID \(pid)", errno: Int32(-r)) }
                        if UInt64(r) != n { throw SSIError(.corrupt, "\(location) is shorter than its page index") }
                    }
                    done += n
                }
            }
        case .image(let reader):
            try run(&q)
            let chunk = 8 << 20
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { buf.deallocate() }
            for run in v.pages {
                var done: UInt64 = 0
                let total = run.count * SnapshotFormat.pageSize
                while done < total {
                    let n = Int(min(UInt64(chunk), total - done))
                    let b = UnsafeMutableRawBufferPointer(rebasing: buf[0..<n])
                    try reader.read(into: b, at: run.fileOffset + done)
                    try mem.write(UnsafeRawBufferPointer(b), to: run.address + done)
                    done += UInt64(n)
                }
            }
        }
    }
}

/// UFFDIO_COPY restore of fresh anonymous areas (RemoteUserfaultfd): the pages file mapped
/// read-only in ssi (its tmpfs or page-cache pages, not copied) is the source.
final class FastFill {
    let uffd: RemoteUserfaultfd
    let base: UnsafeRawPointer
    let size: UInt64

    /// Nil when the file cannot be mapped or the process's userfaultfd cannot be had: the
    /// pages are then read into place as before.
    init?(path: String, size: UInt64, inj: Injector) throws {
        guard size > 0, let u = try RemoteUserfaultfd.create(inj) else { return nil }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard let p = mmap(nil, Int(size), PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
        uffd = u
        base = UnsafeRawPointer(p)
        self.size = size
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), Int(size)) }

    /// Fills area `v` (mapped just now, so none of its pages exist). False if the kernel
    /// refused to register it.
    func fill(_ v: VMA, location: String) throws -> Bool {
        guard !v.pages.isEmpty, uffd.register(v.start, v.end) else { return v.pages.isEmpty }
        defer { uffd.unregister(v.start, v.end) }
        var total: UInt64 = 0
        for run in v.pages {
            let count = run.count * SnapshotFormat.pageSize
            guard run.fileOffset + count <= size else { throw SSIError(.corrupt, "\(location) is shorter than its page index") }
            total += count
        }
        // A large area is filled by several threads, 8 MiB pieces dealt in turn: each
        // UFFDIO_COPY allocates and fills fresh pages of the target (userfaultfd(2): the
        // ioctl takes the target's mm read-locked, so copies into one mm run side by side),
        // and that work, not the reading, is what restoring 1 GiB waits for.
        let workers = total >= Self.parallelFrom ? max(1, min(4, ProcessInfo.processInfo.activeProcessorCount)) : 1
        var pieces: [(address: UInt64, offset: UInt64, count: UInt64)] = []
        for run in v.pages {
            var (a, o, left) = (run.address, run.fileOffset, run.count * SnapshotFormat.pageSize)
            while left > 0 {
                let n = workers > 1 ? min(left, Self.piece) : left
                pieces.append((a, o, n))
                (a, o, left) = (a + n, o + n, left - n)
            }
        }
        let overlap = Atomic<Bool>(false)
        let failure = Mutex<SSIError?>(nil)
        // Plain values across the threads: the fd, the pid and the mapping's address.
        let (fd, pid, base, all) = (uffd.fd, uffd.pid, UInt(bitPattern: self.base), pieces)
        let copy = { DispatchQueue.concurrentPerform(iterations: workers) { w in
            for k in stride(from: w, to: all.count, by: workers) {
                if overlap.load(ordering: .relaxed) || failure.withLock({ $0 != nil }) { return }
                let p = all[k]
                var done: UInt64 = 0
                while done < p.count {
                    let from = UnsafeRawPointer(bitPattern: base + UInt(p.offset + done))!
                    let n = Userfaultfd.copy(fd, to: p.address + done, from: from, count: p.count - done)
                    if n == -Int(EAGAIN) || n == -Int(EINTR) { continue }
                    if n == -Int(EEXIST) { overlap.store(true, ordering: .relaxed); return }
                    if n < 0 {
                        failure.withLock { $0 = $0 ?? SSIError.sys("UFFDIO_COPY into PID \(pid) at 0x\(String(p.address + done, radix: 16))", errno: Int32(-n)) }
                        return
                    }
                    done += UInt64(n)
                }
                // UFFDIO_COPY read the piece through our mapping of the file, which mapped
                // each page into our page tables; they are dropped here, on this worker
                // (madvise(2) MADV_DONTNEED on a shared file mapping only unmaps: the file
                // keeps its pages, and it takes the mm's lock shared, so workers zap side by
                // side). Left to the final munmap, the 262,144 entries of 1 GiB cost 35 ms
                // on one thread, after the last copy and before the process could run.
                madvise(UnsafeMutableRawPointer(bitPattern: base + UInt(p.offset)), Int(p.count), MADV_DONTNEED)
            }
        } }
        // The restorer is pinned to one CPU (Restart), and workers it starts would be too.
        if workers > 1 { TaskScheduling.unpinned(copy) } else { copy() }
        if let e = failure.withLock({ $0 }) { throw e }
        // Runs that overlap (an image written by another version?): the whole area is
        // written again by the plain path, in order, over what is there.
        return !overlap.load(ordering: .relaxed)
    }

    static let parallelFrom: UInt64 = 64 << 20
    /// Areas with fewer saved bytes than this are read into place by the queued preads.
    static let smallestArea: UInt64 = 1 << 20
    static let piece: UInt64 = 8 << 20
}
