import Foundation
import SSIImage
import SSIInject
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
// (SyscallRestart.registersForResume) with its request pointed at `rem`, into which it writes the
// time left minus the time elapsed since the thread stopped, at least 0.
//
// Without a `rem` buffer (usleep(3) passes NULL) the kernel writes the time left nowhere,
// but the expiry is still in the task's restart_block: the checkpoint lets the task run
// restart_syscall (injected, with every signal blocked), which arms the sleep's hrtimer again
// with that expiry, reads the timer from /proc/timer_list, and interrupts the task again
// (see measureSleep). At restart the request goes on the thread's stack, below the red zone.
// If the timer cannot be told apart, the sleep restarts whole, with a warning.

extension ProcessDumper {
    /// The interrupted relative sleep thread `tid` is in, if any, with the time it had left,
    /// and the registers the image keeps for the thread when they are not those it has: a
    /// sleep or timed wait resumed through restart_syscall after an earlier stop
    /// (SyscallRestart.isRestartedCall: a SIGSTOP and SIGCONT, a checkpoint without kill, a
    /// freeze and thaw) is saved as its original call, told from the kernel function the
    /// measure (which runs the restart) finds it sleeping in; one that ends meanwhile as
    /// having returned what it returned.
    func interruptedSleep(tid: Int32, registers: Registers) throws -> (InterruptedSleep?, Registers?) {
        if SyscallRestart.isRestartedCall(registers) {
            guard let m = try measureSleep(tid: tid, registers: registers, identify: true) else {
                warn("PID \(pid) thread \(tid) was resumed into a sleep or timed wait after an earlier stop, whose kind or time left could not be told: after restart the call returns EINTR")
                return (nil, nil)
            }
            if let value = m.returned { return (nil, SyscallRestart.returned(registers, value: value)) }
            // A poll with no timeout, resumed after an earlier stop (glib's main loop idles
            // so): its original call, re-issued whole at restart (its arguments are still in
            // their registers; restart_syscall changed only rax). It has no time to keep,
            // whatever timer the measure took for its own (another task's may coincide).
            if let stack = m.stack, stack.contains("do_sys_poll") || stack.contains("poll_schedule_timeout"), SyscallRestart.pollWithoutTimeout(registers),
               let original = SyscallRestart.originalCall(registers, kernelStack: stack) {
                return (nil, original)
            }
            if m.remaining < 0 {
                warn("PID \(pid) thread \(tid) was resumed into a sleep or timed wait after an earlier stop, whose kind or time left could not be told: after restart the call returns EINTR")
                return (nil, nil)
            }
            guard let stack = m.stack, let original = SyscallRestart.originalCall(registers, kernelStack: stack),
                  let call = SyscallRestart.interruptedRelativeSleep(original) else {
                warn("PID \(pid) thread \(tid) was resumed into a wait after an earlier stop that is not a sleep, poll or futex wait (kernel stack: \(m.stack?.split(separator: "\n").prefix(3).joined(separator: " | ") ?? "unread")): after restart the call returns EINTR")
                return (nil, nil)
            }
            return (InterruptedSleep(clockID: call.clockID, remainingNanoseconds: m.remaining, monotonicAtCheckpoint: m.monotonic, bootID: Clock.bootID()), original)
        }
        return (try interruptedCall(tid: tid, registers: registers), nil)
    }

    private func interruptedCall(tid: Int32, registers: Registers) throws -> InterruptedSleep? {
        guard let call = SyscallRestart.interruptedRelativeSleep(registers) else { return nil }
        let monotonic = stoppedAt[tid] ?? Clock.monotonicNanoseconds()
        switch call.kind {
        case .epollTimeout, .epollTimespec, .timedWait:
            // The kernel keeps no time left for these (the stop ended them with EINTR): their
            // timer, seen armed before the stop and gone after it, tells when they would have
            // ended (TimerWitness); if it cannot be told apart, the whole timeout.
            var whole = SyscallRestart.epollTimeout(registers) * 1_000_000
            if call.kind != .epollTimeout {
                var ts: (Int64, Int64) = (0, 0)
                try withUnsafeMutableBytes(of: &ts) { try RemoteMemory(pid: ProcessID(pid)).forcedRead(into: $0, at: SyscallRestart.timeoutAddress(registers)) }
                whole = ProcessDumper.nanoseconds(ts)
            }
            let left = timerWitness?.remaining(tid: tid, timeout: whole, stoppedAt: monotonic) ?? whole
            return InterruptedSleep(clockID: call.clockID, remainingNanoseconds: left, monotonicAtCheckpoint: monotonic, bootID: Clock.bootID())
        case .timeLeftTimeval:
            // struct timeval { tv_sec; tv_usec }, the time left as the kernel wrote it.
            var tv: (Int64, Int64) = (0, 0)
            try withUnsafeMutableBytes(of: &tv) { try RemoteMemory(pid: ProcessID(pid)).forcedRead(into: $0, at: call.rem) }
            return InterruptedSleep(clockID: call.clockID, remainingNanoseconds: tv.0 * 1_000_000_000 + tv.1 * 1000,
                                    monotonicAtCheckpoint: monotonic, bootID: Clock.bootID())
        default: break
        }
        guard call.rem != 0 else {
            if let m = try measureSleep(tid: tid, registers: registers) {
                return InterruptedSleep(clockID: call.clockID, remainingNanoseconds: m.remaining, monotonicAtCheckpoint: m.monotonic, bootID: Clock.bootID())
            }
            let what = call.kind == .sleep ? "a relative sleep with no buffer for the time left (rem == NULL, as usleep(3) passes)" : "a \(call.kind == .poll ? "poll(2)" : "futex(2) wait") with a timeout"
            warn("PID \(pid) thread \(tid) is in \(what), and its timer could not be found in /proc/timer_list (it may have ended as it was measured): after restart the call is made again with its whole timeout")
            return nil
        }
        // struct timespec { tv_sec; tv_nsec }. Through /proc/PID/mem: process_vm_readv would
        // unshare a page still shared copy-on-write with the parent (see dumpMemory).
        var ts: (Int64, Int64) = (0, 0)
        try withUnsafeMutableBytes(of: &ts) { try RemoteMemory(pid: ProcessID(pid)).forcedRead(into: $0, at: call.rem) }
        return InterruptedSleep(clockID: call.clockID, remainingNanoseconds: ProcessDumper.nanoseconds(ts),
                                monotonicAtCheckpoint: stoppedAt[tid] ?? Clock.monotonicNanoseconds(), bootID: Clock.bootID())
    }

    /// A struct timespec in ns, saturated: a valid "forever" ({LONG_MAX, 0}, which the kernel
    /// takes as no end) would overflow.
    static func nanoseconds(_ ts: (Int64, Int64)) -> Int64 {
        let (ns, over) = ts.0.multipliedReportingOverflow(by: 1_000_000_000)
        return over || ns > Int64.max - max(0, ts.1) ? Int64.max : ns + ts.1
    }
}

extension ProcessDumper {
    /// The registers with which thread `t`, stopped in a timed wait that the stop ended with
    /// EINTR (`stopped`; `fixed`: re-issued when it goes on, SyscallRestart.restartedAfterStop), goes
    /// on after a checkpoint without kill: the time it had left when it was stopped, less
    /// what has passed since, rather than its whole timeout again. A timespec's goes on the
    /// thread's stack below the red zone (the program's own may be const and reused), which
    /// nothing uses before the kernel reads it; if it cannot be written there, `fixed`.
    func continuingWait(_ t: ThreadImage, stopped: Registers, fixed: Registers) -> Registers {
        guard let sleep = t.interruptedSleep, let call = SyscallRestart.interruptedRelativeSleep(stopped),
              [.epollTimeout, .epollTimespec, .timedWait].contains(call.kind) else { return fixed }
        let left = max(0, sleep.remainingNanoseconds - max(0, Clock.monotonicNanoseconds() - sleep.monotonicAtCheckpoint))
        var r = fixed
        if call.kind == .epollTimeout {
            SyscallRestart.setEpollTimeout(&r, nanoseconds: left)
            return r
        }
        let at = Arch.scratchBelowRedZone(fixed.stackPointer)
        let ts: [Int64] = [left / 1_000_000_000, left % 1_000_000_000]
        guard (try? RemoteMemory(pid: ProcessID(t.tid)).write(ts.withUnsafeBytes { Array($0) }, to: at)) != nil else { return fixed }
        SyscallRestart.setSleepRequest(&r, to: at)
        return r
    }
}

/// When a timed wait that the stop ended with EINTR would have ended (epoll_wait,
/// epoll_pwait2, rt_sigtimedwait, semtimedop: the kernel keeps no time left for them, unlike
/// a sleep's restart_block). Each waits on an hrtimer (hrtimer_wakeup) armed at its start
/// plus its timeout, listed in /proc/timer_list while it waits and cancelled when the stop
/// wakes it. The list is read just before the application is stopped and again, once a
/// thread needs it, after: the thread's timer is among those gone in between whose expiry
/// lies after the stop and no later than the first read plus the call's timeout. Which one
/// cannot be told (the list names no task: other threads' waits, other tasks of the
/// machine), so the latest is taken, which is never before the thread's own. That holds
/// only for a thread that was in that very call when the list was read (its timer is then
/// in the first read): each thread's /proc/TID/syscall is read just before, and a thread
/// that was elsewhere then gets its whole timeout again (late, never early).
final class TimerWitness: @unchecked Sendable {
    /// The timed waits whose timer is told (their numbers, as /proc/TID/syscall shows them).
    static let timedCalls: Set<Substring> = ["232", "281", "441", "128", "220"]
    let before: Set<WakeupTimer>
    /// CLOCK_MONOTONIC once `before` was read: no wait that was armed then started later.
    let readAt: Int64
    /// /proc/TID/syscall of each thread of the application blocked in one of `timedCalls`
    /// when the list was read.
    private let waiting: [Int32: String]
    private var after: Set<WakeupTimer>? = nil
    private let lock = NSLock()

    init(root: Int32) {
        var waiting = [Int32: String]()
        // A process the lists miss (forked meanwhile) has no wait here: its threads get their
        // whole timeout again, as one that was elsewhere does.
        for pid in (try? ProcessTree.approximate(root: root))?.pids ?? [root] {
            for tid in numericEntries(of: "/proc/\(pid)/task") ?? [] {
                if let line = try? ProcFS.read("/proc/\(pid)/task/\(tid)/syscall"), let nr = line.split(separator: " ").first,
                   TimerWitness.timedCalls.contains(nr) {
                    waiting[tid] = line
                }
            }
        }
        self.waiting = waiting
        before = waiting.isEmpty ? [] : WakeupTimer.all()
        readAt = Clock.monotonicNanoseconds()
    }

    /// The time the relative wait of `timeout` ns that thread `tid` was in had left when the
    /// stop at `stoppedAt` ended it; nil when that cannot be told.
    func remaining(tid: Int32, timeout: Int64, stoppedAt: Int64) -> Int64? {
        lock.lock()
        defer { lock.unlock() }
        // The same call, same arguments, stack and place, as when the list was read (the
        // stopped thread's registers still hold them).
        guard let was = waiting[tid], (try? ProcFS.read("/proc/\(tid)/syscall")) == was else { return nil }
        if after == nil { after = WakeupTimer.all() }
        // A timer whose expiry passed before the stop would have ended the call normally
        // (a millisecond allowed for the timer's slack and the wake-up).
        let latest = readAt > Int64.max - timeout ? Int64.max : readAt + timeout
        let fits = before.subtracting(after!).filter {
            $0.clockID == Clock.monotonic && $0.expiry > stoppedAt - 1_000_000 && $0.expiry <= latest
        }
        return fits.map(\.expiry).max().map { max(0, $0 - stoppedAt) }
    }
}

/// An hrtimer that wakes a sleeping task (function hrtimer_wakeup) in /proc/timer_list: the
/// clock of its base and its soft expiry in that clock, in ns. Its (hashed) address is not
/// kept: the same sleep re-armed twice may sit at another place of the kernel stack.
/// (A relative sleep on CLOCK_REALTIME counts on the CLOCK_MONOTONIC base: __hrtimer_init.)
struct WakeupTimer: Hashable {
    var clockID: Int32
    var expiry: Int64

    /// /proc/timer_list (kernel/time/timer_list.c): per CPU, per clock base "clock N:", then
    /// " #K: <ptr>, FUNCTION, S:.." and " # expires at SOFT-HARD nsecs [...]" per timer.
    /// Bases 0-3 are MONOTONIC, REALTIME, BOOTTIME, TAI, and 4-7 their soft variants.
    static func all() -> Set<WakeupTimer> {
        guard let text = try? ProcFS.read("/proc/timer_list") else { return [] }
        let clocks: [Int32] = [Clock.monotonic, Clock.realtime, Clock.boottime, Clock.tai]
        var out = Set<WakeupTimer>()
        var base: Int32 = 0
        var pending = false
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("clock "), let n = Int(t.dropFirst(6).dropLast()) {
                base = clocks[n % 4]
            } else if t.hasPrefix("#"), t.contains(", hrtimer_wakeup,") {
                pending = true
            } else if t.hasPrefix("# expires at "), pending {
                let soft = t.dropFirst("# expires at ".count).prefix { $0 != "-" }
                if let e = Int64(soft) { out.insert(WakeupTimer(clockID: base, expiry: e)) }
                pending = false
            } else {
                pending = false
            }
        }
        return out
    }
}

extension ProcessDumper {
    /// The time left of a relative sleep that had no `rem` buffer, measured by letting the
    /// thread re-arm its timer: restart_syscall runs the restart_block the interrupted sleep
    /// left (hrtimer_nanosleep_restart: the same absolute expiry). The timer that appears in
    /// /proc/timer_list meanwhile is the thread's; other tasks of the machine may arm timers
    /// at the same moment, so the measure is repeated until one expiry is common to all of
    /// them. The thread is then interrupted again; its registers, signal mask and
    /// restart_block are as before. Nil if the timer could not be told apart.
    func measureSleep(tid: Int32, registers saved: Registers, identify: Bool = false) throws -> (remaining: Int64, monotonic: Int64, stack: String?, returned: Int64?)? {
        let t = Tracee.adoptTraceMe(ProcessID(tid))
        let guardMask = try SignalMaskGuard(tracee: t, saved: saved)
        defer { guardMask.restore() }
        let gadget = try Injector.findGadget(pid: ProcessID(pid))
        var common: Set<WakeupTimer>? = nil
        var clocksAt = [Int32: Int64](), monotonicAt: Int64 = 0
        // With `identify`, the kernel stack of the sleeping restart (which restart function
        // runs), and what the call returned if it ended meanwhile.
        var stack: String? = nil
        var value: Int64 = 0
        for _ in 0..<3 {
            let before = WakeupTimer.all()
            try t.setRegisters(saved.preparedForSyscall(.restart_syscall, [], at: gadget))
            // Single-stepped, so that the thread stops right after the syscall if the sleep
            // ends meanwhile instead of running on from the gadget.
            try t.singleStep()
            var ended = false
            // Until it sleeps again, or is already stopped by the step's trap: a sleep whose
            // expiry passed while the checkpoint held the thread (a short usleep, the common
            // case) returns at once, and waiting for it to sleep would only stall the
            // application (it used to cost 100+ ms per checkpoint).
            for _ in 0..<2000 {
                if let st = try? ProcStat.read(pid: tid) {
                    if st.state == "t" || st.state == "T" { break }
                    if st.state == "S", BlockedSyscall.of(ProcessID(tid))?.syscall == .restart_syscall {
                        if identify && stack == nil { stack = try? ProcFS.read("/proc/\(pid)/task/\(tid)/stack") }
                        break
                    }
                }
                usleep(50)
            }
            // The clocks before CLOCK_MONOTONIC: the time left is then never under-counted,
            // and the sleep never ends before its expiry.
            for c in [Clock.realtime, Clock.monotonic, Clock.boottime, Clock.tai] { clocksAt[c] = Clock.nanoseconds(c) }
            monotonicAt = Clock.monotonicNanoseconds()
            let after = WakeupTimer.all()
            try t.interrupt()
            // Two stops follow, in either order: the interrupt (PTRACE_EVENT_STOP) and the
            // SIGTRAP of the single step, which the syscall's exit queues (syscall_exit_work).
            // The first is left with PTRACE_CONT; the SIGTRAP is suppressed.
            var sawInterrupt = false, sawStep = false, entered = true
            while !(sawInterrupt && sawStep) {
                switch try t.wait() {
                case .interruptStop:
                    sawInterrupt = true
                    // Stopped before it ran the syscall (it was slow to start): no step follows.
                    if !sawStep, try t.registers().instructionPointer == gadget { entered = false; sawStep = true }
                case .signal(.trap):
                    sawStep = true
                    // 0: the sleep or poll timed out; -ETIMEDOUT: the futex wait did.
                    let r = try t.registers().returnValue
                    ended = r == 0 || r == -110
                    value = r
                case .exited, .killed:
                    throw SSIError(.state, "PID \(pid) thread \(tid) ended while its sleep was measured; nothing was written", hint: "try again")
                case let other:
                    throw SSIError(.system, "PID \(pid) thread \(tid) stopped unexpectedly (\(other)) while its sleep was measured; nothing was written", hint: "try again")
                }
                if !(sawInterrupt && sawStep) { try t.cont() }
            }
            if !entered { return nil }
            if ended { return (0, monotonicAt, stack, identify ? value : nil) }
            let fresh = after.subtracting(before)
            common = common.map { $0.intersection(fresh) } ?? fresh
            if common!.count <= 1 { break }
        }
        guard let c = common, c.count == 1, let timer = c.first, let now = clocksAt[timer.clockID] else {
            // No timer of its own: with `identify`, a wait that has none (a poll with timeout
            // -1) is told by its stack (remaining -1).
            if identify, let stack { return (-1, monotonicAt, stack, nil) }
            return nil
        }
        return (max(0, timer.expiry - now), monotonicAt, stack, nil)
    }
}

extension ProcessRestorer {
    /// The registers thread `t` resumes with: `regs` (SyscallRestart.registersForResume), with an
    /// interrupted relative sleep shortened by the time elapsed since the checkpoint.
    func shortenInterruptedSleep(_ t: ThreadImage, _ regs: Registers) throws -> Registers {
        guard let sleep = t.interruptedSleep, let call = SyscallRestart.interruptedRelativeSleep(try Registers(named: t.registers)) else {
            return regs
        }
        var left = sleep.remainingNanoseconds
        if clocksThatRun.contains(sleep.clockID) {
            if sleep.bootID == Clock.bootID() {
                left -= max(0, Clock.monotonicNanoseconds() - sleep.monotonicAtCheckpoint)
            } else {
                warn("PID \(pid) thread \(t.tid): the snapshot was taken before the machine rebooted, so the time elapsed since is unknown: its interrupted sleep goes on with the \(Double(left) / 1e9) s it had left")
            }
        }
        left = max(0, left)
        switch call.kind {
        case .epollTimeout:
            var r = regs
            SyscallRestart.setEpollTimeout(&r, nanoseconds: left)
            return r
        case .timeLeftTimeval, .timeLeftTimespec:
            // The program's own struct, which the kernel reads again when it re-issues the
            // call; the registers stay as they are. A timeval in microseconds, rounded up.
            let us = (left + 999) / 1000
            let words: [Int64] = call.kind == .timeLeftTimeval ? [us / 1_000_000, us % 1_000_000] : [left / 1_000_000_000, left % 1_000_000_000]
            try RemoteMemory(pid: ProcessID(try taskID(t.tid))).write(words.withUnsafeBytes { Array($0) }, to: call.rem)
            return regs
        default: break
        }
        if call.kind == .poll {
            // poll's timeout is a register: nothing to write.
            var r = regs
            SyscallRestart.setPollTimeout(&r, nanoseconds: left)
            return r
        }
        // The program's own `rem` becomes the request, as in the usual loop
        // `while (nanosleep(&t, &t) == -1 && errno == EINTR);`; the kernel reads the request
        // before it writes `rem` again. Only the register changes, not the program's request.
        // Without `rem`, the request goes on the thread's stack below the red zone (the ABI's
        // Arch.stackRedZone), which nothing uses before the kernel reads the request.
        var at = call.rem
        if at == 0 {
            at = Arch.scratchBelowRedZone(regs.stackPointer)
            guard image.vmas.contains(where: { $0.start <= at && at + 16 <= $0.end && $0.write }) else {
                warn("PID \(pid) thread \(t.tid): no room on its stack for the time left of its sleep: it sleeps its whole duration again")
                return regs
            }
        }
        let ts: [Int64] = [left / 1_000_000_000, left % 1_000_000_000]
        try RemoteMemory(pid: ProcessID(try taskID(t.tid))).write(ts.withUnsafeBytes { Array($0) }, to: at)
        var r = regs
        SyscallRestart.setSleepRequest(&r, to: at)
        return r
    }
}
