import Foundation
import SSIImage
import SSIIPC
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Rebuilds one process from its image, in stages that the restart of a whole tree
/// interleaves (RestartSession, Drivers/Restart.swift): begin, fork children, rebuild, threads, groups,
/// finish. This file holds the stages; each kind of state is restored by the file of its
/// resource (Resources/).
///
/// The process is created empty-handed: clone3 with set_tid gives it its old PID (the root by
/// ssi, every other process by its restored parent), and it stops at once. From then on it
/// never runs its own code: we drive it with injected syscalls (see Injector) that tear down
/// the copy of an address space it inherited, map the snapshot's memory at the old
/// addresses, reopen its files, and set everything else; then we load its registers and let
/// it go.
final class ProcessRestorer {
    let image: ProcessImage
    /// The snapshot the image comes from, for its pages and files.
    let source: any ImageReader
    /// Give the fds that were terminals the caller's terminal (`restart -t`).
    var useCallerTerminal = false
    /// The application's fd -> the fd of ssi restart that replaces it, for fds that were
    /// connected outside the application (RestartOptions.inheritFDs).
    var inheritFDs: [Int32: Int32] = [:]
    /// The application's pipes, held open by ssi during the restart.
    var pipes: PipeRegistry?
    /// Its unlinked files and memfds, recreated by ssi.
    var deletedFiles: DeletedFileRegistry?
    /// Each thread's last capset, made after its seccomp filters are installed (which want
    /// CAP_SYS_ADMIN when no_new_privs is not set, as in a container): Credentials.swift.
    var pendingCapabilities: [(inj: Injector, caps: CapabilitySets, who: String)] = []
    /// Open file descriptions shared by several fds, inherited from the root at fixed numbers.
    var shared: SharedDescriptions?
    /// inotify instances and FIFOs, prepared by ssi (FSObjects).
    var fsObjects: FSObjects?
    /// Names a migration's source copy still holds (NameTakeover.swift).
    var takeover: NameTakeover?
    /// Network namespaces the application made, made again by ssi (saved id -> ssi's fd).
    var netNamespaces: [UInt64: Int32] = [:]
    /// The network namespace that stands for the root's (RestartOptions.rootNetwork).
    var rootNetwork: Int32? = nil
    /// Where the peers of saved TCP connections stand (RestartOptions.tcpPeerCheck).
    var tcpPeerCheck: TCPPeerCheck? = nil
    /// RestartOptions.tcpPeerAcks.
    var tcpPeerAcks: [String: UInt32] = [:]
    /// RestartOptions.tcpKeepSent.
    var tcpKeepSent = false
    /// IPC namespaces the application made, made again with their objects by ssi.
    var ipcNamespaces: [UInt64: Int32] = [:]
    /// Signals of a stopped process queued by ssi once it is stopped again (detach).
    var signalsAfterStop: [(info: Data, tid: Int32?)] = []
    /// Periodic POSIX timers whose signal was pending at checkpoint: armed to expire at once
    /// (restoreTimers), so that the pending signal is the timer's own again and not queued a
    /// second time (queuePendingSignals).
    var timersFiringAtOnce: Set<Int32> = []
    /// The image's fds by number: epoll sets look their entries' files up (a set of 10,000
    /// entries searched the list for each, O(entries x fds)).
    lazy var fdByNumber: [Int32: FileDescriptorImage] = Dictionary(image.fds.map { ($0.fd, $0) }, uniquingKeysWith: { a, _ in a })
    /// Signals of timers that came due while the application was down (restoreTimers),
    /// queued with the pending ones.
    var timerSignalsDue: [Data] = []
    /// It had no controlling terminal, though its session has one (Restart).
    var dropsControllingTerminal = false
    /// Pseudo-terminal pairs made again by ssi.
    var ptys: PTYRegistry?
    /// proc mounts this process makes in a mount namespace another one made.
    var pendingMounts: PendingMounts?
    /// The root's mount namespace in the snapshot (nil: the restorer's), which a process
    /// whose record has no mount namespace lives in.
    var rootMountNamespace: UInt64?
    /// Set for a process whose fresh private anonymous pages are filled after it runs again
    /// (RestartOptions.lazyMemory; LazyMemory.swift), and its address space there.
    var lazy: LazyMemory?
    var lazySpace: LazyMemory.Space?
    /// The fd of this process on ssi's pidfd (FDTransfer.selfPidFD): the root shell has it
    /// at ssi's own number, a forked child at its parent's slot; rebuild() moves it above
    /// the image's fds and finish() closes it. nil: files are taken by ssi's PID.
    var ssiPidFD: UInt64?
    /// The restorer's CPU mask before it pinned itself (Restart): what a thread gets whose
    /// own cannot be set here (none of its CPUs on this node, or not saved), instead of the
    /// restorer's one CPU.
    var unpinnedCPUs: [UInt64]?

    private(set) var tracee: Tracee
    var inj: Injector
    /// The stub's registers as it stopped after its exec: where a fresh init starts from
    /// (FreshInit.swift).
    let stubRegisters: Registers
    /// A scratch area mapped in the process for syscall arguments (and the `syscall`
    /// instruction the injected calls run from, at its end).
    private(set) var scratch: UInt64 = 0
    let scratchSize: UInt64 = 1 << 20
    var mem: RemoteMemory { RemoteMemory(pid: ProcessID(pid)) }
    var threadInjectors: [Int32: Injector] = [:]

    /// The process as ssi addresses it (ptrace, /proc, prlimit): its PID in ssi's namespace.
    /// `image.pid` is its PID as it sees it, which every syscall run inside it uses; the two
    /// differ when the application has a PID namespace of its own (PIDNamespace.swift).
    let pid: Int32
    /// True when the application's processes live in a PID namespace of their own.
    var ownNamespace: Bool { image.pid != pid || pidNamespaceInit }
    /// Set on every process of an application whose root is its namespace's init.
    var pidNamespaceInit = false

    /// Takes over a stopped stub (our traced child, or a child auto-attached at its fork).
    init(image: ProcessImage, source: any ImageReader, stub: Tracee) throws {
        self.image = image
        self.source = source
        self.tracee = stub
        pid = stub.pid.rawValue
        // If ssi dies mid-restore, the half-built processes die with it (PTRACE_O_EXITKILL);
        // forks and clones we inject stop at birth, traced (TRACEFORK, TRACECLONE).
        // Seccomp suspended too: the filters restored last (restoreSeccomp) must not apply
        // to the calls injected after them; forks and clones inherit the options.
        do { try stub.setOptions([.exitKill, .traceFork, .traceClone, .suspendSeccomp]) } catch {
            try stub.setOptions([.exitKill, .traceFork, .traceClone])
        }
        stubRegisters = try stub.registers()
        inj = try Injector(pid: stub.pid, base: stubRegisters)
        if image.needsSyscallStops { Injector.useSyscallStops([stub.pid.rawValue]) }
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

    /// Runs independent calls as one batch (SyscallBatch) from the scratch area's second
    /// half (the first holds single calls' arguments, the last page the gadget).
    func runBatch(_ calls: [SyscallBatch.Call]) throws -> [Int64] {
        try SyscallBatch.run(calls, with: inj, area: scratch + scratchSize / 2, size: Int(scratchSize / 2) - 4096)
    }

    /// Writes a NUL-terminated string in the scratch area at `off`; returns its address.
    func putString(_ s: String, _ off: UInt64 = 0) throws -> UInt64 {
        try mem.write(Array(s.utf8) + [0], to: scratch + off)
        return scratch + off
    }

    // MARK: checks before anything is created

    /// Checks, before creating anything, what can be checked from outside.
    /// `app`: the application's id, when the process is not its root.
    static func preflight(_ image: ProcessImage, useCallerTerminal: Bool, newNamespace: Bool = false, app: Int32? = nil) throws {
        let pid = image.pid
        // In a new PID namespace every number is free: what the node runs does not matter.
        if !newNamespace, kill(pid, 0) == 0 || errno != ESRCH || ProcFS.exists("/proc/\(pid)") {
            if let app, app != pid {
                let holder = ((try? ProcFS.read("/proc/\(pid)/cmdline")) ?? "").split(separator: "\0").joined(separator: " ")
                throw SSIError(.busy, "PID \(pid) (\(image.comm), a process of application \(app)) is held by another process now (\(holder.isEmpty ? "?" : holder)), so application \(app) cannot be restarted with its PIDs; nothing was changed",
                               hint: "end that process (PID \(pid)), then restart again")
            }
            throw SSIError(.busy, "PID \(pid) is busy: a process with that PID exists, so application \(pid) cannot be restarted with its PID; nothing was changed",
                           hint: "if it is the running application, checkpoint it with --kill first; if it is a zombie, its parent must reap it")
        }
        for t in image.threads where !newNamespace && t.tid != pid && (kill(t.tid, 0) == 0 || ProcFS.exists("/proc/\(t.tid)")) {
            throw SSIError(.busy, "thread id \(t.tid) of PID \(pid) is in use by another task; nothing was changed")
        }
        // A file below a mount of the process's own mount namespace is there only once the
        // namespace is made again: opening it then says what is wrong.
        let mounted = (image.namespaces?.mnt?.mounts ?? []).map(\.target)
        func inOwnMount(_ path: String) -> Bool { mounted.contains { path == $0 || path.hasPrefix($0 == "/" ? "/" : $0 + "/") } }
        for f in image.fds where f.kind == .regular && f.deletedFileID == nil && !inOwnMount(f.path) && !(isProcessFile(f) && !newNamespace) {
            var st = stat()
            // An O_PATH fd may be on a symbolic link itself (O_NOFOLLOW) or a socket's file.
            if (f.flags & OpenFlags.path != 0 ? lstat(f.path, &st) : stat(f.path, &st)) != 0 {
                throw SSIError(.notFound, "PID \(pid) fd \(f.fd): file \(f.path) no longer exists", hint: "put the file back where it was, then restart again")
            }
            // An offset past the end is a program's own (lseek(2) allows it): only a file
            // that shrank below it since the checkpoint lost what it pointed at.
            if Int64(st.st_size) < f.position && Int64(st.st_size) < (f.size ?? f.position) && !PseudoFiles.contains(f.path) {
                throw SSIError(.state, "PID \(pid) fd \(f.fd): \(f.path) is now \(st.st_size) bytes, shorter than the saved offset \(f.position)",
                               hint: "restore the file's content (e.g. from a copy taken with the snapshot) before restarting")
            }
        }
        // Programs and libraries (the files of executable areas) must be the
        // ones the process had: a file replaced since (a package upgrade) would give it other
        // code and data at the same addresses (seen: "pread pages ... Bad address", or a
        // restart that succeeded and crashed a moment later). dpkg and rpm give a file its
        // package's mtime, so the same version on another node passes. Data files a program
        // maps and writes are not checked: their changes are the program's own.
        for v in image.vmas where v.kind == .file && v.deletedFileID == nil {
            guard let p = v.path, !inOwnMount(p) else { continue }
            if access(p, R_OK) != 0 {
                throw SSIError(.notFound, "PID \(pid): mapped file \(p) no longer exists or is unreadable", hint: "reinstall the file, then restart again")
            }
            var st = stat()
            if let size = v.fileSize, let mtime = v.fileMTime, stat(p, &st) == 0, Int64(st.st_size) != size || Int64(st.st_mtim.tv_sec) != mtime {
                let when = { (t: Int64) in ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(t))) }
                throw SSIError(.state, "PID \(pid): the file \(p) it runs (mapped at 0x\(String(v.start, radix: 16))) changed since the checkpoint: \(size) bytes modified \(when(mtime)) then, \(st.st_size) bytes modified \(when(Int64(st.st_mtim.tv_sec))) now; its code would not be the process's, so nothing was restarted",
                               hint: "put back the version it had (e.g. reinstall that package version), or restart a snapshot taken after the change")
            }
        }
        // SysV shared memory is not in the snapshot: the segment must exist (ssi ipc restart).
        // In an IPC namespace of its own, the segments come with the snapshot.
        for v in image.vmas where v.kind == .sysvShm && image.namespaces?.ipc == nil && v.removedSegmentFile == nil {
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

    /// Everything of the process but its threads, ids, credentials and registers.
    func rebuild() throws {
        var clock = PhaseClock()
        if image.freshInit != nil {
            try rebuildFreshInit()
            clock.mark("restore: fresh init")
            return
        }
        let current = MapsEntry.parse(try ProcFS.read("/proc/\(pid)/maps"))
        raiseFileLimitForRestore()
        let fds = try closeInheritedFiles()
        let pages = try openPages(high: fds.high)
        // The inherited mappings go and the vDSO moves in one batch (the loop runs from the
        // scratch area, which stays); the first call that fails is named.
        let teardown = unmapInherited(current) + (try moveVDSO(current: current, reserved: (scratch, scratch + scratchSize)))
        for (c, r) in zip(teardown, try runBatch(teardown)) where r < 0 && r > -4096 {
            throw SSIError.sys("\(c.syscall) 0x\(String(c.args[0], radix: 16)) in PID \(pid)", errno: Int32(-r))
        }
        clock.mark("restore: teardown, vdso")
        try restoreMemory(pages: pages, high: fds.high)
        try restoreProtectionKeys()
        // Its noted runs are copied from now on, and its faults served: the steps below may
        // touch those pages already (injected calls, clone3 of its threads).
        if let lazy, let lazySpace {
            if !lazySpace.hasPending { lazySpace.close() } else { lazy.begin(lazySpace) }
        }
        clock.mark("restore: memory")
        try restoreMMFields(high: fds.high)
        // The controlling terminal first: a session leader's fd on /dev/tty opens its
        // controlling terminal (tty(4)), ENXIO without one.
        try restoreControllingTerminal()
        if fds.ownTable { try restoreFileDescriptors(ttyFD: fds.ttyFD) }
        try restoreUmask()
        if let ttyFD = fds.ttyFD { try inj.call("close", .close, ttyFD) }
        try closePages(pages)
        try restoreSigactions()
        try restoreProcessFlags()
        guard let main = image.threads.first(where: { $0.tid == image.pid }) ?? image.threads.first else {
            throw SSIError(.corrupt, "snapshot of PID \(pid) has no thread")
        }
        try restoreThreadState(main, inj: inj)
        clock.mark("restore: files, signals, ids")
    }

    /// Root and cwd, credentials and the flags they reset, timers, pending signals, and the
    /// registers of every thread: once every process of the tree exists.
    func finish() throws {
        try restoreForegroundGroup()
        if dropsControllingTerminal {
            // TIOCNOTTY from a process that is not its session's leader clears only its own
            // controlling terminal (tty_ioctl(4)); /dev/tty opens that terminal. Before the
            // root and cwd: a chroot may have no /dev/tty.
            let fd = try openRaw("/dev/tty", flags: O_RDWR | O_NOCTTY)
            if fd >= 0 {
                let r = try inj.raw(.ioctl, UInt64(fd), 0x5422 /* TIOCNOTTY */, 0)
                _ = try inj.raw(.close, UInt64(fd))
                if r < 0 { warn("PID \(image.pid): could not give up the controlling terminal it did not have: \(String(cString: strerror(Int32(-r))))") }
            }
        }
        try restoreRootAndCwd()
        restoreResourceLimits()
        try restoreAuditAndAutogroup()
        try restoreCredentials()
        // After the credentials: the children and threads that may own them exist, and the
        // owner's credentials recorded by F_SETOWN (which decide who may be signalled) are
        // the process's own, not the restorer's.
        for f in image.fds where f.signalOwner != nil || f.flags & O_ASYNC != 0 {
            try restoreSignalOwner(f, target: UInt64(f.fd))
        }
        if let slot = ssiPidFD, image.sharesFilesWithParent != true { _ = try? inj.raw(.close, slot) }
        ssiPidFD = nil
        // The shared descriptions were kept open for the children forked since rebuild().
        if let shared, shared.count > 0 {
            try inj.call("close shared", .close_range, UInt64(shared.base), UInt64(shared.base) + UInt64(shared.count) - 1, 0)
        }
        // After the last close: closing any fd of a file drops the process's POSIX locks on
        // it (fcntl(2), "record locks are automatically released when the process ... closes
        // any file descriptor referring to a file").
        try restoreLocks()
        // With its credentials (semop checks the array's permissions against them), before
        // its seccomp filters, which could refuse the call.
        try restoreSemaphoreUndo()
        try restoreQueueNotifications()
        try dropRestoreSignals()
        try restoreTimers()
        try queuePendingSignals()
        try restoreSeals()
        if let f = image.lockFuture {
            // After the last mapping the restore makes: MCL_FUTURE locks what is mapped from
            // now on (mlockall(2)); what was locked already has its areas' "lo".
            let r = try inj.raw(.mlockall, UInt64(f))
            if r < 0 { warn("PID \(pid): mlockall(MCL_FUTURE) not made again: \(String(cString: strerror(Int32(-r))))") }
        }
        // Memory-deny-write-execute once no mapping is left to make (it refuses an
        // executable mapping of anonymous memory, as the restore's scratch code is), before
        // the seccomp filters, which could refuse the prctl.
        if let flags = image.mdwe { try inj.prctl(.setMDWE, UInt64(flags), 0, 0, 0) }
        try restoreSeccomp()
        try narrowCapabilities()
        try inj.call("munmap scratch", .munmap, scratch, scratchSize)
        try restoreScheduling()
        if image.freshInit != nil { try restoreFreshInitRegisters() } else { try restoreRegisters() }
    }

    /// Every thread of the process leaves its ptrace stop.
    func detach() {
        Injector.useSyscallStops([pid] + threadInjectors.values.map(\.pid.rawValue), false)
        if image.jobStopped == true {
            // Stopped again by the signal that stopped it, which the parent's wait reports
            // (WSTOPSIG); a stop already reported comes back as SIGSTOP, and the parent
            // takes the new report at once (settleStoppedChildren).
            let sig = image.stopSignal.flatMap { $0 > 0 ? Signal($0) : nil } ?? .stop
            try? sig.send(to: ProcessID(pid))
        }
        let threadIDs = Dictionary(uniqueKeysWithValues: image.threads.map { ($0.tid, (try? taskID($0.tid)) ?? $0.tid) })
        // Syscall user dispatch last, once nothing more is injected: with it on, a syscall
        // made from outside the allowed region raises SIGSYS instead of running.
        for t in image.threads {
            guard let sud = t.syscallUserDispatch, let id = threadIDs[t.tid] else { continue }
            let r = Tracee.adoptTraceMe(ProcessID(t.tid == image.pid ? pid : id)).setSyscallUserDispatch(sud)
            if r < 0 { warn("PID \(image.pid) thread \(t.tid): syscall user dispatch not set again: \(String(cString: strerror(Int32(-r))))") }
        }
        for t in image.threads where t.tid != image.pid {
            if let id = threadIDs[t.tid] { try? Tracee.adoptTraceMe(ProcessID(id)).detach() }
        }
        // Its signals were blocked while it was rebuilt: nothing held for it belongs to it
        // (a task of an earlier process with one of its ids).
        HeldSignals.forget([pid] + Array(threadIDs.values))
        if image.leaderExited == true, let regs = try? tracee.registers(), let gadget = try? Injector.findGadget(pid: ProcessID(pid)) {
            // Its leader had exited: it leaves again with exit(2) (the thread alone; the
            // group goes on), run from the vDSO's syscall instruction once let go, with every
            // signal blocked so that none is delivered to it on the way out.
            try? tracee.setRegisters(regs.preparedForSyscall(.exit, [0], at: gadget))
            try? tracee.setSigmask(~0)
        }
        try? tracee.detach()
        if !signalsAfterStop.isEmpty {
            _ = waitUntilStopped(pid)
            for (info, tid) in signalsAfterStop {
                let e = ThreadFS.queueSignal(Array(info), tgid: pid, tid: tid.flatMap { threadIDs[$0] })
                if e != 0 { warn("PID \(pid): a pending signal could not be queued again: \(String(cString: strerror(e)))") }
            }
        }
    }
}

extension ProcessRestorer {
    /// Children that were stopped and whose stop the parent had already taken with wait(2):
    /// once each is stopped again (after its detach), the parent takes the new report, so
    /// that it does not see the stop twice. wait4(2) with WUNTRACED|WNOHANG run in the parent
    /// (from its vDSO's `syscall`: the scratch area is gone by now) with every signal blocked,
    /// then its final registers and mask are put back.
    func settleStoppedChildren(_ children: [ProcessImage]) {
        let reported = children.filter { $0.jobStopped == true && $0.stopSignal == 0 && $0.zombieStatus == nil }
        guard !reported.isEmpty, let regs = try? tracee.registers(), let mask = try? tracee.sigmask(),
              let waiter = try? Injector(pid: ProcessID(pid), base: regs) else { return }
        defer { try? tracee.setSigmask(mask); try? tracee.setRegisters(regs) }
        try? tracee.setSigmask(~0)
        for child in reported {
            _ = waitUntilStopped((try? childID(child.pid)) ?? child.pid)
            _ = try? waiter.raw(.wait4, UInt64(child.pid), 0, UInt64(WUNTRACED | WNOHANG), 0)
        }
    }

    func waitUntilStopped(_ pid: Int32) -> Bool {
        for _ in 0..<200 {
            if let st = try? ProcStat.read(pid: pid), st.state == "T" { return true }
            usleep(5000)
        }
        return false
    }
}

/// Something the user should know that does not stop the restart.
func warn(_ text: String) {
    FileHandle.standardError.write(Data("ssi: warning: \(text)\n".utf8))
}

extension ProcessImage {
    /// A SIGTRAP handler, a blocked SIGTRAP or one pending: the restorer's injected syscalls
    /// run between syscall stops (Injector.useSyscallStops), not single steps.
    var needsSyscallStops: Bool {
        let trap = Int32(SIGTRAP)
        func isTrap(_ d: Data) -> Bool { d.count >= 4 && d.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) } == trap }
        return sigactions.contains { $0.signal == trap && $0.handler != 0 }
            || sharedPending.contains(where: isTrap)
            || threads.contains { $0.blockedMask & (1 << UInt64(trap - 1)) != 0 || $0.pending.contains(where: isTrap) }
    }
}
