import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Signals: the dispositions (sigactions, shared by the threads) and the signals pending for
// the process and for each thread, with their siginfo. Masks and alternate stacks are
// per-thread state (Threads.swift).

extension ProcessDumper {
    /// The sigaction of every signal that is caught, ignored, or SIG_DFL with flags or a mask
    /// (a handler reset by SA_RESETHAND keeps its flags, which SigCgt/SigIgn do not show; a
    /// program reads them back with sigaction(2)), from the struct kernel_sigaction each
    /// rt_sigaction wrote at 32 bytes times its number (handler, flags, restorer, mask) in
    /// `words` (dumpProcessWide).
    func parseSigactions(_ words: [UInt64], signals: [Int32]) throws -> [SigAction] {
        signals.compactMap { sig in
            let w = Array(words[Int(sig) * 4..<Int(sig) * 4 + 4])
            guard w[0] != 0 || w[1] != 0 || w[3] != 0 else { return nil }
            return SigAction(signal: sig, handler: w[0], flags: w[1], restorer: w[2], mask: w[3])
        }
    }
}

extension ProcessRestorer {
    /// Signal handlers (shared by the threads). Our copy's handlers are reset first: every
    /// signal's struct kernel_sigaction is written in the scratch area (32 bytes each), then
    /// the 62 rt_sigaction calls run as one batch.
    func restoreSigactions() throws {
        let saved = Dictionary(image.sigactions.map { ($0.signal, $0) }, uniquingKeysWith: { a, _ in a })
        let signals = (Int32(1)...64).filter { $0 != SIGKILL && $0 != SIGSTOP }
        let table = scratch + 16384
        var words = [UInt64](repeating: 0, count: 65 * 4)
        for sig in signals {
            let a = saved[sig] ?? SigAction(signal: sig, handler: 0, flags: 0, restorer: 0, mask: 0)
            words.replaceSubrange(Int(sig) * 4..<Int(sig) * 4 + 4, with: [a.handler, a.flags, a.restorer, a.mask])
        }
        try mem.write(words: words, to: table)
        let calls = signals.map { SyscallBatch.Call(.rt_sigaction, UInt64($0), table + UInt64($0) * 32, 0, 8) }
        let results = try runBatch(calls)
        for (sig, r) in zip(signals, results) where r < 0 && saved[sig] != nil {
            throw SSIError.sys("rt_sigaction(\(sig)) in PID \(pid)", errno: Int32(-r))
        }
    }

    /// Signals the restore itself raised (the SIGCHLD of each zombie re-made by exiting
    /// again, of each child stopped again) are taken away before the saved ones are queued:
    /// the program had them already, and its handler would count them twice. rt_sigtimedwait(2)
    /// with a zero timeout dequeues one pending signal of the set (blocked ones too: it is
    /// how blocked signals are waited for), or fails with EAGAIN once none is left.
    func dropRestoreSignals() throws {
        let all = ~UInt64(0) & ~(1 << UInt64(SIGKILL - 1)) & ~(1 << UInt64(SIGSTOP - 1))
        try mem.write(words: [all, 0, 0], to: scratch)     // the set, then a zero timespec
        for _ in 0..<256 {
            let r = try inj.raw(.rt_sigtimedwait, scratch, 0, scratch + 8, 8)
            if r < 0 { break }
        }
    }

    /// Pending signals, queued while everything is still blocked, with their siginfo: the
    /// process-wide ones, then each thread's.
    func queuePendingSignals() throws {
        func queue(_ info: Data, tid: Int32?) throws {
            guard info.count == 128 else { return }
            let sig = info.withUnsafeBytes { $0.load(as: Int32.self) }

            try mem.write(Array(info), to: scratch)
            if let tid {
                // By the thread itself: a kernel-made or tkill'd signal (si_code >= 0, or
                // SI_TKILL: SIGPIPE of a write, pthread_kill) may only be queued by its target
                // (rt_tgsigqueueinfo(2), EPERM otherwise).
                let tinj = tid == image.pid ? inj : threadInjectors[tid] ?? inj
                try tinj.call("rt_tgsigqueueinfo(\(sig)) to thread \(tid)", .rt_tgsigqueueinfo, UInt64(image.pid), UInt64(tid), UInt64(sig), scratch)
            } else {
                try inj.call("rt_sigqueueinfo(\(sig))", .rt_sigqueueinfo, UInt64(image.pid), UInt64(sig), scratch)
            }
        }
        // A stopped process's unblocked signals wait for its stop: queued now, they would be
        // delivered when it leaves the ptrace stop, before the stop signal (synchronous ones
        // such as SIGTRAP first, kernel/signal.c next_signal). They are queued by ssi once it
        // is stopped (detach). Not SI_TKILL or kernel ones (si_code >= 0): only the process
        // itself may queue those (rt_sigqueueinfo(2), EPERM), so they are queued here.
        // In a PID namespace of its own (a cluster application), ssi is outside it and the
        // kernel would zero si_pid of what it queues (a sender from an ancestor namespace):
        // queued here then, before the stop (not yet right for a stopped process).
        func waitsForStop(_ info: Data, mask: UInt64) -> Bool {
            guard image.jobStopped == true, !ownNamespace, info.count == 128 else { return false }
            let (sig, code) = info.withUnsafeBytes { ($0.load(as: Int32.self), $0.load(fromByteOffset: 8, as: Int32.self)) }
            return sig > 0 && sig <= 64 && mask & (1 << UInt64(sig - 1)) == 0 && code < 0 && code != -6 /* SI_TKILL */
        }
        // A periodic timer's pending signal comes from the timer itself (restoreTimers).
        func timersOwn(_ info: Data) -> Bool { ProcessRestorer.timerID(info).map(timersFiringAtOnce.contains) ?? false }
        let allBlocked = image.threads.reduce(~UInt64(0)) { $0 & $1.blockedMask }
        for info in image.sharedPending where !timersOwn(info) {
            if waitsForStop(info, mask: allBlocked) { signalsAfterStop.append((info, nil)); continue }
            try queue(info, tid: nil)
        }
        for info in timerSignalsDue { try queue(info, tid: nil) }
        for t in image.threads {
            for info in t.pending where !timersOwn(info) {
                if waitsForStop(info, mask: t.blockedMask) { signalsAfterStop.append((info, t.tid)); continue }
                try queue(info, tid: t.tid)
            }
        }
    }
}

extension ProcessRestorer {
    /// The POSIX timer a saved siginfo (128 bytes, PTRACE_PEEKSIGINFO) comes from: si_code
    /// SI_TIMER (-2) and its _timer.si_tid (the timer id, at offset 16 after si_signo,
    /// si_errno, si_code and the union's alignment); nil for any other signal.
    static func timerID(_ info: Data) -> Int32? {
        guard info.count == 128 else { return nil }
        return info.withUnsafeBytes { $0.load(fromByteOffset: 8, as: Int32.self) == -2 ? $0.load(fromByteOffset: 16, as: Int32.self) : nil }
    }
}
