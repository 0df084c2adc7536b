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
    /// The pages copied while the application ran (pre-copy, Drivers/Precopy.swift): they go
    /// on in that pages file, and only what changed since is copied now.
    var precopied: PrecopiedPages? = nil

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
        let inj = try dumpInjected(saved: saved, status: status, threads: tids)
        clock.mark("dump: injected syscalls")
        for (i, tid) in tids.enumerated() {
            img.threads.append(try dumpThread(tid, saved: tid == pid ? saved : nil, injected: inj.threads[i]))
        }
        img.sharedPending = try main.pendingSiginfo(shared: true).map { Data($0) }
        img.sigactions = inj.sigactions
        img.parentDeathSignal = inj.parentDeathSignal
        img.dumpable = inj.dumpable
        img.childSubreaper = inj.childSubreaper ? true : nil
        img.securebits = inj.securebits == 0 ? nil : inj.securebits
        img.intervalTimers = inj.intervalTimers.isEmpty ? nil : inj.intervalTimers
        img.posixTimers = inj.posixTimers.isEmpty ? nil : inj.posixTimers
        img.fds = fds
        img.ppid = stat.ppid; img.pgid = stat.pgid; img.sid = stat.sid
        img.exitSignal = stat.exitSignal
        img.comm = (try? ProcFS.read("/proc/\(pid)/comm"))?.trimmingCharacters(in: .newlines) ?? stat.comm
        img.exe = try ProcFS.readLink("/proc/\(pid)/exe")
        try dumpFSContext(into: &img, status: status)
        try dumpIdentity(into: &img, status: status)
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

    /// Whether SIGTRAP is blocked, caught or pending in the process or one of its threads
    /// (/proc/PID/task/TID/status SigBlk, SigCgt, SigPnd, ShdPnd: bit 4 is SIGTRAP).
    static func trapSensitive(pid: Int32, tids: [Int32]) -> Bool {
        for tid in tids {
            guard let text = try? ProcFS.read("/proc/\(pid)/task/\(tid)/status") else { continue }
            for line in text.split(separator: "\n") where ["SigBlk:", "SigCgt:", "SigPnd:", "ShdPnd:"].contains(where: { line.hasPrefix($0) }) {
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
        }
        var sigactions: [SigAction] = []
        var brk: UInt64 = 0
        var parentDeathSignal: Int32 = 0
        var dumpable: Int32 = 1
        var childSubreaper = false
        var securebits: UInt32 = 0
        var intervalTimers: [IntervalTimer] = []
        var posixTimers: [PosixTimer] = []
        var threads: [PerThread] = []
    }

    /// Runs the syscalls that read what /proc does not show, in the process (main thread)
    /// and in each of its threads for per-thread state; every task's registers and signal
    /// mask are put back afterwards.
    func dumpInjected(saved: Registers, status: ProcStatus, threads tids: [Int32]) throws -> InjectedState {
        var st = InjectedState()
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let inj = try Injector(pid: ProcessID(pid), base: saved)
        let guardMain = try SignalMaskGuard(tracee: main, saved: saved)
        defer { guardMain.restore() }
        let scratch = try inj.call("mmap scratch page", .mmap, 0, 4096, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0)
        defer { _ = try? inj.raw(.munmap, scratch, 4096) }
        let s = ScratchPage(inj: inj, address: scratch, mem: RemoteMemory(pid: ProcessID(pid)))
        st.sigactions = try dumpSigactions(s, status: status)
        st.brk = try inj.call("brk(0)", .brk, 0)
        (st.parentDeathSignal, st.dumpable, st.childSubreaper) = try dumpProcessFlags(s)
        st.securebits = UInt32(truncatingIfNeeded: try inj.prctl(.getSecurebits))
        // Timers: remaining time and interval, as getitimer/timer_gettime report them.
        st.intervalTimers = try dumpIntervalTimers(s)
        st.posixTimers = try dumpPosixTimers(s)
        for tid in tids { st.threads.append(try dumpThreadInjected(s, tid: tid, saved: saved)) }
        return st
    }
}

/// A page mapped in a stopped process for the results of syscalls injected in it.
struct ScratchPage {
    let inj: Injector
    let address: UInt64
    let mem: RemoteMemory
}
