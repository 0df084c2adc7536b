import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Reads the whole state of one stopped process (see docs/snapshot-format.md for what each
/// field means). The caller holds it in a ptrace stop; this type only reads, except for the
/// short syscalls it injects to learn what /proc does not show (sigactions, sigaltstack,
/// brk, clear_child_tid, pdeath signal), after which the registers are put back.
///
/// This file assembles a ProcessImage; each kind of state is read by the file of its
/// resource (Resources/): Memory, Files, Threads, Signals, Timers, Credentials...
struct ProcessDumper {
    let pid: Int32
    var ignoreUnsupported = false
    /// The parent, when it is part of the application and stopped too: pages still shared
    /// copy-on-write with it are not saved again (see VMA.inherited).
    var parent: Int32? = nil
    /// The system's unix sockets (sock_diag), to recognise socketpairs.
    var unixSockets: [UInt32: UnixSocketInfo] = [:]
    /// The inode of the application root's network namespace; sockets made in another are
    /// marked with theirs (SocketImage.netns). 0: unknown.
    var rootNetworkNamespace: UInt64 = 0
    /// 1 while describing a socket in flight in another (SCM_RIGHTS): no deeper nesting.
    var inFlightDepth = 0
    /// CLOCK_MONOTONIC (ns) when each task was seen stopped (SeizedApplication.stoppedAt).
    var stoppedAt: [Int32: Int64] = [:]
    /// The sleeping tasks' timers before and after the stop (TimerWitness).
    var timerWitness: TimerWitness? = nil
    /// Syscall user dispatch of the threads that had it on (SeizedApplication.syscallDispatch).
    var syscallDispatch: [Int32: [UInt64]] = [:]
    /// The pages copied while the application ran (pre-copy, Drivers/Precopy.swift): they go
    /// on in that pages file, and only what changed since is copied now.
    var precopied: PrecopiedPages? = nil
    /// Shared by the dumps of one checkpoint: what each read of its areas.
    var areas: DumpedAreas? = nil

    /// The image of this process, stopped with its threads `tids` (main thread first), whose
    /// fds were described already (Files.swift, before anything is written). Its pages and
    /// unnamed files go to `writer`; `deletedDone` lists the unnamed files saved already.
    func dumpProcess(threads tids: [Int32], fds: [FileDescriptorImage], writer: any ImageWriter,
                     deletedDone: inout Set<String>) throws -> ProcessImage {
        var img = ProcessImage(pid: pid)
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let saved = try main.registers()
        let stat = try ProcStat.read(pid: pid)
        let status = try ProcStatus.read(pid: pid)
        var clock = PhaseClock()
        // SIGTRAP blocked, caught or pending: injected syscalls between syscall stops, not
        // single steps, which would change them (Injector.useSyscallStops).
        let trapSensitive = ProcessDumper.trapSensitive(pid: pid, tids: tids)
        if trapSensitive { Injector.useSyscallStops(tids) }
        defer { if trapSensitive { Injector.useSyscallStops(tids, false) } }
        var fds = fds
        let inj = try dumpInjected(saved: saved, status: status, threads: tids, fds: &fds)
        clock.mark("dump: injected syscalls")
        for (i, tid) in tids.enumerated() {
            img.threads.append(try dumpThread(tid, saved: tid == pid ? saved : nil, injected: inj.threads[i]))
        }
        // A call the seize itself ended with -EINTR (epoll_wait, semop, sigtimedwait...) goes
        // on as a restart when the application does (SyscallRestart.restartedAfterStop); the
        // image keeps -EINTR, which a restart turns the same way.
        for t in img.threads {
            guard let regs = try? Registers(named: t.registers), let fixed = SyscallRestart.restartedAfterStop(regs) else { continue }
            try Tracee.adoptTraceMe(ProcessID(t.tid)).setRegisters(continuingWait(t, stopped: regs, fixed: fixed))
        }
        img.sharedPending = try main.pendingSiginfo(shared: true).map { Data($0) }
        img.sigactions = inj.sigactions
        img.parentDeathSignal = inj.parentDeathSignal
        img.dumpable = inj.dumpable
        img.childSubreaper = inj.childSubreaper ? true : nil
        img.securebits = inj.securebits == 0 ? nil : inj.securebits
        img.mdwe = inj.mdwe == 0 ? nil : inj.mdwe
        img.memoryMerge = inj.memoryMerge ? true : nil
        img.membarrierRegistrations = inj.membarrier == 0 ? nil : inj.membarrier
        img.lockFuture = inj.lockFuture == 0 ? nil : inj.lockFuture
        img.intervalTimers = inj.intervalTimers.isEmpty ? nil : inj.intervalTimers
        img.timersReadAt = inj.timersReadAt
        img.posixTimers = inj.posixTimers.isEmpty ? nil : inj.posixTimers
        try dumpProcFields(into: &img, stat: stat, status: status, fds: fds)
        // A thread's own credentials are kept only where they are not the process's.
        for i in img.threads.indices where img.threads[i].credentials == img.credentials { img.threads[i].credentials = nil }
        img.mm = try mmFields(stat: stat, brk: inj.brk)
        clock.mark("dump: /proc, fds, registers")
        let pages = try precopied?.pages ?? writer.createFile("pages-\(pid).img")
        img.vmas = try dumpMemory(to: pages)
        clock.mark("dump: memory")
        // Synced by the commit, once the application runs again (ImageFileWriter.finish).
        try pages.finish(sync: false)
        let deleted = try dumpDeletedFiles(fds: fds, vmas: img.vmas, writer: writer, done: &deletedDone)
        img.deletedFiles = deleted.isEmpty ? nil : deleted
        clock.mark("dump: fsync pages")
        return img
    }

    /// What /proc shows of the stopped process besides its threads and memory: its fds
    /// (described already), family, names, file-system context, identity and limits. Shared
    /// by a whole dump and a fresh init's (FreshInit.swift).
    func dumpProcFields(into img: inout ProcessImage, stat: ProcStat, status: ProcStatus, fds: [FileDescriptorImage]) throws {
        img.fds = fds
        img.ppid = stat.ppid; img.pgid = stat.pgid; img.sid = stat.sid
        img.exitSignal = stat.exitSignal
        img.comm = (try? ProcFS.read("/proc/\(pid)/comm"))?.trimmingCharacters(in: .newlines) ?? stat.comm
        img.exe = try ProcFS.readLink("/proc/\(pid)/exe")
        try dumpFSContext(into: &img, status: status)
        try dumpIdentity(into: &img, status: status)
    }

    /// Whether SIGTRAP is blocked, caught, ignored or pending in the process or one of its
    /// threads (/proc/PID/task/TID/status SigBlk, SigCgt, SigIgn, SigPnd, ShdPnd: bit 4 is
    /// SIGTRAP). An ignored one too: the forced SIGTRAP of a single step or an int3 resets an
    /// ignored handler to SIG_DFL (force_sig_info_to_task).
    static func trapSensitive(pid: Int32, tids: [Int32]) -> Bool {
        for tid in tids {
            guard let text = try? ProcFS.read("/proc/\(pid)/task/\(tid)/status") else { continue }
            for line in text.split(separator: "\n") where ["SigBlk:", "SigCgt:", "SigIgn:", "SigPnd:", "ShdPnd:"].contains(where: { line.hasPrefix($0) }) {
                if let v = UInt64(line.split(separator: "\t").last ?? "", radix: 16), v & (1 << (SIGTRAP - 1)) != 0 { return true }
            }
        }
        return false
    }

    // MARK: state that needs injected syscalls

    struct InjectedState {
        struct PerThread {
            var altStack = AltStack()
            var clearChildTID: UInt64 = 0
            var parentDeathSignal: Int32 = 0
            var machineCheckKill: Int32 = 2
        }
        var sigactions: [SigAction] = []
        var brk: UInt64 = 0
        var parentDeathSignal: Int32 = 0
        var dumpable: Int32 = 1
        var childSubreaper = false
        var securebits: UInt32 = 0
        var mdwe: UInt32 = 0
        var memoryMerge = false
        var membarrier: UInt32 = 0
        var lockFuture: Int32 = 0
        var intervalTimers: [IntervalTimer] = []
        var posixTimers: [PosixTimer] = []
        /// When the timers were read: the restart takes the time since off their time left.
        /// Stamped once they are (the thread dumps after them can take milliseconds, a sleep's
        /// measure up to three restarts: time that would count as not elapsed, every timer
        /// firing that much late).
        var timersReadAt: ClockStamp? = nil
        var threads: [PerThread] = []
    }

    /// Runs the syscalls that read what /proc does not show, in the process (main thread)
    /// and in each of its threads for per-thread state; every task's registers and signal
    /// mask are put back afterwards. The process-wide reads (64 of them) run as one batch
    /// (SyscallBatch): one resume of the process instead of one per call.
    func dumpInjected(saved: Registers, status: ProcStatus, threads tids: [Int32], fds: inout [FileDescriptorImage]) throws -> InjectedState {
        var st = InjectedState()
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let inj = try Injector(pid: ProcessID(pid), base: saved)
        let guardMain = try SignalMaskGuard(tracee: main, saved: saved)
        defer { guardMain.restore() }
        // Page 0: single calls; page 1: the batch's results; pages 2-3: the batch itself,
        // executable. A system that refuses executable anonymous memory gets single calls.
        let size = UInt64(ScratchPage.size)
        var exec = true
        var r = try inj.raw(.mmap, 0, size, UInt64(PROT_READ | PROT_WRITE | PROT_EXEC), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0)
        if r < 0 && r > -4096 {
            exec = false
            r = Int64(bitPattern: try inj.call("mmap scratch pages", .mmap, 0, size, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0))
        }
        let scratch = UInt64(bitPattern: r)
        defer { _ = try? inj.raw(.munmap, scratch, size) }
        st.lockFuture = lockedFuture(scratch: scratch, before: status)
        let s = ScratchPage(inj: inj, address: scratch, mem: RemoteMemory(pid: ProcessID(pid)), batchArea: exec ? scratch + 8192 : nil)
        try dumpProcessWide(s, into: &st)
        st.posixTimers = try dumpPosixTimers(s)
        st.timersReadAt = ClockStamp(monotonic: Clock.monotonicNanoseconds(), realtime: Clock.nanoseconds(Clock.realtime), bootID: Clock.bootID())
        try markReportedEdges(s, fds: &fds)
        for tid in tids { st.threads.append(try dumpThreadInjected(s, tid: tid, saved: saved)) }
        return st
    }

    /// Signal dispositions, brk, the prctl flags and the interval timers, in one batch whose
    /// results land in the scratch's second page.
    func dumpProcessWide(_ s: ScratchPage, into st: inout InjectedState) throws {
        let out = s.address + 4096
        let sigOut = { (sig: Int32) in out + UInt64(sig) * 32 }          // 32 bytes each, up to 64 * 32
        let timerOut = { (which: Int32) in out + 2112 + UInt64(which) * 32 }
        let (pdeathOut, subreaperOut) = (out + 2240, out + 2248)
        let signals = (Int32(1)...64).filter { $0 != SIGKILL && $0 != SIGSTOP }
        var calls = signals.map { SyscallBatch.Call(.rt_sigaction, UInt64($0), 0, sigOut($0), 8) }
        calls += (Int32(0)...2).map { SyscallBatch.Call(.getitimer, UInt64($0), timerOut($0)) }
        calls += [SyscallBatch.Call(.brk, 0),
                  SyscallBatch.Call(.prctl, UInt64(PrctlOption.getParentDeathSignal.rawValue), pdeathOut),
                  SyscallBatch.Call(.prctl, UInt64(PrctlOption.getDumpable.rawValue)),
                  SyscallBatch.Call(.prctl, UInt64(PrctlOption.getChildSubreaper.rawValue), subreaperOut),
                  SyscallBatch.Call(.prctl, UInt64(PrctlOption.getSecurebits.rawValue))]
        // Last, and allowed to fail (EINVAL before Linux 6.3 and 6.4, or without KSM).
        let optional = [SyscallBatch.Call(.prctl, UInt64(PrctlOption.getMDWE.rawValue), 0, 0, 0, 0),
                        SyscallBatch.Call(.prctl, UInt64(PrctlOption.getMemoryMerge.rawValue), 0, 0, 0, 0),
                        SyscallBatch.Call(.membarrier, 512 /* MEMBARRIER_CMD_GET_REGISTRATIONS, 6.3 */, 0, 0)]
        calls += optional
        let results = try SyscallBatch.run(calls, with: s.inj, area: s.batchArea, size: ScratchPage.size - 8192)
        for (c, r) in zip(calls.dropLast(optional.count), results) where r < 0 && r > -4096 {
            throw SSIError.sys("\(c.syscall)(\(c.args.first ?? 0)) in PID \(pid)", errno: Int32(-r))
        }
        let words = try s.mem.read(UInt64.self, count: 2256 / 8, at: out)
        st.sigactions = try parseSigactions(words, signals: signals)
        st.intervalTimers = (Int32(0)...2).compactMap { which in
            let v = (0..<4).map { Int64(bitPattern: words[(2112 + Int(which) * 32) / 8 + $0]) }
            return v[2] != 0 || v[3] != 0 ? IntervalTimer(which: which, interval: [v[0], v[1]], value: [v[2], v[3]]) : nil
        }
        let n = signals.count + 3
        st.brk = UInt64(bitPattern: results[n])
        st.parentDeathSignal = Int32(truncatingIfNeeded: words[2240 / 8])
        st.dumpable = Int32(truncatingIfNeeded: results[n + 2])
        st.childSubreaper = UInt32(truncatingIfNeeded: words[2248 / 8]) != 0
        st.securebits = UInt32(truncatingIfNeeded: results[n + 4])
        st.mdwe = results[n + 5] > 0 ? UInt32(truncatingIfNeeded: results[n + 5]) : 0
        st.memoryMerge = results[n + 6] == 1
        st.membarrier = results[n + 7] > 0 ? UInt32(truncatingIfNeeded: results[n + 7]) : 0
    }

    /// mlockall(2) MCL_FUTURE leaves no mark in /proc but on what is mapped afterwards: the
    /// scratch area just mapped is then locked (VmLck of /proc/PID/status grew), and, without
    /// MCL_ONFAULT, already faulted in (present in pagemap before anything touched it).
    func lockedFuture(scratch: UInt64, before: ProcStatus) -> Int32 {
        guard let after = try? ProcStatus.read(pid: pid), (after.ints("VmLck").first ?? 0) > (before.ints("VmLck").first ?? 0) else { return 0 }
        let fd = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 2 }
        defer { close(fd) }
        var e: UInt64 = 0
        let present = pread(fd, &e, 8, off_t(scratch / SnapshotFormat.pageSize * 8)) == 8 && e & (1 << 63) != 0
        return present ? 2 /* MCL_FUTURE */ : 2 | 4 /* MCL_ONFAULT */
    }
}

/// Pages mapped in a stopped process for the results of syscalls injected in it: the first
/// for single calls, the second for a batch's results, the last two for the batch itself
/// (nil when the process may not have executable anonymous memory).
struct ScratchPage {
    static let size = 16384
    let inj: Injector
    let address: UInt64
    let mem: RemoteMemory
    var batchArea: UInt64? = nil
}
