import Foundation

/// A closure that other threads read and call, set once or rarely (an observer, a source of
/// rows, a hook wired after start).
///
/// Not a `Mutex<F>` with F a function type: `withLock { $0 }` hands the closure to its body as
/// `inout` at the generic abstraction, so Swift converts it to the concrete one (a
/// reabstraction thunk around it) and writes it back converted again (a second thunk): the
/// stored closure grows by two thunks at every read, and every call walks all of them. The
/// daemon's RPC observer, read at every call to another node, had become a chain of tens of
/// thousands of thunks after one migration of 1 GiB (perf: 11% of the machine's CPU in those
/// thunks; a 5000-call loop took 0.15, 0.41, 0.94, 1.37 s in turn). Here the closure is only
/// read and written whole, under a lock, never passed inout.
public final class ClosureCell<F>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: F

    public init(_ value: F) { stored = value }

    /// The closure as last set.
    public var value: F {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }

    public func set(_ value: F) {
        lock.lock()
        defer { lock.unlock() }
        stored = value
    }
}
