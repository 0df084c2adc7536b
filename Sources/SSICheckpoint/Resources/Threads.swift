import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Registers and threads: every thread's registers, extended (FPU/vector) state, signal
// mask, alternate signal stack, name, clear_child_tid, robust list and rseq area; restart
// creates the threads with their old ids and gives each its state, the registers last.

extension ProcessDumper {
    /// One thread's state, read while it is stopped; `saved` are its registers when the
    /// caller already has them, `injected` what injected syscalls read in it.
    func dumpThread(_ tid: Int32, saved: Registers?, injected: InjectedState.PerThread) throws -> ThreadImage {
        let t = Tracee.adoptTraceMe(ProcessID(tid))
        var thread = ThreadImage(tid: tid)
        thread.registers = try (saved ?? t.registers()).named
        thread.xstate = Data(try t.extendedState())
        thread.blockedMask = try t.sigmask()
        thread.pending = try t.pendingSiginfo(shared: false).map { Data($0) }
        thread.altStack = injected.altStack
        thread.clearChildTID = injected.clearChildTID
        thread.parentDeathSignal = injected.parentDeathSignal == 0 ? nil : injected.parentDeathSignal
        thread.machineCheckKill = injected.machineCheckKill == 2 ? nil : injected.machineCheckKill
        if let r = try t.rseqConfiguration() {
            thread.rseq = RSeq(pointer: r.pointer, length: r.length, signature: r.signature)
        }
        if let list = robustList(of: ProcessID(tid)) { thread.robustListHead = list.head; thread.robustListLength = list.length }
        thread.name = (try? ProcFS.read("/proc/\(pid)/task/\(tid)/comm"))?.trimmingCharacters(in: .newlines)
        thread.syscallUserDispatch = syscallDispatch[tid]
        let (sleep, registers) = try interruptedSleep(tid: tid, registers: try Registers(named: thread.registers))
        thread.interruptedSleep = sleep
        if let registers { thread.registers = registers.named }
        thread.scheduling = Scheduling.read(tid: tid)
        // Capabilities and seccomp mode are per thread (/proc/PID/task/TID/status). Mode 2 is
        // filters; strict mode (1) is refused with the process (dumpIdentity).
        let status = ProcStatus.parse((try? ProcFS.read("/proc/\(pid)/task/\(tid)/status")) ?? "")
        thread.capabilities = CapabilitySets(status: status)
        let creds = ProcessDumper.credentials(status)
        if creds.uids.count == 4 && creds.gids.count == 4 { thread.credentials = creds }
        if let nnp = status.fields["NoNewPrivs"] { thread.noNewPrivs = nnp == "1" }
        if status.fields["Seccomp"] == "2" {
            thread.seccompFilters = try t.seccompFilters().map { SeccompFilter(program: Data($0.program), flags: $0.flags) }
        }
        return thread
    }

    /// What only the thread itself can tell, by syscalls injected in it: its alternate
    /// signal stack and clear_child_tid. Its registers and mask are put back afterwards.
    func dumpThreadInjected(_ s: ScratchPage, tid: Int32, saved: Registers) throws -> InjectedState.PerThread {
        var t = InjectedState.PerThread()
        let tracee = Tracee.adoptTraceMe(ProcessID(tid))
        let regs = tid == pid ? saved : try tracee.registers()
        let tinj = tid == pid ? s.inj : Injector(pid: ProcessID(tid), base: regs, gadget: s.inj.gadget)
        let g = tid == pid ? nil : try SignalMaskGuard(tracee: tracee, saved: regs)
        defer { g?.restore() }
        try tinj.call("sigaltstack", .sigaltstack, 0, s.address)
        let ss = try s.mem.read(UInt64.self, count: 3, at: s.address)
        t.altStack.sp = ss[0]; t.altStack.flags = Int32(truncatingIfNeeded: ss[1]); t.altStack.size = ss[2]
        // PR_GET_TID_ADDRESS needs CONFIG_CHECKPOINT_RESTORE; without it the value stays 0.
        if (try? tinj.prctl(.getTidAddress, s.address)) != nil {
            t.clearChildTID = try s.mem.read(UInt64.self, at: s.address)[0]
        }
        // Per thread too (prctl(2)): the main thread's parent-death signal is read with the
        // process-wide state.
        if tid != pid, (try? tinj.prctl(.getParentDeathSignal, s.address)) != nil {
            t.parentDeathSignal = Int32(truncatingIfNeeded: try s.mem.read(UInt64.self, at: s.address)[0])
        }
        let mce = try tinj.rawPrctl(.machineCheckKillGet, 0, 0, 0, 0)
        if mce >= 0 { t.machineCheckKill = Int32(mce) }
        return t
    }
}

extension ProcessRestorer {
    /// Per-thread state a thread must set itself.
    func restoreThreadState(_ t: ThreadImage, inj: Injector) throws {
        // Always set, SS_DISABLE included: the restore shell is a fork of ssi, and fork keeps
        // the alternate signal stack (sigaltstack(2)) the Swift runtime set up for its own
        // crash handler, in memory the process no longer has. A handler with SA_ONSTACK
        // would then get SIGSEGV instead of running.
        let ss = t.altStack
        let flags = ss.flags & 2 == 0 ? UInt64(UInt32(bitPattern: ss.flags & ~1)) : 2 /* SS_DISABLE */
        try mem.write(words: [ss.flags & 2 == 0 ? ss.sp : 0, flags, ss.flags & 2 == 0 ? ss.size : 0], to: scratch + 512)
        try inj.call("sigaltstack", .sigaltstack, scratch + 512, 0)
        if let mce = t.machineCheckKill {
            // PR_MCE_KILL_SET (1) with PR_MCE_KILL_EARLY (1) or _LATE (0).
            let r = try inj.rawPrctl(.machineCheckKill, 1, UInt64(mce), 0, 0)
            if r < 0 { warn("PID \(image.pid) thread \(t.tid): PR_MCE_KILL \(mce) not set again: \(String(cString: strerror(Int32(-r))))") }
        }
        let name = t.name ?? (t.tid == image.pid ? image.comm : nil)
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

    /// Every thread's seccomp filters, oldest first, each installed by the thread itself
    /// (seccomp(2) SECCOMP_SET_MODE_FILTER from its struct sock_fprog in the scratch area).
    /// The last injected calls of the restore: a filter may forbid what comes after. The
    /// kernel wants no_new_privs or CAP_SYS_ADMIN, as when the application installed them.
    func restoreSeccomp() throws {
        // no_new_privs first, per thread (prctl(2): only the thread itself can set it, and
        // never clear it): here, once every thread and child exists, since a thread or
        // child inherits it from the thread that makes it.
        for t in image.threads where (t.noNewPrivs ?? image.noNewPrivs) == true {
            guard let tinj = t.tid == image.pid ? inj : threadInjectors[t.tid] else { continue }
            try tinj.prctl(.setNoNewPrivs, 1)
        }
        for t in image.threads {
            guard let filters = t.seccompFilters, !filters.isEmpty else { continue }
            let tinj = t.tid == image.pid ? inj : threadInjectors[t.tid]
            guard let tinj else { throw SSIError(.system, "PID \(image.pid) thread \(t.tid): no injector to install its seccomp filters") }
            for (i, f) in filters.enumerated() {
                let count = f.program.count / 8
                guard count > 0, count <= 4096, f.program.count % 8 == 0 else {
                    throw SSIError(.corrupt, "PID \(image.pid) thread \(t.tid): seccomp filter \(i) is \(f.program.count) bytes, not 1 to 4096 instructions")
                }
                // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
                try mem.write(Array(f.program), to: scratch + 4096)
                try mem.write(words: [UInt64(count), scratch + 4096], to: scratch)
                try tinj.call("seccomp filter \(i) of thread \(t.tid)", .seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, f.flags, scratch)
            }
        }
    }

    /// Every thread's scheduling attributes, from outside (Scheduling.swift): after the
    /// last injected call that needs CPU time, since SCHED_IDLE or a nice of 19 would slow
    /// the restore down.
    func restoreScheduling() throws {
        for t in image.threads {
            let task = t.tid == image.pid ? pid : try taskID(t.tid)
            guard let s = t.scheduling else {
                if let m = unpinnedCPUs { _ = TaskScheduling.setAffinity(task, m) }
                continue
            }
            Scheduling.apply(s, task: task, who: "PID \(image.pid) thread \(t.tid)", otherwise: unpinnedCPUs)
        }
    }

    /// The other threads, with their old thread ids (clone3 set_tid with CLONE_THREAD).
    func createThreads() throws {
        for t in image.threads where t.tid != image.pid {
            // CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, as
            // pthread_create does; no stack: the thread never runs before we set its registers.
            let r = try clone3(flags: 0x50f00, exitSignal: 0, tids: PIDNamespace.setTIDs(t.tid, nested: t.nestedTIDs))
            if r < 0 { throw SSIError.sys("clone3 of thread \(t.tid) in PID \(pid)", errno: Int32(-r)) }
            let th = Tracee.adoptTraceMe(ProcessID(try taskID(t.tid)))
            switch try th.wait() {
            case .signal(.stop), .event: break
            case let other: throw SSIError(.system, "thread \(t.tid) of PID \(pid) did not stop as expected (\(other))")
            }
            try th.setSigmask(~0)
            let tinj = Injector(pid: th.pid, base: try th.registers(), gadget: inj.gadget)
            if image.needsSyscallStops { Injector.useSyscallStops([th.pid.rawValue]) }
            try restoreThreadState(t, inj: tinj)
            threadInjectors[t.tid] = tinj
        }
    }

    /// Registers, extended state and signal mask of every thread: the last thing set, with
    /// the syscall-restart rule applied and interrupted sleeps shortened.
    func restoreRegisters() throws {
        for t in image.threads {
            let th = t.tid == image.pid ? tracee : Tracee.adoptTraceMe(ProcessID(try taskID(t.tid)))
            try th.setExtendedState(Array(t.xstate))
            try th.setRegisters(try shortenInterruptedSleep(t, SyscallRestart.registersForResume(try Registers(named: t.registers))))
            try th.setSigmask(t.blockedMask)
        }
    }
}

extension ProcessDumper {
    /// Before a checkpoint's kill, while every thread is still stopped: each thread of a
    /// process that has shared writable memory outliving it (a file, a /dev/shm object, a
    /// SysV segment) forgets its robust futex list. At exit the kernel walks that list and
    /// marks every robust mutex the thread holds FUTEX_OWNER_DIED (set_robust_list(2),
    /// Documentation/locking/robust-futexes.rst); in such memory, which the restart does not
    /// bring back from the snapshot, the restored owner could then not unlock its mutex
    /// (EPERM) and its waiters would get EOWNERDEAD. The snapshot already holds each list's
    /// head, registered again at restart. Private and shared anonymous memory come back from
    /// the snapshot: nothing to do for processes with no other.
    static func forgetRobustLists(_ seized: SeizedApplication) {
        for pid in seized.tree.pids {
            guard let tids = seized.threads[pid] else { continue }
            let handle = seized.exitedLeaders[pid] ?? pid
            guard let maps = try? ProcFS.read("/proc/\(handle)/maps"),
                  MapsEntry.parse(maps).contains(where: { $0.shared && $0.write && $0.inode != 0 && $0.name != "/dev/zero (deleted)" && !$0.name.hasPrefix("[anon_shmem") }),
                  let gadget = try? Injector.findGadget(pid: ProcessID(handle)) else { continue }
            for tid in tids {
                guard let regs = try? Tracee.adoptTraceMe(ProcessID(tid)).registers() else { continue }
                // A NULL head with the struct's size (24 bytes on x86_64) unregisters the list.
                _ = try? Injector(pid: ProcessID(tid), base: regs, gadget: gadget).raw(.set_robust_list, 0, 24)
            }
        }
    }

}

/// The engine's calls for a migration's source copy (SSIProcessTable's Migrate.swift).
public enum MigrationSourceCopy {
    /// The source copy, stopped since its dump, killed once the target's copy runs. Its
    /// threads' robust lists go first, as before a checkpoint's kill: the lists run through
    /// mutexes in the shared files both copies map, and the target's threads have the same
    /// TIDs (the application's PID namespace), so the source's exit would mark
    /// FUTEX_OWNER_DIED every robust mutex the running target copy holds there (LMDB's lock
    /// file, a pthread_mutex in a shared mapping). Seizing a stopped process works
    /// (ptrace(2) PTRACE_SEIZE, then PTRACE_INTERRUPT); if it cannot be seized it is killed
    /// all the same: the copy must go.
    public static func kill(root: Int32) {
        let seized = SeizedApplication(root: root)
        if (try? seized.seize()) != nil {
            ProcessDumper.forgetRobustLists(seized)
            seized.release(signal: .kill)
        }
        Glibc.kill(root, SIGKILL)
    }
}
