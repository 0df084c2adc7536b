import CSSILinux
import Foundation
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// PTRACE_SETOPTIONS flags (linux/ptrace.h).
public struct PtraceOptions: OptionSet, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    /// PTRACE_O_TRACEFORK: a fork's child starts traced, stopped.
    public static let traceFork = PtraceOptions(rawValue: 0x2)
    /// PTRACE_O_TRACECLONE: so does a clone's (a thread).
    public static let traceClone = PtraceOptions(rawValue: 0x8)
    /// PTRACE_O_EXITKILL (3.8): the tracee is killed if the tracer exits.
    public static let exitKill = PtraceOptions(rawValue: UInt(CSSI_PTRACE_O_EXITKILL))
    /// PTRACE_O_SUSPEND_SECCOMP (4.3, CONFIG_CHECKPOINT_RESTORE, CAP_SYS_ADMIN): the tracee's
    /// seccomp filters do not apply while we trace it, so that the syscalls we inject in a
    /// sandboxed process are neither refused nor fatal (a filter may kill on any call it does
    /// not expect); they apply again from the detach.
    public static let suspendSeccomp = PtraceOptions(rawValue: 0x200000)
}

/// glibc's rseq registration of a thread (PTRACE_GET_RSEQ_CONFIGURATION).
public struct RseqRegistration: Sendable, Equatable {
    public var pointer: UInt64
    public var length: UInt32
    public var signature: UInt32
}

/// A process (thread) under our ptrace. ptrace(2) accepts requests only from the thread that
/// attached, so a `Tracee` is used from one thread only: it is deliberately not Sendable.
public struct Tracee {
    public let pid: ProcessID

    private init(pid: ProcessID) { self.pid = pid }

    /// A task already under our ptrace: a child that called PTRACE_TRACEME, a task seized
    /// by SeizedApplication (PTRACE_SEIZE + PTRACE_INTERRUPT), or one auto-attached at fork.
    public static func adoptTraceMe(_ pid: ProcessID) -> Tracee { Tracee(pid: pid) }

    /// PTRACE_SEIZE then PTRACE_INTERRUPT (3.4): the task stops without a signal being sent.
    /// Returns nil when it no longer exists; throws the raw errno otherwise, for the caller
    /// to word.
    static func seize(_ tid: ProcessID, of pid: ProcessID) throws -> Tracee? {
        var r = cssi_ptrace(Int32(CSSI_PTRACE_SEIZE), tid.rawValue, 0, PtraceOptions.suspendSeccomp.rawValue)
        // A kernel without CONFIG_CHECKPOINT_RESTORE refuses the option (EINVAL): seized
        // without it, a process under a seccomp filter is refused at the dump.
        if r == -Int(EINVAL) || r == -Int(EPERM) { r = cssi_ptrace(Int32(CSSI_PTRACE_SEIZE), tid.rawValue, 0, 0) }
        if r == -Int(ESRCH) { return nil }
        if r < 0 { throw SSIError.sys("PTRACE_SEIZE of PID \(pid) thread \(tid)", errno: Int32(-r)) }
        let t = Tracee(pid: tid)
        try t.interrupt()
        return t
    }

    /// Creates the empty shell of a process being restored, with pid `pid` (clone3 set_tid,
    /// Linux 5.5, CAP_CHECKPOINT_RESTORE), in the cgroup `cgroup` if given: it calls
    /// PTRACE_TRACEME and execs the restore stub (or stops itself), and never runs its own
    /// code again (`cssi_spawn_restore_shell`). Returns it, or the raw -errno (-EEXIST: pid
    /// in use). `keep` is an fd of ours the shell must still have (FDTransfer.selfPidFD).
    public static func spawnRestoreShell(_ pid: ProcessID, cgroup: Int32?, keep: Int32) -> Result<Tracee, SSIError> {
        let r = restoreStub.withCString { cssi_spawn_restore_shell(pid.rawValue, cgroup ?? -1, $0, keep) }
        if r < 0 { return .failure(SSIError.sys("clone3 with set_tid=\(pid)", errno: -r)) }
        return .success(Tracee(pid: ProcessID(r)))
    }

    /// The same shell as process `pid` of a new PID namespace, with a mount namespace of its
    /// own and that namespace's /proc mounted (`cssi_spawn_restore_ns_shell`): the init of a
    /// cluster application being restored. Returns it with its PID in our namespace.
    /// `arguments` and `environment`, when given, are what the stub is exec'd with instead of
    /// `--restore-stub` and nothing: a new ssi-init that takes over from a saved one.
    public static func spawnRestoreNamespaceShell(_ pid: ProcessID, cgroup: Int32?, keep: Int32,
                                                  arguments: [String]? = nil, environment: [String]? = nil) -> Result<Tracee, SSIError> {
        // Made before the clone: the child may only make async-signal-safe calls.
        func cArray(_ strings: [String]?) -> [UnsafeMutablePointer<CChar>?]? { strings.map { $0.map { strdup($0) } + [nil] } }
        let argv = cArray(arguments), envp = cArray(environment)
        defer { for p in (argv ?? []) + (envp ?? []) { free(p) } }
        let r = restoreStub.withCString { stub in
            argv.withOptionalBuffer { a in
                envp.withOptionalBuffer { e in
                    cssi_spawn_restore_ns_shell(pid.rawValue, cgroup ?? -1, SpawnOptions.Namespaces.mount.rawValue, stub, keep, a, e)
                }
            }
        }
        if r < 0 { return .failure(SSIError.sys("clone3 with CLONE_NEWPID|CLONE_NEWNS and set_tid=\(pid)", errno: -r)) }
        return .success(Tracee(pid: ProcessID(r)))
    }

    /// The program a restore shell execs before it stops: ssi-init, statically linked, next
    /// to our own executable (SSI_RESTORE_STUB names another; empty: none). A copy of ssi or
    /// ssid has hundreds of mappings and a big page table, which fork copies and the restore
    /// tears down again, while the application waits; the stub has eight. Without it the shell
    /// is a copy of ourselves, as before.
    public static let restoreStub: String = {
        if let s = ProcessInfo.processInfo.environment["SSI_RESTORE_STUB"] { return s }
        guard let exe = try? ProcFS.readLink("/proc/self/exe") else { return "" }
        let stub = (exe as NSString).deletingLastPathComponent + "/ssi-init"
        return access(stub, X_OK) == 0 ? stub : ""
    }()

    public enum Stop: Equatable, Sendable {
        case event(Int32)          // PTRACE_EVENT_* stop (group-stop/interrupt: PTRACE_EVENT_STOP)
        case signal(Signal)        // signal-delivery-stop
        case exited(Int32)
        case killed(Signal)

        /// PTRACE_EVENT_STOP: a group-stop or the stop PTRACE_INTERRUPT asked for.
        public static let interruptStop = Stop.event(Int32(CSSI_PTRACE_EVENT_STOP))

        public var ended: Bool {
            switch self {
            case .exited, .killed: return true
            default: return false
            }
        }
    }

    public func wait() throws -> Stop { try wait(noHang: false)! }

    /// The next stop, or nil at once when there is none yet (WNOHANG).
    public func waitIfStopped() throws -> Stop? { try wait(noHang: true) }

    private func wait(noHang: Bool) throws -> Stop? {
        var status: Int32 = 0
        let r = cssi_waitpid(pid.rawValue, &status, noHang ? WNOHANG : 0)
        if noHang && r == 0 { return nil }
        try check(Int(r), "waitpid \(pid)")
        if cssi_wifexited(status) != 0 { return .exited(cssi_wexitstatus(status)) }
        if cssi_wifsignaled(status) != 0 { return .killed(Signal(cssi_wtermsig(status))) }
        let ev = cssi_wptrace_event(status)
        if ev != 0 { return .event(Int32(ev)) }
        return .signal(Signal(cssi_wstopsig(status)))
    }

    public func setOptions(_ options: PtraceOptions) throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_SETOPTIONS), pid.rawValue, 0, options.rawValue), "PTRACE_SETOPTIONS \(pid)")
    }

    public func registers() throws -> Registers {
        var r = Registers.Raw()
        try check(cssi_get_regs(pid.rawValue, &r), "PTRACE_GETREGS \(pid)")
        return Registers(raw: r)
    }

    public func setRegisters(_ regs: Registers) throws {
        var r = regs.raw
        try check(cssi_set_regs(pid.rawValue, &r), "PTRACE_SETREGS \(pid)")
    }

    /// The extended register state (on x86_64 the whole XSAVE area: x87, SSE, AVX...):
    /// PTRACE_GETREGSET of the architecture's note type.
    public func extendedState() throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: Arch.extendedStateMaxSize)
        var len = buf.count
        try check(buf.withUnsafeMutableBytes { cssi_get_regset(pid.rawValue, Arch.extendedStateNote, $0.baseAddress, &len) },
                  "PTRACE_GETREGSET \(Arch.extendedStateName) \(pid)")
        return Array(buf[0..<len])
    }

    public func setExtendedState(_ state: [UInt8]) throws {
        try check(state.withUnsafeBytes { cssi_set_regset(pid.rawValue, Arch.extendedStateNote, $0.baseAddress, $0.count) },
                  "PTRACE_SETREGSET \(Arch.extendedStateName) \(pid)")
    }

    public func sigmask() throws -> UInt64 {
        var m: UInt64 = 0
        try check(withUnsafeMutablePointer(to: &m) { cssi_ptrace(Int32(CSSI_PTRACE_GETSIGMASK), pid.rawValue, 8, UInt(bitPattern: $0)) },
                  "PTRACE_GETSIGMASK \(pid)")
        return m
    }

    public func setSigmask(_ mask: UInt64) throws {
        var m = mask
        try check(withUnsafeMutablePointer(to: &m) { cssi_ptrace(Int32(CSSI_PTRACE_SETSIGMASK), pid.rawValue, 8, UInt(bitPattern: $0)) },
                  "PTRACE_SETSIGMASK \(pid)")
    }

    /// Pending signals, read without dequeuing them (PTRACE_PEEKSIGINFO, Linux 3.10): the
    /// thread's private queue, or the process-wide one with `shared`. 128-byte siginfo each.
    public func pendingSiginfo(shared: Bool) throws -> [[UInt8]] {
        var out = [[UInt8]]()
        var buf = [UInt8](repeating: 0, count: 128 * 32)
        while true {
            var args = cssi_peeksiginfo_args(off: UInt64(out.count), flags: shared ? UInt32(CSSI_PTRACE_PEEKSIGINFO_SHARED) : 0, nr: 32)
            let n = try check(buf.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &args) { cssi_ptrace(Int32(CSSI_PTRACE_PEEKSIGINFO), pid.rawValue, UInt(bitPattern: $0), UInt(bitPattern: b.baseAddress)) }
            }, "PTRACE_PEEKSIGINFO \(pid)")
            if n == 0 { break }
            for i in 0..<n { out.append(Array(buf[(i * 128)..<((i + 1) * 128)])) }
            if n < 32 { break }
        }
        return out
    }

    /// glibc's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION, Linux 5.13); nil if none.
    /// The thread's syscall user dispatch (PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, Linux
    /// 6.11): mode, selector, offset, len; nil when off or when the kernel cannot tell.
    public func syscallUserDispatch() -> [UInt64]? {
        var c: [UInt64] = [0, 0, 0, 0]
        let r = c.withUnsafeMutableBytes { cssi_ptrace(Int32(CSSI_PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG), pid.rawValue, UInt($0.count), UInt(bitPattern: $0.baseAddress)) }
        return r < 0 || c[0] == 0 ? nil : c
    }

    /// Sets it (mode 0: off); -errno or 0.
    @discardableResult
    public func setSyscallUserDispatch(_ config: [UInt64]) -> Int {
        var c = config + Array(repeating: 0, count: max(0, 4 - config.count))
        return c.withUnsafeMutableBytes { cssi_ptrace(Int32(CSSI_PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG), pid.rawValue, UInt($0.count), UInt(bitPattern: $0.baseAddress)) }
    }

    public func rseqConfiguration() throws -> RseqRegistration? {
        var c = cssi_rseq_configuration()
        let r = withUnsafeMutablePointer(to: &c) {
            cssi_ptrace(Int32(CSSI_PTRACE_GET_RSEQ_CONFIGURATION), pid.rawValue, UInt(MemoryLayout<cssi_rseq_configuration>.size), UInt(bitPattern: $0))
        }
        if r < 0 { throw SSIError.sys("PTRACE_GET_RSEQ_CONFIGURATION \(pid)", errno: Int32(-r)) }
        return c.rseq_abi_pointer == 0 ? nil : RseqRegistration(pointer: c.rseq_abi_pointer, length: c.rseq_abi_size, signature: c.signature)
    }

    /// The tracee's seccomp filters, oldest first, each as its BPF program (8-byte struct
    /// sock_filter instructions) and its flags (SECCOMP_FILTER_FLAG_LOG is the one the
    /// kernel reports): PTRACE_SECCOMP_GET_FILTER and PTRACE_SECCOMP_GET_METADATA (ptrace(2),
    /// Linux 4.4 and 4.16; CAP_SYS_ADMIN). Index 0 is the newest filter; ENOENT ends them.
    public func seccompFilters() throws -> [(program: [UInt8], flags: UInt64)] {
        var out: [(program: [UInt8], flags: UInt64)] = []
        for index in 0..<1024 {
            let n = cssi_ptrace(Int32(CSSI_PTRACE_SECCOMP_GET_FILTER), pid.rawValue, UInt(index), 0)
            if n == -Int(ENOENT) { break }
            if n < 0 { throw SSIError.sys("PTRACE_SECCOMP_GET_FILTER \(pid) filter \(index)", errno: Int32(-n)) }
            var program = [UInt8](repeating: 0, count: n * 8)
            let r = program.withUnsafeMutableBytes { cssi_ptrace(Int32(CSSI_PTRACE_SECCOMP_GET_FILTER), pid.rawValue, UInt(index), UInt(bitPattern: $0.baseAddress)) }
            if r != n { throw SSIError.sys("PTRACE_SECCOMP_GET_FILTER \(pid) filter \(index)", errno: r < 0 ? Int32(-r) : EIO) }
            // struct seccomp_metadata { u64 filter_off; u64 flags; }
            var meta: [UInt64] = [UInt64(index), 0]
            let m = meta.withUnsafeMutableBytes { cssi_ptrace(Int32(CSSI_PTRACE_SECCOMP_GET_METADATA), pid.rawValue, 16, UInt(bitPattern: $0.baseAddress)) }
            out.append((program, m < 0 ? 0 : meta[1]))
        }
        return out.reversed()
    }

    /// Tasks our last resume left in single-step mode (PTRACE_SINGLESTEP: TIF_SINGLESTEP,
    /// and the trap flag forced in their flags). The kernel takes a task out of it on its
    /// next resume of another kind (ptrace_resume) or on PTRACE_DETACH (ptrace_disable), but
    /// not when its tracer dies (exit_ptrace detaches without ptrace_disable): a task still
    /// in it then traps at its next instruction or syscall exit with nobody to take the
    /// SIGTRAP, which kills it (seen: a migration's source daemon killed mid-dump, its
    /// application killed by SIGTRAP). `Injector.leaveSingleStep` takes it out.
    static let singleStepped = Mutex<Set<Int32>>([])

    public func singleStep(signal: Signal? = nil) throws {
        Tracee.singleStepped.withLock { _ = $0.insert(pid.rawValue) }
        try check(cssi_ptrace(Int32(CSSI_PTRACE_SINGLESTEP), pid.rawValue, 0, UInt(signal?.rawValue ?? 0)), "PTRACE_SINGLESTEP \(pid)")
    }

    /// PTRACE_SYSCALL (24): runs to the next syscall-enter or syscall-exit stop.
    public func syscallStep() throws {
        try check(cssi_ptrace(24 /* PTRACE_SYSCALL */, pid.rawValue, 0, 0), "PTRACE_SYSCALL \(pid)")
        Tracee.singleStepped.withLock { _ = $0.remove(pid.rawValue) }
    }

    public func cont(signal: Signal? = nil) throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_CONT), pid.rawValue, 0, UInt(signal?.rawValue ?? 0)), "PTRACE_CONT \(pid)")
        Tracee.singleStepped.withLock { _ = $0.remove(pid.rawValue) }
    }

    /// PTRACE_INTERRUPT (3.4) of a seized task: it enters PTRACE_EVENT_STOP.
    public func interrupt() throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_INTERRUPT), pid.rawValue, 0, 0), "PTRACE_INTERRUPT \(pid)")
    }

    /// Lets the process go; it resumes (or stays in the cgroup freezer if that is frozen).
    public func detach(signal: Signal? = nil) throws {
        Tracee.singleStepped.withLock { _ = $0.remove(pid.rawValue) }
        try check(cssi_ptrace(Int32(CSSI_PTRACE_DETACH), pid.rawValue, 0, UInt(signal?.rawValue ?? 0)), "PTRACE_DETACH \(pid)")
    }
}

extension Result where Failure == SSIError {
    /// The errno of a failure, nil on success.
    public var errno: Int32? {
        if case .failure(let e) = self { return e.errno }
        return nil
    }
}

private extension Optional where Wrapped == [UnsafeMutablePointer<CChar>?] {
    /// The array's storage for a C `char *const *`, or NULL when there is no array.
    func withOptionalBuffer<R>(_ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>?) -> R) -> R {
        guard let a = self else { return body(nil) }
        return a.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
