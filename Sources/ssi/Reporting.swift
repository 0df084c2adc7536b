import Foundation
import SSICheckpoint
import SSIObserve
import SSISystem

// Checkpoint and restart, timed, with progress on the terminal, and reported to the local
// daemon (DaemonReport) as done or failed, so that `ssi events`, the dashboard and /metrics
// see them. The report never changes the command's outcome.

func elapsed(since t0: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - t0
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// Runs `body` with progress shown, and reports it: `done(result, seconds)` on success,
/// `failed(error, seconds)` on failure (which is then thrown on).
func reportedOperation<R>(_ progress: OperationProgress, _ body: () throws -> R,
                 done: (R, Double) -> ObserveEvent, failed: (Error, Double) -> ObserveEvent) throws -> R {
    let t0 = ContinuousClock.now
    progress.start()
    defer { progress.finish() }
    do {
        let r = try body()
        progress.finish()
        DaemonReport.send(done(r, elapsed(since: t0)))
        return r
    } catch {
        progress.finish()
        DaemonReport.send(failed(error, elapsed(since: t0)))
        throw error
    }
}

extension Checkpoint {
    static func reported(_ app: Int32, progress: OperationProgress, _ body: () throws -> CheckpointEngine.CheckpointResult) throws -> CheckpointEngine.CheckpointResult {
        try reportedOperation(progress, body, done: { r, s in
            ObserveEvent(kind: .checkpointDone, app: app, seconds: s, bytes: r.pageBytes, version: r.version,
                         message: "application \(app) checkpointed as v\(r.version): \(OperationProgress.size(Double(r.pageBytes))) of pages, frozen \(String(format: "%.3f", r.frozenSeconds)) s")
        }, failed: { error, s in
            ObserveEvent(kind: .checkpointFailed, app: app, seconds: s, message: "checkpoint of application \(app) failed: \(error)")
        })
    }
}

extension Restart {
    static func reported(_ app: Int32, version: Int?, progress: OperationProgress, _ body: () throws -> CheckpointEngine.RestartResult) throws -> CheckpointEngine.RestartResult {
        try reportedOperation(progress, body, done: { r, s in
            ObserveEvent(kind: .restartDone, app: app, seconds: s, version: r.version, message: "application \(app) restarted from v\(r.version) as PID \(r.pid)")
        }, failed: { error, s in
            ObserveEvent(kind: .restartFailed, app: app, seconds: s, version: version,
                         message: "restart of application \(app)\(version.map { " from v\($0)" } ?? "") failed: \(error)")
        })
    }
}
