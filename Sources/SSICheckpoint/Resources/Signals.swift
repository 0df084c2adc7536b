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
    /// The sigaction of every caught or ignored signal (rt_sigaction run in the process);
    /// the others are SIG_DFL.
    func dumpSigactions(_ s: ScratchPage, status: ProcStatus) throws -> [SigAction] {
        var out = [SigAction]()
        let interesting = status.hexMask("SigCgt") | status.hexMask("SigIgn")
        for sig in Int32(1)...64 where interesting & (1 << UInt64(sig - 1)) != 0 {
            try s.inj.call("rt_sigaction(\(sig))", .rt_sigaction, UInt64(sig), 0, s.address, 8)
            let w = try s.mem.read(UInt64.self, count: 4, at: s.address)
            out.append(SigAction(signal: sig, handler: w[0], flags: w[1], restorer: w[2], mask: w[3]))
        }
        return out
    }
}

extension ProcessRestorer {
    /// Signal handlers (shared by the threads). Our copy's handlers are reset first.
    func restoreSigactions() throws {
        let saved = Dictionary(image.sigactions.map { ($0.signal, $0) }, uniquingKeysWith: { a, _ in a })
        for sig in Int32(1)...64 where sig != SIGKILL && sig != SIGSTOP {
            let a = saved[sig] ?? SigAction(signal: sig, handler: 0, flags: 0, restorer: 0, mask: 0)
            try mem.write(words: [a.handler, a.flags, a.restorer, a.mask], to: scratch)
            let r = try inj.raw(.rt_sigaction, UInt64(sig), scratch, 0, 8)
            if r < 0 && saved[sig] != nil { throw SSIError.sys("rt_sigaction(\(sig)) in PID \(pid)", errno: Int32(-r)) }
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
                try inj.call("rt_tgsigqueueinfo(\(sig))", .rt_tgsigqueueinfo, UInt64(image.pid), UInt64(tid), UInt64(sig), scratch)
            } else {
                try inj.call("rt_sigqueueinfo(\(sig))", .rt_sigqueueinfo, UInt64(image.pid), UInt64(sig), scratch)
            }
        }
        for info in image.sharedPending { try queue(info, tid: nil) }
        for t in image.threads { for info in t.pending { try queue(info, tid: t.tid) } }
    }
}
