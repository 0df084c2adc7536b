import NIOCore

/// Runs a task's nonisolated code on an event loop (SE-0417 task executor preference).
///
/// The RPC path's cost on a quiet machine is mostly thread wake-ups: a caller on the global
/// pool must wake the loop to write (eventfd), and the loop must wake a pool thread to resume
/// the caller. A caller whose code runs on the connection's own loop writes inline and is
/// resumed by the loop's next job, with no wake-up at all beyond the socket's.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
