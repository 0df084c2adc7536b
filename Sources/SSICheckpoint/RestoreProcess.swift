import Foundation
import SSIImage
import SSIIPC
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Rebuilds one process from its image, in stages that the restart of a whole tree
/// interleaves (RestartSession): begin, fork children, rebuild, threads, groups, finish.
///
/// The process is created empty-handed: clone3 with set_tid gives it its old PID (the root by
/// ssi, every other process by its restored parent), and it stops at once. From then on it
/// never runs its own code: we drive it with injected syscalls (see Injector) that tear down
/// the copy of an address space it inherited, map the snapshot's memory at the old
/// addresses, reopen its files, and set everything else; then we load its registers and let
/// it go.
final class ProcessRestorer {
    let image: ProcessImage
    let snapshotDir: String
    /// Give the fds that were terminals the caller's terminal (`restart -t`).
    var useCallerTerminal = false
    /// The application's pipes, held open by ssi during the restart.
    var pipes: PipeRegistry?
    /// Open file descriptions shared by several fds, inherited from the root at fixed numbers.
    var shared: SharedDescriptions?
    /// inotify instances and FIFOs, prepared by ssi (FSObjects).
    var fsObjects: FSObjects?

    private(set) var tracee: Tracee
    private var inj: Injector
    private var scratch: UInt64 = 0
    private let scratchSize: UInt64 = 1 << 20
    private var mem: RemoteMemory { RemoteMemory(pid: ProcessID(image.pid)) }
    private var threadInjectors: [Int32: Injector] = [:]

    var pid: Int32 { image.pid }

    /// Takes over a stopped stub (our traced child, or a child auto-attached at its fork).
    init(image: ProcessImage, snapshotDir: String, stub: Tracee) throws {
        self.image = image
        self.snapshotDir = snapshotDir
        self.tracee = stub
        // If ssi dies mid-restore, the half-built processes die with it (PTRACE_O_EXITKILL);
        // forks and clones we inject stop at birth, traced (TRACEFORK, TRACECLONE).
        try stub.setOptions([.exitKill, .traceFork, .traceClone])
        inj = try Injector(pid: stub.pid, base: try stub.registers())
        try stub.setSigmask(~0)
        // glibc in our copy registered rseq for its thread; unregister it while its memory
        // is still there (the kernel writes to the area on unregister).
        if let r = try stub.rseqConfiguration() {
            try inj.call("rseq unregister", .rseq, r.pointer, UInt64(r.length), 1, UInt64(r.signature))
        }
        // A scratch area for syscall arguments, in a hole of the target layout; syscalls run
        // from a `syscall` instruction placed in it from now on, because the vDSO is about to
        // move and a syscall cannot return into a mapping it has just moved.
        let current = MapsEntry.parse(try ProcFS.read("/proc/\(stub.pid)/maps"))
        scratch = try findHole(size: scratchSize, avoiding: image.vmas.map { ($0.start, $0.end) } + current.map { ($0.start, $0.end) })
        try inj.call("mmap scratch", .mmap, scratch, scratchSize, UInt64(PROT_READ | PROT_WRITE | PROT_EXEC),
                     UInt64(MAP_PRIVATE | MAP_ANONYMOUS | MapFlags.fixedNoReplace), UInt64.max, 0)
        try mem.write(Arch.syscallInstruction, to: gadgetAddress)
        inj.gadget = gadgetAddress
    }

    private var gadgetAddress: UInt64 { scratch + scratchSize - 16 }

    private func putString(_ s: String, _ off: UInt64 = 0) throws -> UInt64 {
        try mem.write(Array(s.utf8) + [0], to: scratch + off)
        return scratch + off
    }

    // MARK: checks before anything is created

    /// Checks, before creating anything, what can be checked from outside.
    static func preflight(_ image: ProcessImage, useCallerTerminal: Bool) throws {
        let pid = image.pid
        if kill(pid, 0) == 0 || errno != ESRCH || ProcFS.exists("/proc/\(pid)") {
            throw SSIError(.busy, "PID \(pid) is busy: a process with that PID exists, so application \(pid) cannot be restarted with its PID; nothing was changed",
                           hint: "if it is the running application, checkpoint it with --kill first; if it is a zombie, its parent must reap it")
        }
        for t in image.threads where t.tid != pid && (kill(t.tid, 0) == 0 || ProcFS.exists("/proc/\(t.tid)")) {
            throw SSIError(.busy, "thread id \(t.tid) of PID \(pid) is in use by another task; nothing was changed")
        }
        for f in image.fds where f.kind == .regular && f.deletedFileID == nil {
            var st = stat()
            if stat(f.path, &st) != 0 {
                throw SSIError(.notFound, "PID \(pid) fd \(f.fd): file \(f.path) no longer exists", hint: "put the file back where it was, then restart again")
            }
            if Int64(st.st_size) < f.position {
                throw SSIError(.state, "PID \(pid) fd \(f.fd): \(f.path) is now \(st.st_size) bytes, shorter than the saved offset \(f.position)",
                               hint: "restore the file's content (e.g. from a copy taken with the snapshot) before restarting")
            }
        }
        for v in image.vmas where v.kind == .file && v.deletedFileID == nil {
            if let p = v.path, access(p, R_OK) != 0 {
                throw SSIError(.notFound, "PID \(pid): mapped file \(p) no longer exists or is unreadable", hint: "reinstall the file, then restart again")
            }
        }
        // SysV shared memory is not in the snapshot: the segment must exist (ssi ipc restart).
        for v in image.vmas where v.kind == .sysvShm {
            guard let id = v.sysvShmID else { continue }
            let keyHex = v.name.dropFirst("/SYSV".count).prefix(8)
            let key = Int32(bitPattern: UInt32(keyHex, radix: 16) ?? 0)
            do { try SysVIPC.requireSegment(key: key, id: id) } catch let e as SSIError {
                throw SSIError(e.kind, "PID \(pid) had it attached at 0x\(String(v.start, radix: 16)): \(e.message)", hint: e.hint)
            }
        }
        try FSObjects.preflight(image)
        if useCallerTerminal, image.fds.contains(where: { $0.kind == .tty }), callerTerminalFD() == nil {
            throw SSIError(.invalidArgument, "-t was given but ssi's standard input, output and error are not terminals")
        }
    }

    static func callerTerminalFD() -> Int32? { [0, 1, 2].first { isatty($0) != 0 } }

    // MARK: stages

    /// Opens each shared description once, at `shared.base + index`, before any fork.
    func openShared(useCallerTerminal: Bool) throws {
        guard let shared, shared.count > 0 else { return }
        // Sockets are built in ssi, where they can be bound, connected and filled with plain
        // calls; this process takes each one and keeps it at its slot.
        if !shared.socketEnds.isEmpty {
            let sockets = SocketRebuilder()
            defer { sockets.closeAll() }
            try sockets.build(shared.socketEnds)
            for f in shared.socketEnds {
                guard let id = f.socketID, let mine = sockets.made[id], let slot = shared.socketSlot[id] else { continue }
                let fd = try FDTransfer.take(mine, inj: inj, what: "socket of fd \(f.fd)")
                try inj.call("dup3 socket", .dup3, fd, UInt64(slot), 0)
                try inj.call("close", .close, fd)
            }
        }
        guard !shared.list.isEmpty else { return }
        for (i, f) in shared.list.enumerated() {
            let target = UInt64(shared.base + Int32(i))
            var fd: UInt64
            if f.kind == .tty, useCallerTerminal, let t = ProcessRestorer.callerTerminalFD() {
                fd = UInt64(t)
            } else if f.kind == .inotify, let fsObjects {
                fd = try fsObjects.receiveInotify(f, pid: pid, inj: inj)
            } else if f.kind == .eventfd || f.kind == .timerfd || f.kind == .signalfd { // no path to open
                fd = try createAnonInode(f, inj: inj, scratch: scratch)
            } else {
                let flags = f.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_NOCTTY)
                let r = try inj.rawArgs(.openat, [UInt64(AT_FDCWD), try putString(f.path), UInt64(flags | O_NOCTTY), 0])
                if r < 0 {
                    throw SSIError.sys("PID \(f.sharedID?.split(separator: ":").first.map(String.init) ?? "?") fd \(f.fd): reopen \(f.path)", errno: Int32(-r),
                                       hint: f.kind == .tty ? "the terminal is gone: restart with -t to use yours" : nil)
                }
                fd = UInt64(r)
            }
            try inj.call("dup3 shared", .dup3, fd, target, 0)
            if f.kind == .regular || f.kind == .directory {
                try inj.call("lseek shared", .lseek, target, UInt64(bitPattern: f.position), UInt64(SEEK_SET))
            }
            if !(f.kind == .tty && useCallerTerminal) { try inj.call("close", .close, fd) }
        }
    }

    /// Session leaders lead a new session before they fork, so their children inherit it.
    func becomeSessionLeaderIfNeeded() throws {
        if image.sid == pid { try inj.call("setsid", .setsid) }
    }

    /// Forks a child process with its old PID (clone3 set_tid, run by this process, so the
    /// parent/child link is the original one). The child stops at birth, traced by us.
    func fork(child: ProcessImage) throws -> Tracee {
        // struct clone_args (linux/sched.h): flags, pidfd, child_tid, parent_tid, exit_signal,
        // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        let args: [UInt64] = [ProcessRestorer.sharingFlags(child), 0, 0, 0, UInt64(child.exitSignal ?? SIGCHLD), 0, 0, 0, scratch + 256, 1, 0]
        try mem.write(args.withUnsafeBytes { Array($0) }, to: scratch + 128)
        try mem.write([child.pid].withUnsafeBytes { Array($0) }, to: scratch + 256)
        let r = try inj.rawArgs(.clone3, [scratch + 128, 88])
        if r == -Int64(EEXIST) { throw SSIError(.busy, "PID \(child.pid) is busy (taken while restarting); nothing was changed") }
        if r < 0 { throw SSIError.sys("clone3 of PID \(child.pid) in PID \(pid)", errno: Int32(-r)) }
        let t = Tracee.adoptTraceMe(ProcessID(child.pid))
        switch try t.wait() {
        case .signal(.stop), .event: return t
        case let other: throw SSIError(.system, "forked PID \(child.pid) did not stop as expected (\(other))")
        }
    }

    /// A zombie: make the freshly forked child end with the saved wait status, so that its
    /// parent can still reap it.
    func makeZombie(_ t: Tracee, status: Int32) throws {
        // The child is a copy of this process: it has the same scratch area and gadget.
        let cinj = Injector(pid: t.pid, base: try t.registers(), gadget: inj.gadget)
        let termsig = status & 0x7f
        if termsig != 0 && termsig != 0x7f {
            // Killed by a signal: reset its handler (a zeroed sigaction) and deliver it.
            try RemoteMemory(pid: t.pid).write([UInt8](repeating: 0, count: 32), to: scratch + 1024)
            try cinj.call("reset handler", .rt_sigaction, UInt64(termsig), scratch + 1024, 0, 8)
            try t.setSigmask(0)
            try t.cont(signal: Signal(termsig))
        } else {
            try t.setRegisters(try t.registers().preparedForSyscall(.exit_group, [UInt64((status >> 8) & 0xff)], at: inj.gadget))
            try t.cont()
        }
        while true {
            switch try t.wait() {
            case .exited, .killed: return
            case .signal(let s): try t.cont(signal: s == .trap || s == .stop ? nil : s)
            case .event: try t.cont()
            }
        }
    }

    /// Everything of the process but its threads, ids, credentials and registers.
    func rebuild() throws {
        var clock = PhaseClock()
        let current = MapsEntry.parse(try ProcFS.read("/proc/\(pid)/maps"))

        // File descriptors: keep only the caller's terminal (for -t), at a high number.
        let maxFD = UInt64(max(image.fds.map(\.fd).max() ?? 2, 2))
        let high = maxFD + 10
        if let shared, shared.count > 0, high + 8 >= UInt64(shared.base) {
            throw SSIError(.system, "internal: fd layout of PID \(pid) overlaps the shared descriptions")
        }
        var ttyFD: UInt64? = nil
        if useCallerTerminal, let t = ProcessRestorer.callerTerminalFD() {
            ttyFD = try inj.call("dup terminal", .fcntl, UInt64(t), UInt64(F_DUPFD), high)
        }
        // Close everything inherited but the terminal and the shared descriptions.
        var keep = [UInt64]()
        if let ttyFD { keep.append(ttyFD) }
        if let shared, shared.count > 0 { keep += (0..<shared.count).map { UInt64(shared.base) + UInt64($0) } }
        var from: UInt64 = 0
        // A CLONE_FILES child shares the fd table its parent has just rebuilt.
        let ownTable = image.sharesFilesWithParent != true
        for k in keep.sorted() where ownTable {
            if k > from { try inj.call("close_range", .close_range, from, k - 1, 0) }
            from = k + 1
        }
        if ownTable { try inj.call("close_range", .close_range, from, UInt64(UInt32.max), 0) }
        let imagesFD = try inj.call("open pages", .openat, UInt64(AT_FDCWD), try putString("\(snapshotDir)/\(image.pagesFile)"), UInt64(O_RDONLY | O_CLOEXEC), 0)
        let pagesFD = try inj.call("dup pages fd", .fcntl, imagesFD, UInt64(F_DUPFD_CLOEXEC), high + 1)
        try inj.call("close", .close, imagesFD)

        // Unmap everything inherited but the vDSO/vvar (moved below), the scratch area and the
        // areas this process shares with its parent (VMA.inherited).
        let keepRanges = image.vmas.filter { $0.inherited == true }.map { ($0.start, $0.end) }.sorted { $0.0 < $1.0 }
        for m in current where !m.isSpecialKernelMapping && !(m.start >= scratch && m.end <= scratch + scratchSize) {
            var from = m.start
            for (ks, ke) in keepRanges where ke > from && ks < m.end {
                if ks > from { try inj.call("munmap 0x\(String(from, radix: 16))", .munmap, from, ks - from) }
                from = max(from, ke)
            }
            if from < m.end { try inj.call("munmap 0x\(String(from, radix: 16))", .munmap, from, m.end - from) }
        }
        try moveVDSO(inj: &inj, current: current, reserved: (scratch, scratch + scratchSize))
        clock.mark("restore: teardown, vdso")

        // Memory: map each area, writable while we fill it, then give it its protection.
        var fileFDs = [String: UInt64]()
        for v in image.vmas {
            switch v.kind {
            case .vdso, .vvar, .vvarVclock: continue
            case .sysvShm:
                guard let id = v.sysvShmID else { continue }
                let r = try inj.rawArgs(.shmat, [UInt64(id), v.start, UInt64(v.write ? 0 : SHM_RDONLY) | UInt64(SHM_REMAP)])
                if r < 0 {
                    throw SSIError(.notFound, "PID \(pid) had SysV shared memory \(v.name) (id \(id)) attached at 0x\(String(v.start, radix: 16)), and it cannot be attached now: \(String(cString: strerror(Int32(-r))))",
                                   hint: "restore the segment first with `ssi ipc restart -m FILE`")
                }
                continue
            case .anonymous, .file:
                break
            }
            var prot = (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) | (v.exec ? PROT_EXEC : 0)
            if !v.pages.isEmpty { prot |= PROT_READ | PROT_WRITE }
            if v.inherited == true {
                // Kept from the parent: forget the parent's own pages, write ours over it.
                for d in v.dropPages ?? [] {
                    try inj.call("madvise(DONTNEED)", .madvise, d.address, d.count * SnapshotFormat.pageSize, 4)
                }
                let finalProt = (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) | (v.exec ? PROT_EXEC : 0)
                if !v.pages.isEmpty && finalProt != prot { try inj.call("mprotect", .mprotect, v.start, v.end - v.start, UInt64(prot)) }
                try fillPages(v, pagesFD: pagesFD)
                if !v.pages.isEmpty && finalProt != prot { try inj.call("mprotect", .mprotect, v.start, v.end - v.start, UInt64(finalProt)) }
                continue
            }
            var flags = MAP_FIXED | (v.shared ? MAP_SHARED : MAP_PRIVATE)
            if v.vmFlags.contains("gd") { flags |= MAP_GROWSDOWN }
            var fd = UInt64.max
            if v.kind == .anonymous {
                flags |= MAP_ANONYMOUS
            } else if var path = v.path {
                if let id = v.deletedFileID, let p = pipes?.deletedPath(id) { path = p }
                let mode = (v.shared && v.write) ? O_RDWR : O_RDONLY
                let key = "\(mode):\(path)"
                if let f = fileFDs[key] { fd = f } else {
                    let f0 = try inj.call("open \(path)", .openat, UInt64(AT_FDCWD), try putString(path), UInt64(mode | O_CLOEXEC), 0)
                    fd = try inj.call("dup", .fcntl, f0, UInt64(F_DUPFD_CLOEXEC), high + 2)
                    try inj.call("close", .close, f0)
                    fileFDs[key] = fd
                }
            }
            try inj.call("mmap 0x\(String(v.start, radix: 16)) \(v.name)", .mmap, v.start, v.end - v.start, UInt64(prot), UInt64(flags), fd, v.fileOffset)
            try fillPages(v, pagesFD: pagesFD)
            let finalProt = (v.read ? PROT_READ : 0) | (v.write ? PROT_WRITE : 0) | (v.exec ? PROT_EXEC : 0)
            if finalProt != prot { try inj.call("mprotect", .mprotect, v.start, v.end - v.start, UInt64(finalProt)) }
            // madvise(2) flags that /proc/PID/smaps shows as VmFlags.
            let advice: [String: Int32] = ["dc": 10 /* MADV_DONTFORK */, "dd": 16 /* MADV_DONTDUMP */, "hg": 14 /* MADV_HUGEPAGE */,
                                           "nh": 15 /* MADV_NOHUGEPAGE */, "wf": 18 /* MADV_WIPEONFORK */]
            for f in v.vmFlags { if let a = advice[f] { _ = try inj.raw(.madvise, v.start, v.end - v.start, UInt64(a)) } }
        }
        for (_, fd) in fileFDs { try inj.call("close", .close, fd) }
        clock.mark("restore: memory")

        // mm fields and /proc/PID/exe: prctl(PR_SET_MM, PR_SET_MM_MAP) (Linux 3.18), which
        // unlike the single-field PR_SET_MM options does not need CAP_SYS_RESOURCE.
        // The exe link is left alone when it is already right (a child forked from its restored
        // parent): the kernel refuses to change it while the old file is still mapped, as it
        // is in the areas kept from the parent.
        var exeFD = UInt64(UInt32.max)
        if (try? ProcFS.readLink("/proc/\(pid)/exe")) != image.exe {
            let exeFD0 = try inj.call("open exe \(image.exe)", .openat, UInt64(AT_FDCWD), try putString(image.exe), UInt64(O_RDONLY | O_CLOEXEC), 0)
            exeFD = try inj.call("dup", .fcntl, exeFD0, UInt64(F_DUPFD_CLOEXEC), high + 3)
            try inj.call("close", .close, exeFD0)
        }
        let mm = image.mm
        let auxvAddr = scratch + 8192
        try mem.write(mm.auxv.withUnsafeBytes { Array($0) }, to: auxvAddr)
        var map: [UInt64] = [mm.startCode, mm.endCode, mm.startData, mm.endData, mm.startBrk, mm.brk, mm.startStack,
                             mm.argStart, mm.argEnd, mm.envStart, mm.envEnd, auxvAddr]
        map.append(UInt64(UInt32(mm.auxv.count * 8)) | (exeFD << 32))
        try mem.write(map.withUnsafeBytes { Array($0) }, to: scratch + 4096)
        try inj.prctl(.setMM, PrctlOption.mmMap, scratch + 4096, UInt64(map.count * 8))
        if exeFD != UInt64(UInt32.max) { try inj.call("close", .close, exeFD) }

        // Files, cwd, root, umask.
        if ownTable { try restoreFileDescriptors(inj: inj, scratch: scratch, high: high, putString: putString, ttyFD: ttyFD) }

        // A CLONE_FS child shares the cwd, root and umask its parent has just set.
        let ownFS = image.sharesFSWithParent != true
        if ownFS { try inj.call("umask", .umask, UInt64(image.umask)) }
        if let ttyFD { try inj.call("close", .close, ttyFD) }
        try inj.call("close", .close, pagesFD)

        // Signal handlers (shared by the threads). Our copy's handlers are reset first.
        let saved = Dictionary(image.sigactions.map { ($0.signal, $0) }, uniquingKeysWith: { a, _ in a })
        for sig in Int32(1)...64 where sig != SIGKILL && sig != SIGSTOP {
            let a = saved[sig] ?? SigAction(signal: sig, handler: 0, flags: 0, restorer: 0, mask: 0)
            try mem.write([a.handler, a.flags, a.restorer, a.mask].withUnsafeBytes { Array($0) }, to: scratch)
            let r = try inj.raw(.rt_sigaction, UInt64(sig), scratch, 0, 8)
            if r < 0 && saved[sig] != nil { throw SSIError.sys("rt_sigaction(\(sig)) in PID \(pid)", errno: Int32(-r)) }
        }
        try inj.call("personality", .personality, UInt64(image.personality))
        if image.childSubreaper == true { try inj.prctl(.setChildSubreaper, 1) }
        for l in image.rlimits {
            if let old = ResourceLimits.get(ProcessID(pid), l.resource), old.cur == l.cur && old.max == l.max { continue }
            let r = ResourceLimits.set(ProcessID(pid), l.resource, cur: l.cur, max: l.max)
            if r < 0 { warn("rlimit \(l.resource) of PID \(pid) could not be set to \(l.cur)/\(l.max): \(String(cString: strerror(Int32(-r))))") }
        }
        try? ProcFS.write("/proc/\(pid)/oom_score_adj", "\(image.oomScoreAdj)")
        guard let main = image.threads.first(where: { $0.tid == pid }) ?? image.threads.first else {
            throw SSIError(.corrupt, "snapshot of PID \(pid) has no thread")
        }
        try restoreThreadState(main, inj: inj)
        clock.mark("restore: files, signals, ids")
    }

    /// The saved pages go straight from the pages file into place: one copy, in the kernel.
    private func fillPages(_ v: VMA, pagesFD: UInt64) throws {
        for run in v.pages {
            var done: UInt64 = 0
            let total = run.count * SnapshotFormat.pageSize
            while done < total {
                let n = try inj.call("pread pages into 0x\(String(run.address, radix: 16))", .pread64, pagesFD, run.address + done, total - done, run.fileOffset + done)
                if n == 0 { throw SSIError(.corrupt, "\(snapshotDir)/\(image.pagesFile) is shorter than its page index") }
                done += n
            }
        }
    }

    /// chroot and chdir, done in finish(), once every process of the tree is forked and has
    /// opened its files: paths are resolved in the caller's root, and ssi's paths (snapshot,
    /// /proc/<ssi>/fd/N, files) would not exist inside a chroot. /proc shows the root and the
    /// cwd as ssi sees them: after chroot(2) the cwd is named inside the new root; a cwd
    /// outside the root (chroot without chdir) is entered first.
    private func restoreRootAndCwd() throws {
        guard image.sharesFSWithParent != true else { return }   // CLONE_FS: the parent's
        func inside(_ path: String, _ root: String) -> String? {
            if root == "/" { return path }
            if path == root { return "/" }
            return path.hasPrefix(root + "/") ? String(path.dropFirst(root.count)) : nil
        }
        let cwdInRoot = inside(image.cwd, image.root)
        if cwdInRoot == nil { try inj.call("chdir \(image.cwd)", .chdir, try putString(image.cwd)) }
        if image.root != "/" { try inj.call("chroot \(image.root)", .chroot, try putString(image.root)) }
        if let c = cwdInRoot { try inj.call("chdir \(image.cwd)", .chdir, try putString(c)) }
    }

    /// Per-thread state a thread must set itself.
    private func restoreThreadState(_ t: ThreadImage, inj: Injector) throws {
        // Always set, SS_DISABLE included: the restore shell is a fork of ssi, and fork keeps
        // the alternate signal stack (sigaltstack(2)) the Swift runtime set up for its own
        // crash handler, in memory the process no longer has. A handler with SA_ONSTACK
        // would then get SIGSEGV instead of running.
        let ss = t.altStack
        let flags = ss.flags & 2 == 0 ? UInt64(UInt32(bitPattern: ss.flags & ~1)) : 2 /* SS_DISABLE */
        try mem.write([ss.flags & 2 == 0 ? ss.sp : 0, flags, ss.flags & 2 == 0 ? ss.size : 0].withUnsafeBytes { Array($0) }, to: scratch + 512)
        try inj.call("sigaltstack", .sigaltstack, scratch + 512, 0)
        let name = t.name ?? (t.tid == pid ? image.comm : nil)
        if let name {
            var comm = Array(name.utf8.prefix(15)) + [0]
            comm += Array(repeating: 0, count: 16 - comm.count)
            try mem.write(comm, to: scratch + 544)
            try inj.prctl(.setName, scratch + 544)
        }
        try inj.call("set_tid_address", .set_tid_address, t.clearChildTID)
        if t.robustListHead != 0 { try inj.call("set_robust_list", .set_robust_list, t.robustListHead, t.robustListLength) }
        if let r = t.rseq { try inj.call("rseq register", .rseq, r.pointer, UInt64(r.length), 0, UInt64(r.signature)) }
    }

    /// The other threads, with their old thread ids (clone3 set_tid with CLONE_THREAD).
    func createThreads() throws {
        for t in image.threads where t.tid != pid {
            // CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, as
            // pthread_create does; no stack: the thread never runs before we set its registers.
            let args: [UInt64] = [0x50f00, 0, 0, 0, 0, 0, 0, 0, scratch + 256, 1, 0]
            try mem.write(args.withUnsafeBytes { Array($0) }, to: scratch + 128)
            try mem.write([t.tid].withUnsafeBytes { Array($0) }, to: scratch + 256)
            let r = try inj.rawArgs(.clone3, [scratch + 128, 88])
            if r < 0 { throw SSIError.sys("clone3 of thread \(t.tid) in PID \(pid)", errno: Int32(-r)) }
            let th = Tracee.adoptTraceMe(ProcessID(t.tid))
            switch try th.wait() {
            case .signal(.stop), .event: break
            case let other: throw SSIError(.system, "thread \(t.tid) of PID \(pid) did not stop as expected (\(other))")
            }
            try th.setSigmask(~0)
            let tinj = Injector(pid: ProcessID(t.tid), base: try th.registers(), gadget: inj.gadget)
            try restoreThreadState(t, inj: tinj)
            threadInjectors[t.tid] = tinj
        }
    }

    /// Process groups, after every process exists: leaders first (`leaders`), then members.
    func joinGroup(leaders: Bool, known: Set<Int32>) throws {
        guard image.sid != pid else { return }               // a session leader leads its group
        if leaders && image.pgid == pid {
            try inj.call("setpgid", .setpgid, 0, 0)
        } else if !leaders && image.pgid != pid {
            if known.contains(image.pgid) {
                let r = try inj.raw(.setpgid, 0, UInt64(image.pgid))
                if r < 0 { warn("PID \(pid) could not rejoin process group \(image.pgid): \(String(cString: strerror(Int32(-r))))") }
            } else if !known.contains(image.sid) {
                warn("PID \(pid) belonged to session \(image.sid) / group \(image.pgid), led by processes outside the snapshot; it now runs in ssi's session")
            }
        }
    }

    /// Credentials, the flags they reset, pending signals, and the registers of every thread.
    func finish() throws {
        try restoreRootAndCwd()
        // Credentials last but for what they reset: a uid change clears the dumpable flag and
        // the parent-death signal (commit_creds), so those come after.
        let c = image.credentials
        if c.uids.count == 4 && c.gids.count == 4 {
            try mem.write(c.groups.withUnsafeBytes { Array($0) } + [0], to: scratch)
            try inj.call("setgroups", .setgroups, UInt64(c.groups.count), scratch)
            try inj.call("setresgid", .setresgid, UInt64(c.gids[0]), UInt64(c.gids[1]), UInt64(c.gids[2]))
            try inj.call("setresuid", .setresuid, UInt64(c.uids[0]), UInt64(c.uids[1]), UInt64(c.uids[2]))
        }
        try inj.prctl(.setDumpable, UInt64(image.dumpable))
        if image.parentDeathSignal != 0 { try inj.prctl(.setParentDeathSignal, UInt64(image.parentDeathSignal)) }

        // Pending signals, queued while everything is still blocked, with their siginfo.
        func queue(_ info: Data, tid: Int32?) throws {
            guard info.count == 128 else { return }
            let sig = info.withUnsafeBytes { $0.load(as: Int32.self) }
            try mem.write(Array(info), to: scratch)
            if let tid {
                try inj.call("rt_tgsigqueueinfo(\(sig))", .rt_tgsigqueueinfo, UInt64(pid), UInt64(tid), UInt64(sig), scratch)
            } else {
                try inj.call("rt_sigqueueinfo(\(sig))", .rt_sigqueueinfo, UInt64(pid), UInt64(sig), scratch)
            }
        }
        // The shared descriptions were kept open for the children forked since rebuild().
        if let shared, shared.count > 0 {
            try inj.call("close shared", .close_range, UInt64(shared.base), UInt64(shared.base) + UInt64(shared.count) - 1, 0)
        }
        try restoreTimers()
        for info in image.sharedPending { try queue(info, tid: nil) }
        for t in image.threads { for info in t.pending { try queue(info, tid: t.tid) } }
        try inj.call("munmap scratch", .munmap, scratch, scratchSize)

        // Registers, FPU/AVX state and signal mask of every thread.
        for t in image.threads {
            let th = t.tid == pid ? tracee : Tracee.adoptTraceMe(ProcessID(t.tid))
            try th.setExtendedState(Array(t.xstate))
            try th.setRegisters(try shortenInterruptedSleep(t, SyscallRestart.registersForResume(try Registers(named: t.registers))))
            try th.setSigmask(t.blockedMask)
        }
    }

    /// Interval and POSIX timers, armed with their remaining time (relative to now).
    private func restoreTimers() throws {
        for t in image.intervalTimers ?? [] {
            try mem.write((t.interval + t.value).withUnsafeBytes { Array($0) }, to: scratch)
            try inj.call("setitimer(\(t.which))", .setitimer, UInt64(t.which), scratch, 0)
        }
        guard let timers = image.posixTimers, !timers.isEmpty else { return }
        // PR_TIMER_CREATE_RESTORE_IDS (77, Linux 6.14): timer_create takes the id to use from
        // *timerid instead of choosing one.
        let restoreIDs = try inj.rawPrctl(.timerCreateRestoreIDs, 1, 0, 0, 0) >= 0
        for t in timers.sorted(by: { $0.id < $1.id }) {
            // struct sigevent: sigev_value, sigev_signo, sigev_notify, sigev_notify_thread_id.
            var ev = [UInt8](repeating: 0, count: 64)
            withUnsafeBytes(of: t.sigevValue) { ev.replaceSubrange(0..<8, with: $0) }
            withUnsafeBytes(of: t.signal) { ev.replaceSubrange(8..<12, with: $0) }
            withUnsafeBytes(of: t.notify) { ev.replaceSubrange(12..<16, with: $0) }
            withUnsafeBytes(of: t.notifyTID) { ev.replaceSubrange(16..<20, with: $0) }
            try mem.write(ev, to: scratch)
            try mem.write([t.id].withUnsafeBytes { Array($0) }, to: scratch + 64)
            try inj.call("timer_create(\(t.id))", .timer_create, UInt64(t.clockID), scratch, scratch + 64)
            let got = try mem.readBytes(at: scratch + 64, count: 4).withUnsafeBytes { $0.load(as: Int32.self) }
            if got != t.id { warn("PID \(pid): POSIX timer \(t.id) was restored as timer \(got) (this kernel cannot choose timer ids: PR_TIMER_CREATE_RESTORE_IDS needs Linux 6.14)") }
            if t.value != [0, 0] {
                try mem.write((t.interval + t.value).withUnsafeBytes { Array($0) }, to: scratch + 128)
                try inj.call("timer_settime(\(got))", .timer_settime, UInt64(got), 0, scratch + 128, 0)
            }
        }
        if restoreIDs { _ = try inj.rawPrctl(.timerCreateRestoreIDs, 0, 0, 0, 0) }
    }

    /// Every thread of the process leaves its ptrace stop.
    func detach() {
        if image.jobStopped == true { try? Signal.stop.send(to: ProcessID(pid)) }
        for t in image.threads where t.tid != pid { try? Tracee.adoptTraceMe(ProcessID(t.tid)).detach() }
        try? tracee.detach()
    }

    private func moveVDSO(inj: inout Injector, current: [MapsEntry], reserved: (UInt64, UInt64)) throws {
        let names: [(VMA.Kind, String)] = [(.vvar, "[vvar]"), (.vvarVclock, "[vvar_vclock]"), (.vdso, "[vdso]")]
        var moves = [(from: UInt64, to: UInt64, size: UInt64)]()
        for (kind, name) in names {
            let old = image.vmas.first { $0.kind == kind }
            let now = current.first { $0.name == name }
            switch (old, now) {
            case (nil, nil): continue
            case let (o?, n?):
                guard o.end - o.start == n.size else {
                    throw SSIError(.unsupported, "the snapshot's \(name) is \(o.end - o.start) bytes, this kernel's is \(n.size): it was taken under another kernel",
                                   hint: "restart it on a node running the kernel it was checkpointed on")
                }
                moves.append((n.start, o.start, n.size))
            default:
                throw SSIError(.unsupported, "the snapshot and this kernel disagree on the \(name) mapping: it was taken under another kernel")
            }
        }
        guard moves.contains(where: { $0.from != $0.to }) else { return }
        // Move through a temporary place first, so no move lands on a mapping not yet moved.
        let hole = try findHole(size: moves.reduce(0) { $0 + $1.size } + (1 << 20),
                                avoiding: image.vmas.map { ($0.start, $0.end) } + current.map { ($0.start, $0.end) } + [reserved])
        var tmp = hole
        var staged = [(UInt64, UInt64, UInt64)]()
        for m in moves {
            try inj.call("mremap vdso", .mremap, m.from, m.size, m.size, 3 /* MREMAP_MAYMOVE|MREMAP_FIXED */, tmp)
            staged.append((tmp, m.to, m.size))
            tmp += m.size
        }
        for (from, to, size) in staged {
            try inj.call("mremap vdso", .mremap, from, size, size, 3, to)
        }
    }

    private func restoreFileDescriptors(inj: Injector, scratch: UInt64, high: UInt64, putString: (String, UInt64) throws -> UInt64, ttyFD: UInt64?) throws {
        let pid = image.pid
        // epoll instances last: the fds they watch must exist first.
        for f in image.fds.sorted(by: { ($0.kind == .epoll ? 1 : 0, $0.fd) < ($1.kind == .epoll ? 1 : 0, $1.fd) }) {
            let target = UInt64(f.fd)
            var src: UInt64
            var temporary = true
            if let id = f.sharedID, let i = shared?.index[id], let base = shared?.base {
                // One description shared with other fds: inherited from the root.
                src = UInt64(base + Int32(i))
                temporary = false
            } else {
            switch f.kind {
            case .pipe:
                // The pipe is held by ssi; this process opens its end through /proc, which
                // opens the same pipe (fifo_open), so processes share it as before.
                guard let id = f.pipeID, let path = pipes?.path(id, write: (f.flags & O_ACCMODE) == O_WRONLY) else { continue }
                let mode = (f.flags & O_ACCMODE) == O_WRONLY ? O_WRONLY : O_RDONLY
                src = try inj.call("open pipe end", .openat, UInt64(AT_FDCWD), try putString(path, 0), UInt64(mode | (f.flags & O_NONBLOCK)), 0)
            case .eventfd, .timerfd, .signalfd, .epoll:
                src = try createAnonInode(f, inj: inj, scratch: scratch)
            case .inotify:
                guard let fsObjects else { continue }
                src = try fsObjects.receiveInotify(f, pid: pid, inj: inj)
            case .unixSocket, .tcpSocket:
                // Created in the root before it forked: inherited at its slot.
                guard let id = f.socketID, let slot = shared?.socketSlot[id] else { continue }
                src = UInt64(slot)
                temporary = false
            case .tty where ttyFD != nil:
                src = ttyFD!
                temporary = false
            default:
                let flags = f.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_NOCTTY)
                let path = f.deletedFileID.flatMap { pipes?.deletedPath($0) } ?? f.path
                let r = try inj.rawArgs(.openat, [UInt64(AT_FDCWD), try putString(path, 0), UInt64(flags | O_NOCTTY), 0])
                if r < 0 {
                    throw SSIError.sys("PID \(pid) fd \(f.fd): reopen \(f.path)", errno: Int32(-r),
                                       hint: f.kind == .tty ? "the terminal is gone: restart with -t to use yours" : nil)
                }
                src = UInt64(r)
            }
            }
            if src != target {
                try inj.call("dup3 to fd \(f.fd)", .dup3, src, target, UInt64(f.closeOnExec ? O_CLOEXEC : 0))
                if temporary { try inj.call("close", .close, src) }
            } else if f.closeOnExec {
                try inj.call("fcntl FD_CLOEXEC", .fcntl, target, UInt64(F_SETFD), UInt64(FD_CLOEXEC))
            }
            if (f.kind == .unixSocket || f.kind == .tcpSocket) && f.flags & O_NONBLOCK != 0 {
                try inj.call("fcntl O_NONBLOCK", .fcntl, target, UInt64(F_SETFL), UInt64(O_NONBLOCK))
            }
            if (f.kind == .regular || f.kind == .directory) && f.sharedID == nil {
                try inj.call("lseek fd \(f.fd)", .lseek, target, UInt64(bitPattern: f.position), UInt64(SEEK_SET))
            }
        }
    }

    /// eventfd, timerfd, signalfd, epoll: created anew with the saved state.
    private func createAnonInode(_ f: FileDescriptorImage, inj: Injector, scratch: UInt64) throws -> UInt64 {
        let flags = UInt64(f.flags & O_NONBLOCK)
        switch f.kind {
        case .eventfd:
            let fd = try inj.call("eventfd2", .eventfd2, 0, flags | (f.eventSemaphore == true ? 1 : 0))
            if let n = f.eventCount, n > 0 {
                try mem.write([n].withUnsafeBytes { Array($0) }, to: scratch)
                try inj.call("write eventfd", .write, fd, scratch, 8)
            }
            return fd
        case .timerfd:
            let t = f.timer ?? TimerState(clockID: 1, valueSeconds: 0, valueNanoseconds: 0, intervalSeconds: 0, intervalNanoseconds: 0, ticks: 0)
            let fd = try inj.call("timerfd_create", .timerfd_create, UInt64(t.clockID), flags)
            if t.valueSeconds != 0 || t.valueNanoseconds != 0 {
                // struct itimerspec { it_interval, it_value }, relative to now.
                let spec: [Int64] = [t.intervalSeconds, t.intervalNanoseconds, t.valueSeconds, t.valueNanoseconds]
                try mem.write(spec.withUnsafeBytes { Array($0) }, to: scratch)
                try inj.call("timerfd_settime", .timerfd_settime, fd, 0, scratch, 0)
            }
            if t.ticks > 0 {
                // TFD_IOC_SET_TICKS = _IOW('T', 0, u64): expirations not yet read (needs CONFIG_CHECKPOINT_RESTORE).
                try mem.write([t.ticks].withUnsafeBytes { Array($0) }, to: scratch)
                let r = try inj.raw(.ioctl, fd, 0x4008_5400, scratch)
                if r < 0 { warn("PID \(pid) fd \(f.fd): \(t.ticks) unread timerfd expirations are lost (TFD_IOC_SET_TICKS: \(String(cString: strerror(Int32(-r)))))") }
            }
            return fd
        case .signalfd:
            try mem.write([f.signalMask ?? 0].withUnsafeBytes { Array($0) }, to: scratch)
            return try inj.call("signalfd4", .signalfd4, UInt64.max, scratch, 8, flags)
        case .epoll:
            let fd = try inj.call("epoll_create1", .epoll_create1, 0)
            for t in f.epollTargets ?? [] {
                // struct epoll_event is packed on x86_64: u32 events, u64 data.
                var ev = [UInt8](repeating: 0, count: 12)
                withUnsafeBytes(of: t.events.littleEndian) { ev.replaceSubrange(0..<4, with: $0) }
                withUnsafeBytes(of: t.data.littleEndian) { ev.replaceSubrange(4..<12, with: $0) }
                try mem.write(ev, to: scratch)
                try inj.call("epoll_ctl(ADD \(t.fd))", .epoll_ctl, fd, 1, UInt64(t.fd), scratch)
            }
            return fd
        default:
            throw SSIError(.corrupt, "fd \(f.fd) of PID \(pid) has kind \(f.kind), which is not an anonymous inode")
        }
    }

    /// The lowest gap of `size` bytes above 4 GiB that overlaps none of `ranges`.
    func findHole(size: UInt64, avoiding ranges: [(UInt64, UInt64)]) throws -> UInt64 {
        let sorted = ranges.sorted { $0.0 < $1.0 }
        var candidate: UInt64 = 1 << 32
        for (s, e) in sorted {
            if e <= candidate { continue }
            if s >= candidate + size { break }
            candidate = (e + 0xfff) & ~0xfff
        }
        guard candidate + size < (1 << 47) - (1 << 30) else { throw SSIError(.system, "no free address range for the restorer's scratch page") }
        return candidate
    }
}

/// Something the user should know that does not stop the restart.
func warn(_ text: String) {
    FileHandle.standardError.write(Data("ssi: warning: \(text)\n".utf8))
}

/// The pipes of an application being restarted: ssi creates each one, sets its capacity,
/// refills its bytes, and holds both ends while every process opens its own ends through
/// /proc/<ssi>/fd/N. Opening a pipe end blocks only while the other end has no opener
/// (fifo(7)), and ssi holds both, so no open can block.
final class PipeRegistry {
    private var ends: [UInt64: (r: Int32, w: Int32)] = [:]

    func create(from images: [ProcessImage]) throws {
        for image in images {
            for f in image.fds where f.kind == .pipe {
                guard let id = f.pipeID, ends[id] == nil else { continue }
                let p = try Pipe.create(flags: O_CLOEXEC | O_NONBLOCK)
                ends[id] = (p.read, p.write)
                if let size = f.pipeSize, size > 0 { Pipe.setCapacity(p.write, size) }
                if let data = f.pipeData, !data.isEmpty {
                    let n = data.withUnsafeBytes { Glibc.write(p.write, $0.baseAddress, $0.count) }
                    if n != data.count { throw SSIError(.system, "could not refill pipe \(id) of PID \(image.pid) (\(n) of \(data.count) bytes)") }
                }
            }
        }
    }

    private var deleted: [String: Int32] = [:]

    /// Unlinked files and memfds: recreated here, nameless, with their content (and seals),
    /// and opened by the processes through /proc/<ssi>/fd/N like the pipes.
    func createDeletedFiles(from images: [ProcessImage], snapshotDir: String) throws {
        for image in images {
            for d in image.deletedFiles ?? [] where deleted[d.id] == nil {
                var fd: Int32
                if d.isMemfd {
                    let name = String(d.path.dropFirst("/memfd:".count))
                    fd = try Memfd.create(name: name, flags: Memfd.closeOnExec | Memfd.allowSealing)
                } else {
                    // O_TMPFILE (open(2), 3.11): a file without a name, in the same directory and
                    // so the same file system as before; /tmp if that directory is gone.
                    let oTmpfile: Int32 = 0o20_200_000
                    let dir = (d.path as NSString).deletingLastPathComponent
                    fd = open(dir.isEmpty ? "/tmp" : dir, oTmpfile | O_RDWR | O_CLOEXEC, mode_t(d.mode))
                    if fd < 0 { fd = open("/tmp", oTmpfile | O_RDWR | O_CLOEXEC, mode_t(d.mode)) }
                    if fd < 0 { throw SSIError.sys("recreate the unlinked file \(d.path)", errno: errno) }
                }
                deleted[d.id] = fd
                let src = open("\(snapshotDir)/\(d.contentFile)", O_RDONLY | O_CLOEXEC)
                if src < 0 { throw SSIError.sys("open \(snapshotDir)/\(d.contentFile)", errno: errno) }
                defer { close(src) }
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
                defer { buf.deallocate() }
                while true {
                    let n = read(src, buf.baseAddress, buf.count)
                    if n <= 0 { break }
                    if Glibc.write(fd, buf.baseAddress, n) != n { throw SSIError.sys("write the content of \(d.path)", errno: errno) }
                }
                if d.seals != 0 { FileSeals.add(fd, d.seals) }
            }
        }
    }

    func deletedPath(_ id: String) -> String? {
        deleted[id].map { "/proc/\(getpid())/fd/\($0)" }
    }

    func path(_ id: UInt64, write: Bool) -> String? {
        guard let e = ends[id] else { return nil }
        return "/proc/\(getpid())/fd/\(write ? e.w : e.r)"
    }

    func closeAll() {
        for (_, e) in ends { close(e.r); close(e.w) }
        for (_, fd) in deleted { close(fd) }
        ends = [:]
        deleted = [:]
    }
}

/// The open file descriptions that several fds share (after dup() or fork()), restored once.
final class SharedDescriptions {
    /// One representative fd image per shared description.
    let list: [FileDescriptorImage]
    /// sharedID -> position in `list`.
    let index: [String: Int]
    /// The fd number of the first one in every process; above every fd the restore uses.
    let base: Int32

    /// Socketpairs (both ends in the application): created in the root too, each end at
    /// its own slot after the shared descriptions.
    let socketEnds: [FileDescriptorImage]
    let socketSlot: [UInt32: Int32]
    /// How many fd numbers from `base` are used.
    var count: Int { list.count + socketEnds.count }

    init(images: [ProcessImage]) {
        var list = [FileDescriptorImage]()
        var index = [String: Int]()
        var socketEnds = [FileDescriptorImage]()
        var socketSlot = [UInt32: Int32]()
        for image in images {
            for f in image.fds {
                if f.kind == .unixSocket || f.kind == .tcpSocket, let id = f.socketID, socketSlot[id] == nil {
                    socketSlot[id] = -1
                    socketEnds.append(f)
                }
                guard let id = f.sharedID, index[id] == nil else { continue }
                index[id] = list.count
                list.append(f)
            }
        }
        self.list = list
        self.index = index
        base = (images.flatMap { $0.fds.map(\.fd) }.max() ?? 2) + 64
        for (k, f) in socketEnds.enumerated() { socketSlot[f.socketID!] = base + Int32(list.count + k) }
        self.socketEnds = socketEnds
        self.socketSlot = socketSlot
    }
}
