import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// ssi-init, process 1 of every cluster application (Sources/ssi-init/main.c), saved as what
// it does instead of as its memory.
//
// While its command runs, all ssi-init knows is the command's PID: it has forked it, blocks
// the signals it waits for, and loops on waitpid(2) and sigwaitinfo(2). A new ssi-init given
// that PID (SSI_INIT_RESUME), the saved fds, ids, signal mask and pending signals is the same
// process for everything the application can see: its PID (1), its children, its session,
// its command line. What this saves is the work of a whole process inside a migration's
// freeze: the injected reads of the dump (0.5-1 ms), its memory and pages file, its core
// file's transfer, and on the target the teardown, vDSO move and memory restore (profiled:
// 2.5-4 ms of a small application's 17-25 ms freeze, the init being half its processes).
//
// The restore shell already execs ssi-init as its empty stub (Tracee.restoreStub, a static
// program), stopped by ptrace before its first instruction. For a fresh init the stub is
// exec'd with the saved command line and SSI_INIT_RESUME; the restorer gives it its fds,
// credentials and signals by injected calls as for any process, but leaves its memory and
// puts its registers back as the exec left them, so that once let go it starts from its
// entry point and takes over.

extension FreshInit {
    /// The state of `root`, if it is ssi-init in the state it can be started again from:
    /// process 1 of the application's own PID namespace, running ssi-init with one thread,
    /// no signal handler (ssi-init sets none: SigCgt of /proc/PID/status is 0; signals it
    /// inherited ignored, as SIGPIPE from a launcher that ignores it, are in SigIgn), and
    /// its command, process 2 of the namespace (its first and
    /// only fork), running. Anything else (the command has ended and its status is kept,
    /// another program as process 1, an init a debugger changed) is saved whole, as before.
    ///
    /// An init that has reaped its command names itself `ssi-init-ended` (its status is then
    /// in its memory): a restart gives out PIDs from the bottom again (clone3 set_tid does
    /// not move the namespace's last PID), so a later process may be PID 2 without being
    /// its command. `stopped`: the application is held by the checkpoint, and ssi-init must
    /// be inside sigwaitinfo(2) with no signal taken (rt_sigtimedwait returning -EINTR or a
    /// restart code): stopped just after it took a signal, before it passed it on, or
    /// anywhere else in its loop, it is saved whole, so that nothing it holds is lost.
    static func detect(root: Int32, stopped: Bool = false) -> FreshInit? {
        guard PIDNamespace.isOwnInit(root),
              let exe = try? ProcFS.readLink("/proc/\(root)/exe"), (exe as NSString).lastPathComponent == "ssi-init",
              (try? ProcFS.read("/proc/\(root)/comm"))?.trimmingCharacters(in: .newlines) == "ssi-init",
              let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(root)/task"), tasks.count == 1,
              let status = try? ProcStatus.read(pid: root),
              status.fields["SigCgt"].flatMap({ UInt64($0, radix: 16) }) == 0,
              let arguments = nulSeparated("/proc/\(root)/cmdline"), let environment = nulSeparated("/proc/\(root)/environ")
        else { return nil }
        // Started with a command (`ssi-init [options] -- CMD ...`), not a restore stub.
        guard let dashes = arguments.firstIndex(of: "--"), dashes + 1 < arguments.count else { return nil }
        if stopped {
            guard let regs = try? Tracee.adoptTraceMe(ProcessID(root)).registers(), regs.syscall == .rt_sigtimedwait, regs.returnValue < 0 else { return nil }
        }
        let level = PIDNamespace.appLevel(root: root)
        let children = ((try? ProcFS.read("/proc/\(root)/task/\(root)/children")) ?? "").split(separator: " ").compactMap { Int32($0) }
        let command: Int32 = 2
        guard children.contains(where: { child in
            let ids = PIDNamespace.nsIDs(child)
            return ids.count > level && ids[level] == command && (try? ProcStat.read(pid: child))?.state != "Z"
        }) else { return nil }
        return FreshInit(command: command, arguments: arguments, environment: environment.filter { !$0.hasPrefix(resumeVariable + "=") })
    }

    /// The strings of a /proc file of NUL-terminated ones (cmdline, environ).
    private static func nulSeparated(_ path: String) -> [String]? {
        // ProcFS reads to the end: Data(contentsOf:) stops after the first 4 KiB of a /proc
        // file (st_size 0), and an environment is often longer.
        guard let raw = try? ProcFS.readBytes(path) else { return nil }
        var strings = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if strings.last == "" { strings.removeLast() }
        return strings
    }
}

extension ProcessDumper {
    /// The image of a fresh init (`FreshInit.detect`): what /proc and ptrace show of it (fds,
    /// ids, credentials, limits, its thread's mask and pending signals), no memory, and no
    /// injected reads: its dispositions are the default or SIG_IGN (SigIgn; `detect` checked
    /// that none is caught), and ssi-init sets no alternate stack, timer, parent death signal,
    /// child-subreaper flag (process 1 reaps orphans without it) or securebits. Its
    /// securebits are those it was started with, the daemon's (none normally); they only
    /// come from an injected prctl(2), so the new init gets none set.
    func dumpFreshInit(_ fresh: FreshInit, threads tids: [Int32], fds: [FileDescriptorImage], writer: any ImageWriter,
                       deletedDone: inout Set<String>) throws -> ProcessImage {
        // The caller checked its one thread (Checkpoint.dumpProcesses); a change in between
        // fails the checkpoint, the application going on, rather than lose a thread.
        guard tids == [pid] else {
            throw SSIError(.state, "PID \(pid): ssi-init has \(tids.count) threads, not the one it was seen with; nothing was saved and the application goes on",
                           hint: "checkpoint it again")
        }
        var clock = PhaseClock()
        defer { clock.mark("dump: fresh init") }
        var img = ProcessImage(pid: pid)
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let stat = try ProcStat.read(pid: pid)
        let status = try ProcStatus.read(pid: pid)
        var thread = try dumpThread(pid, saved: nil, injected: InjectedState.PerThread())
        // Addresses in its own memory, which the new init sets up again itself (static
        // glibc's start: its rseq area, robust list and clear_child_tid): registering the
        // old ones would point the kernel at memory the new one does not have.
        (thread.rseq, thread.robustListHead, thread.robustListLength, thread.clearChildTID) = (nil, 0, 0, 0)
        thread.interruptedSleep = nil
        img.threads = [thread]
        img.sharedPending = try main.pendingSiginfo(shared: true).map { Data($0) }
        // SIG_IGN is the handler value 1 (asm-generic/signal-defs.h); its flags and mask do
        // not matter to ssi-init, which never reads them back.
        let ignored = status.fields["SigIgn"].flatMap { UInt64($0, radix: 16) } ?? 0
        img.sigactions = (Int32(1)...64).filter { ignored & (1 << UInt64($0 - 1)) != 0 }
            .map { SigAction(signal: $0, handler: 1, flags: 0, restorer: 0, mask: 0) }
        try dumpProcFields(into: &img, stat: stat, status: status, fds: fds)
        // Pages a pre-copy may have sent already go unused: their file is closed whole.
        _ = try precopied?.pages.finish(sync: false)
        let deleted = try dumpDeletedFiles(fds: fds, vmas: [], writer: writer, done: &deletedDone)
        img.deletedFiles = deleted.isEmpty ? nil : deleted
        img.freshInit = fresh
        return img
    }
}

extension ProcessRestorer {
    /// rebuild() for a fresh init: its fds, terminal, umask, dispositions (all the default),
    /// limits and its thread's state; its memory stays the new ssi-init's.
    func rebuildFreshInit() throws {
        guard !Tracee.restoreStub.isEmpty, (Tracee.restoreStub as NSString).lastPathComponent == "ssi-init" else {
            throw SSIError(.unsupported, "PID \(image.pid) was saved as ssi-init's state alone and needs ssi-init as the restore stub, which is \(Tracee.restoreStub.isEmpty ? "not there" : Tracee.restoreStub); nothing was restarted",
                           hint: "install ssi-init next to ssi (it is built with it), or unset SSI_RESTORE_STUB")
        }
        raiseFileLimitForRestore()
        let fds = try closeInheritedFiles()
        if fds.ownTable { try restoreFileDescriptors(ttyFD: fds.ttyFD) }
        try restoreControllingTerminal()
        try restoreUmask()
        if let ttyFD = fds.ttyFD { try inj.call("close", .close, ttyFD) }
        try restoreSigactions()
        try restoreProcessFlags()
        guard let main = image.threads.first else { throw SSIError(.corrupt, "snapshot of PID \(pid) has no thread") }
        try restoreThreadState(main, inj: inj)
    }

    /// restoreRegisters() for a fresh init: the registers the exec left (its entry point,
    /// the stack with the saved command line and SSI_INIT_RESUME), and the saved mask, which
    /// blocks what it waits for so that the pending signals queued for it stay queued.
    func restoreFreshInitRegisters() throws {
        try tracee.setRegisters(stubRegisters)
        try tracee.setSigmask(image.threads.first?.blockedMask ?? 0)
    }
}
