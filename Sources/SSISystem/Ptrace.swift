import CSSILinux
#if canImport(Glibc)
import Glibc
#endif

public typealias UserRegs = cssi_user_regs

/// A process (thread) under our ptrace. ptrace(2) accepts requests only from the thread that
/// attached, so a `Tracee` is used from one thread only: it is deliberately not Sendable.
public struct Tracee {
    public let pid: Int32

    private init(pid: Int32) { self.pid = pid }

    /// A task already under our ptrace: a child that called PTRACE_TRACEME, a task seized
    /// by SeizedApplication (PTRACE_SEIZE + PTRACE_INTERRUPT), or one auto-attached at fork.
    public static func adoptTraceMe(_ pid: Int32) -> Tracee { Tracee(pid: pid) }

    public enum Stop: Equatable {
        case event(Int32)          // PTRACE_EVENT_* stop (group-stop/interrupt: PTRACE_EVENT_STOP)
        case signal(Int32)         // signal-delivery-stop
        case exited(Int32)
        case killed(Int32)
    }

    public func wait() throws -> Stop {
        var status: Int32 = 0
        try check(Int(cssi_waitpid(pid, &status, 0)), "waitpid \(pid)")
        if cssi_wifexited(status) != 0 { return .exited(cssi_wexitstatus(status)) }
        if cssi_wifsignaled(status) != 0 { return .killed(cssi_wtermsig(status)) }
        let ev = cssi_wptrace_event(status)
        if ev != 0 { return .event(Int32(ev)) }
        return .signal(cssi_wstopsig(status))
    }

    public func setOptions(_ options: UInt) throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_SETOPTIONS), pid, 0, options), "PTRACE_SETOPTIONS \(pid)")
    }

    public func registers() throws -> UserRegs {
        var r = UserRegs()
        try check(cssi_get_regs(pid, &r), "PTRACE_GETREGS \(pid)")
        return r
    }

    public func setRegisters(_ regs: UserRegs) throws {
        var r = regs
        try check(cssi_set_regs(pid, &r), "PTRACE_SETREGS \(pid)")
    }

    /// The whole XSAVE area (x87, SSE, AVX, AVX-512...): PTRACE_GETREGSET NT_X86_XSTATE.
    public func xstate() throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: 16384)
        var len = buf.count
        try check(buf.withUnsafeMutableBytes { cssi_get_regset(pid, Int32(CSSI_NT_X86_XSTATE), $0.baseAddress, &len) },
                  "PTRACE_GETREGSET NT_X86_XSTATE \(pid)")
        return Array(buf[0..<len])
    }

    public func setXState(_ state: [UInt8]) throws {
        try check(state.withUnsafeBytes { cssi_set_regset(pid, Int32(CSSI_NT_X86_XSTATE), $0.baseAddress, $0.count) },
                  "PTRACE_SETREGSET NT_X86_XSTATE \(pid)")
    }

    public func sigmask() throws -> UInt64 {
        var m: UInt64 = 0
        try check(withUnsafeMutablePointer(to: &m) { cssi_ptrace(Int32(CSSI_PTRACE_GETSIGMASK), pid, 8, UInt(bitPattern: $0)) },
                  "PTRACE_GETSIGMASK \(pid)")
        return m
    }

    public func setSigmask(_ mask: UInt64) throws {
        var m = mask
        try check(withUnsafeMutablePointer(to: &m) { cssi_ptrace(Int32(CSSI_PTRACE_SETSIGMASK), pid, 8, UInt(bitPattern: $0)) },
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
                withUnsafeMutablePointer(to: &args) { cssi_ptrace(Int32(CSSI_PTRACE_PEEKSIGINFO), pid, UInt(bitPattern: $0), UInt(bitPattern: b.baseAddress)) }
            }, "PTRACE_PEEKSIGINFO \(pid)")
            if n == 0 { break }
            for i in 0..<n { out.append(Array(buf[(i * 128)..<((i + 1) * 128)])) }
            if n < 32 { break }
        }
        return out
    }

    /// glibc's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION, Linux 5.13); nil if none.
    public func rseqConfiguration() throws -> cssi_rseq_configuration? {
        var c = cssi_rseq_configuration()
        let r = withUnsafeMutablePointer(to: &c) {
            cssi_ptrace(Int32(CSSI_PTRACE_GET_RSEQ_CONFIGURATION), pid, UInt(MemoryLayout<cssi_rseq_configuration>.size), UInt(bitPattern: $0))
        }
        if r < 0 { throw SSIError.sys("PTRACE_GET_RSEQ_CONFIGURATION \(pid)", errno: Int32(-r)) }
        return c.rseq_abi_pointer == 0 ? nil : c
    }

    public func singleStep(signal: Int32 = 0) throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_SINGLESTEP), pid, 0, UInt(signal)), "PTRACE_SINGLESTEP \(pid)")
    }

    public func cont(signal: Int32 = 0) throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_CONT), pid, 0, UInt(signal)), "PTRACE_CONT \(pid)")
    }

    /// Lets the process go; it resumes (or stays in the cgroup freezer if that is frozen).
    public func detach(signal: Int32 = 0) throws {
        try check(cssi_ptrace(Int32(CSSI_PTRACE_DETACH), pid, 0, UInt(signal)), "PTRACE_DETACH \(pid)")
    }
}

/// Reads another process's memory. process_vm_readv(2) is the fast path; /proc/PID/mem
/// (which uses FOLL_FORCE) also reads pages the process itself cannot read (PROT_NONE).
public struct RemoteMemory {
    public let pid: Int32

    public init(pid: Int32) { self.pid = pid }

    /// Fills `buffer` from the remote ranges, in order. Returns bytes read.
    public func read(into buffer: UnsafeMutableRawBufferPointer, from ranges: [(UInt64, Int)]) throws -> Int {
        var local = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var done = 0
        var idx = 0
        while idx < ranges.count {
            // IOV_MAX is 1024 per call.
            let batch = ranges[idx..<min(ranges.count, idx + 1024)]
            var remote = batch.map { iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt($0.0)), iov_len: $0.1) }
            let want = batch.reduce(0) { $0 + $1.1 }
            local.iov_base = buffer.baseAddress! + done
            local.iov_len = want
            let n = cssi_process_vm_readv(pid, &local, 1, &remote, UInt(remote.count))
            if n < 0 { throw SSIError.sys("process_vm_readv from PID \(pid)", errno: Int32(-n)) }
            if n != want { throw SSIError(.system, "short read of PID \(pid) memory (\(n) of \(want) bytes)") }
            done += want
            idx += batch.count
        }
        return done
    }

    public func write(_ bytes: UnsafeRawBufferPointer, to address: UInt64) throws {
        var local = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        var remote = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: bytes.count)
        let n = cssi_process_vm_writev(pid, &local, 1, &remote, 1)
        if n < 0 { throw SSIError.sys("process_vm_writev to PID \(pid) at 0x\(String(address, radix: 16))", errno: Int32(-n)) }
    }

    public func write(_ bytes: [UInt8], to address: UInt64) throws {
        try bytes.withUnsafeBytes { (b) throws in try write(b, to: address) }
    }

    public func readBytes(at address: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        _ = try out.withUnsafeMutableBytes { (b) throws in try read(into: b, from: [(address, count)]) }
        return out
    }

    /// /proc/PID/mem read, for ranges process_vm_readv refuses.
    public func forcedRead(into buffer: UnsafeMutableRawBufferPointer, at address: UInt64, fd given: Int32? = nil) throws {
        let path = "/proc/\(pid)/mem"
        let fd = try given ?? Int32(checkLibc("open \(path)") { Int(open(path, O_RDONLY | O_CLOEXEC)) })
        defer { if given == nil { close(fd) } }
        var done = 0
        while done < buffer.count {
            let n = try checkLibc("read \(path) at 0x\(String(address, radix: 16))") {
                pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(Int64(bitPattern: address + UInt64(done))))
            }
            if n == 0 { throw SSIError(.system, "short read of \(path)") }
            done += n
        }
    }
}
