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
        // The quickest of five batches each time: a batch the scheduler interrupted does not
        // count; with the old pattern every later batch is slower than the one before.
        let first = (0..<5).map { _ in timed(2000) }.min()!
        _ = timed(40_000)
        let last = (0..<5).map { _ in timed(2000) }.min()!
        #expect(calls.load(ordering: .relaxed) == 60_000)
        // Growing by two thunks per read, the last batches would walk 100,000 thunks a call
        // (seconds); unchanged, they cost what the first did (microseconds, with noise).
        #expect(last < first * 10 + 0.005, "first 2000 calls \(first) s, last 2000 \(last) s")
        cell.set(nil)
        #expect(cell.value == nil)
    }
}
