import Foundation
@testable import SSICheckpoint
import SSIInject
import Testing

/// What a restart makes of time that passed while the application was down, and of a wait
/// found inside restart_syscall (the third probing round, December 7 2026).
@Suite struct TimerScheduleTests {
    /// A periodic timerfd keeps its schedule across the downtime: every expiry that fell in it
    /// is an unread one, and the next comes on the same grid (before, it came a whole period
    /// after the restart: up to a period lost per restart).
    @Test func periodicTimerfdKeepsItsSchedule() {
        let ms: Int64 = 1_000_000
        // 100 ms left, 250 ms period, down 1 s: due at 100, 350, 600, 850 -> 4 missed, next at 1100.
        let k = ProcessRestorer.scheduleKept(100 * ms, interval: 250 * ms, elapsed: 1000 * ms)
        #expect(k.ticks == 4 && k.left == 100 * ms, "\(k)")
        // Not due yet: moved on, nothing missed.
        #expect(ProcessRestorer.scheduleKept(300 * ms, interval: 250 * ms, elapsed: 100 * ms) == (200 * ms, 0))
        // Due exactly now: one expiry, the next a whole period later.
        #expect(ProcessRestorer.scheduleKept(100 * ms, interval: 250 * ms, elapsed: 100 * ms) == (250 * ms, 1))
        // A one-shot timer that came due: expired once, disarmed.
        #expect(ProcessRestorer.scheduleKept(100 * ms, interval: 0, elapsed: 5000 * ms) == (0, 1))
    }

    #if arch(x86_64)
    /// A wait resumed through restart_syscall after a stop is saved as its original call,
    /// told from the kernel stack of the sleeping restart.
    @Test func restartedCallToldFromTheKernelStack() throws {
        let entry = "[<0>] do_syscall_64+0x71/0x290\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n"
        var named = Dictionary(uniqueKeysWithValues: Registers.names.map { ($0, UInt64(0)) })
        named["orig_rax"] = 219
        named["rax"] = UInt64(bitPattern: -516)
        named["rdi"] = 0x7ffd_0000_1000
        let restarted = try Registers(named: named)
        #expect(SyscallRestart.isRestartedCall(restarted))
        // A sleep's restart shows only the entry: nanosleep (a pointer in rdi) or clock_nanosleep (a clock id).
        #expect(SyscallRestart.originalCall(restarted, kernelStack: entry)?.syscall == .nanosleep)
        named["rdi"] = 1
        #expect(SyscallRestart.originalCall(try Registers(named: named), kernelStack: entry)?.syscall == .clock_nanosleep)
        let poll = "[<0>] poll_schedule_timeout.constprop.0+0x37/0x90\n[<0>] do_sys_poll+0x437/0x5c0\n" + entry
        #expect(SyscallRestart.originalCall(restarted, kernelStack: poll)?.syscall == .poll)
        let futex = "[<0>] futex_wait_queue+0x60/0x90\n[<0>] __futex_wait+0x150/0x1c0\n[<0>] futex_wait+0x77/0x120\n" + entry
        #expect(SyscallRestart.originalCall(restarted, kernelStack: futex)?.syscall == .futex)
        #expect(SyscallRestart.originalCall(restarted, kernelStack: "[<0>] some_other_wait+0x1/0x2\n" + entry) == nil)
        // One that ended while it was measured: as if the call had returned.
        let done = SyscallRestart.returned(restarted, value: -110)
        #expect(done.syscall == nil && done.returnValue == -110)
    }

    #endif
}
