import CSSILinux
import Foundation
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// RealtimeBoost (SSISystem/Kernel/TaskScheduling.swift): the daemon's threads on SCHED_FIFO
/// for a migration's freeze, and back as they were; what is created meanwhile is not.
/// Nil, or why a real-time policy cannot be had here (no root; a cgroup without a
/// real-time budget, cpu.rt_runtime_us 0): probed on this thread and put back.
let realtimeRefused: String? = {
    guard TestEnv.isRoot else { return "needs root (CAP_SYS_NICE): a real-time policy" }
    let me = Int32(truncatingIfNeeded: cssi_gettid())
    let e = TaskScheduling.setPolicy(me, 1, priority: 1)
    guard e == 0 else { return "the kernel refuses SCHED_FIFO here (\(String(cString: strerror(-e)))): a cgroup without cpu.rt_runtime_us?" }
    _ = TaskScheduling.setPolicy(me, 0, priority: 0)
    return nil
}()

@Suite(.serialized, .enabled(if: realtimeRefused == nil, Comment(rawValue: realtimeRefused ?? "")))
struct RealtimeBoostTests {
    /// This thread's policy as sched_getscheduler(2) gives it (flags included).
    static func policy(_ tid: Int32 = 0) -> Int32 { TaskScheduling.policy(tid)?.policy ?? -1 }

    @Test("a boost puts this thread on SCHED_FIFO with reset-on-fork, and back on SCHED_OTHER with its nice")
    func boostAndBack() throws {
        let me = Int32(truncatingIfNeeded: cssi_gettid())
        #expect(Self.policy(me) == 0)
        _ = TaskScheduling.setNice(me, 3)
        defer { _ = TaskScheduling.setNice(me, 0) }
        let boost = RealtimeBoost()
        // SCHED_FIFO (1) | SCHED_RESET_ON_FORK (0x40000000), priority 1.
        try #require(Self.policy(me) == 1 | 0x4000_0000)
        #expect(TaskScheduling.policy(me)?.priority == 1)
        // A thread started meanwhile starts as SCHED_OTHER (the flag's reset at clone).
        final class Box: @unchecked Sendable { var policy: Int32 = -2; let done = DispatchSemaphore(value: 0) }
        let box = Box()
        Thread.detachNewThread { box.policy = RealtimeBoostTests.policy(); box.done.signal() }
        box.done.wait()
        #expect(box.policy == 0)
        // A second boost overlapping: the first's end leaves the thread boosted.
        let second = RealtimeBoost()
        boost.end()
        #expect(Self.policy(me) == 1 | 0x4000_0000)
        second.end()
        #expect(Self.policy(me) == 0)
        #expect(TaskScheduling.policy(me)?.nice == 3, "the nice value went with the boost")
        // Ending twice changes nothing.
        second.end()
        #expect(Self.policy(me) == 0)
    }

    @Test("a boost ends by itself after its limit")
    func endsByItself() throws {
        let me = Int32(truncatingIfNeeded: cssi_gettid())
        let boost = RealtimeBoost(limit: .milliseconds(100))
        try #require(Self.policy(me) == 1 | 0x4000_0000)
        #expect(waitUntil(5) { Self.policy(me) == 0 }, "still SCHED_FIFO 5 s after a boost of 100 ms")
        boost.end()
    }

    @Test("boosts end after 2 s without a pause, however long each asked for; a later boost works as before")
    func overallLimit() throws {
        let me = Int32(truncatingIfNeeded: cssi_gettid())
        let long = RealtimeBoost(limit: .seconds(20))
        try #require(Self.policy(me) == 1 | 0x4000_0000)
        let t0 = Date()
        #expect(waitUntil(6) { Self.policy(me) == 0 }, "still SCHED_FIFO 6 s after a boost began")
        #expect(Date().timeIntervalSince(t0) > 1.5, "ended before the overall limit")
        // Its own end, late, leaves the next boost alone.
        let next = RealtimeBoost()
        long.end()
        #expect(Self.policy(me) == 1 | 0x4000_0000, "a boost ended before its time by one of an earlier generation")
        next.end()
        #expect(Self.policy(me) == 0)
    }
}
