import CSSILinux
import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Interrupted relative sleeps wake at the moment they would have without the checkpoint, in
// CLOCK_MONOTONIC terms on the same machine (boot).
//
// When the checkpoint stops a thread asleep in nanosleep(2) or in a relative
// clock_nanosleep(2), the kernel ends the sleep with -ERESTART_RESTARTBLOCK and, if the
// caller gave a `rem` buffer, writes the time left into it (do_nanosleep and
// nanosleep_copyout, kernel/time/hrtimer.c). The expiry itself stays in the task's
// restart_block, which a restarted task does not have, so restart re-issues the syscall
// (Arch.registersForResume) with its request pointed at `rem`, into which it writes the
// time left minus the time elapsed since the thread stopped, at least 0.
//
// Without a `rem` buffer (usleep(3) passes NULL) the time left is known nowhere the
// checkpoint can read it: the sleep restarts with its whole duration, as before.

/// CLOCK_MONOTONIC in nanoseconds.
func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// This boot's id (random(4), /proc/sys/kernel/random/boot_id): CLOCK_MONOTONIC values of
/// different boots cannot be compared.
func currentBootID() -> String {
    (try? ProcFS.read("/proc/sys/kernel/random/boot_id"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
}

/// Clocks whose time goes on while the application is down; a sleep on a CPU-time clock
/// keeps its time left as it was.
private let clocksThatRun: Set<Int32> = [0 /* REALTIME */, 1 /* MONOTONIC */, 7 /* BOOTTIME */, 8 /* REALTIME_ALARM */,
                                         9 /* BOOTTIME_ALARM */, 11 /* TAI */]

extension ProcessDumper {
    /// The interrupted relative sleep thread `tid` is in, if any, with the time it had left.
    func interruptedSleep(tid: Int32, registers: UserRegs) throws -> InterruptedSleep? {
        guard let call = Arch.interruptedRelativeSleep(registers) else { return nil }
        guard call.rem != 0 else {
            warn("PID \(pid) thread \(tid) is in a relative sleep with no buffer for the time left (rem == NULL, as usleep(3) passes): after restart it sleeps its whole duration again")
            return nil
        }
        // struct timespec { tv_sec; tv_nsec }. Through /proc/PID/mem: process_vm_readv would
        // unshare a page still shared copy-on-write with the parent (see dumpMemory).
        var ts: (Int64, Int64) = (0, 0)
        try withUnsafeMutableBytes(of: &ts) { try RemoteMemory(pid: pid).forcedRead(into: $0, at: call.rem) }
        return InterruptedSleep(clockID: call.clockID, remainingNanoseconds: ts.0 * 1_000_000_000 + ts.1,
                                monotonicAtCheckpoint: stoppedAt[tid] ?? monotonicNanoseconds(), bootID: currentBootID())
    }
}

extension ProcessRestorer {
    /// The registers thread `t` resumes with: `regs` (Arch.registersForResume), with an
    /// interrupted relative sleep shortened by the time elapsed since the checkpoint.
    func shortenInterruptedSleep(_ t: ThreadImage, _ regs: UserRegs) throws -> UserRegs {
        guard let sleep = t.interruptedSleep, let call = Arch.interruptedRelativeSleep(try UserRegs(named: t.registers)), call.rem != 0 else {
            return regs
        }
        var left = sleep.remainingNanoseconds
        if clocksThatRun.contains(sleep.clockID) {
            if sleep.bootID == currentBootID() {
                left -= max(0, monotonicNanoseconds() - sleep.monotonicAtCheckpoint)
            } else {
                warn("PID \(pid) thread \(t.tid): the snapshot was taken before the machine rebooted, so the time elapsed since is unknown: its interrupted sleep goes on with the \(Double(left) / 1e9) s it had left")
            }
        }
        left = max(0, left)
        // The program's own `rem` becomes the request, as in the usual loop
        // `while (nanosleep(&t, &t) == -1 && errno == EINTR);`; the kernel reads the request
        // before it writes `rem` again. Only the register changes, not the program's request.
        let ts: [Int64] = [left / 1_000_000_000, left % 1_000_000_000]
        try RemoteMemory(pid: t.tid).write(ts.withUnsafeBytes { Array($0) }, to: call.rem)
        var r = regs
        Arch.setSleepRequest(&r, to: call.rem)
        return r
    }
}
