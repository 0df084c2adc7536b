import Foundation
import SSISystem
import Synchronization
import Testing

/// ClosureCell: a closure read and called from many threads does not grow with its reads.
/// A `Mutex<F>` read with `withLock { $0 }` wraps the stored closure in two more
/// reabstraction thunks at every read (ClosureCell.swift), so the cost of a call grows with
/// the number of calls before it: the daemon's RPC observer slowed every call to another node.
@Suite struct ClosureCellTests {
    @Test func readsDoNotGrowTheClosure() {
        let calls = Atomic<Int>(0)
        let cell = ClosureCell<(@Sendable (Int) -> Void)?>(nil)
        cell.set { n in calls.add(n, ordering: .relaxed) }
        func timed(_ n: Int) -> Double {
            let t0 = ContinuousClock.now
            for _ in 0..<n { cell.value?(1) }
            let d = ContinuousClock.now - t0
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        let first = timed(2000)
        _ = timed(40_000)
        let last = timed(2000)
        #expect(calls.load(ordering: .relaxed) == 44_000)
        // Growing by two thunks per read, the last 2000 calls would walk 80,000 thunks each
        // (seconds); unchanged, they cost what the first did (microseconds, with noise).
        #expect(last < first * 10 + 0.005, "first 2000 calls \(first) s, last 2000 \(last) s")
        cell.set(nil)
        #expect(cell.value == nil)
    }
}
