import CSSILinux
import Foundation
import SSISystem
import Synchronization

/// Signals a thread dequeued while SwiftSSI ran injected calls in it. A thread that sleeps
/// with a temporary mask (ppoll, pselect6, epoll_pwait, rt_sigsuspend) keeps it while it is
/// held (SignalMaskGuard: PTRACE_SETSIGMASK would drop the mask the kernel saved for it), so a
/// signal that arrives then is delivered on the way back from an injected call: the thread
/// stops in a signal-delivery-stop, where the signal is already off its queue, and resuming
/// it without the signal discards it (ptrace(2)). Ruby's `system` waited forever for the
/// SIGCHLD so lost. Each such signal's siginfo is kept here, by thread, to be saved with the
/// thread's pending signals and queued again before the thread is let go
/// (SeizedApplication.release).
public enum HeldSignals {
    private static let held = Mutex<[Int32: [[UInt8]]]>([:])

    /// Called at a signal-delivery-stop of `t` that is not ours: keeps the signal.
    static func hold(_ t: Tracee) {
        var info = [UInt8](repeating: 0, count: 128)
        let r = info.withUnsafeMutableBytes { cssi_ptrace(Int32(CSSI_PTRACE_GETSIGINFO), t.pid.rawValue, 0, UInt(bitPattern: $0.baseAddress)) }
        guard r >= 0 else { return }
        held.withLock { $0[t.pid.rawValue, default: []].append(info) }
    }

    /// The signals held for thread `tid` (128-byte siginfo each), oldest first.
    public static func of(_ tid: Int32) -> [[UInt8]] { held.withLock { $0[tid] ?? [] } }

    /// Queues the signals held for thread `tid` of process `pid` again, by the thread itself
    /// (rt_tgsigqueueinfo(2): a kernel-made or kill'd signal, si_code >= 0, may only be
    /// queued by its target), its siginfo unchanged, and forgets them. The thread is in a
    /// ptrace stop at its own registers, which it gets back; its siginfo goes below its stack
    /// pointer, well past the red zone (the x86-64 ABI's 128 bytes).
    public static func requeue(tid: Int32, pid: Int32, handle: Int32? = nil) {
        let infos = held.withLock { $0.removeValue(forKey: tid) ?? [] }
        guard !infos.isEmpty else { return }
        let t = Tracee.adoptTraceMe(ProcessID(tid))
        guard let regs = try? t.registers(), let gadget = try? Injector.findGadget(pid: ProcessID(handle ?? pid)) else { return }
        // Blocked while queued, or the call's way back would deliver it at once (and it
        // would be held again). The mask is the thread's own by now: the first injected call
        // already ended any temporary mask of its sleep (restore_saved_sigmask).
        guard let mask = try? t.sigmask() else { return }
        try? t.setSigmask(~0)
        defer { Injector.leaveSingleStep(t); try? t.setRegisters(regs); try? t.setSigmask(mask) }
        // The ids the thread itself knows: its innermost PID namespace's (proc(5), NSpid).
        func inner(_ id: Int32) -> Int32 {
            let s = (try? ProcFS.read("/proc/\(id)/status")) ?? ""
            return s.split(separator: "\n").first { $0.hasPrefix("NSpid:") }?.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.flatMap { Int32($0) } ?? id
        }
        let tgid = inner(pid), me = inner(tid)
        let at = (regs.stackPointer - 4096) & ~UInt64(15)
        for info in infos {
            let sig = info.withUnsafeBytes { $0.load(as: Int32.self) }
            guard (try? RemoteMemory(pid: ProcessID(tid)).write(info, to: at)) != nil else { continue }
            _ = try? Injector(pid: ProcessID(tid), base: regs, gadget: gadget).raw(.rt_tgsigqueueinfo, UInt64(tgid), UInt64(me), UInt64(sig), at)
        }
    }

    /// Forgets what is held for these threads (the application was killed after its dump).
    public static func forget(_ tids: [Int32]) { held.withLock { for t in tids { $0[t] = nil } } }
}
