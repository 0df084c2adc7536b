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

extension Checkpoint {
    static func reported(_ app: Int32, progress: OperationProgress, _ body: () throws -> CheckpointEngine.CheckpointResult) throws -> CheckpointEngine.CheckpointResult {
        let t0 = ContinuousClock.now
        progress.start()
        defer { progress.finish() }
        do {
            let r = try body()
            progress.finish()
            DaemonReport.send(ObserveEvent(kind: .checkpointDone, app: app, seconds: elapsed(since: t0), bytes: r.pageBytes, version: r.version,
                                           message: "application \(app) checkpointed as v\(r.version): \(OperationProgress.size(Double(r.pageBytes))) of pages, frozen \(String(format: "%.3f", r.frozenSeconds)) s"))
            return r
        } catch {
            progress.finish()
            DaemonReport.send(ObserveEvent(kind: .checkpointFailed, app: app, seconds: elapsed(since: t0),
                                           message: "checkpoint of application \(app) failed: \(error)"))
            throw error
        }
    }
}

extension Restart {
    static func reported(_ app: Int32, version: Int?, progress: OperationProgress, _ body: () throws -> CheckpointEngine.RestartResult) throws -> CheckpointEngine.RestartResult {
        let t0 = ContinuousClock.now
        progress.start()
        defer { progress.finish() }
        do {
            let r = try body()
            progress.finish()
            DaemonReport.send(ObserveEvent(kind: .restartDone, app: app, seconds: elapsed(since: t0), version: r.version,
                                           message: "application \(app) restarted from v\(r.version) as PID \(r.pid)"))
            return r
        } catch {
            progress.finish()
            DaemonReport.send(ObserveEvent(kind: .restartFailed, app: app, seconds: elapsed(since: t0), version: version,
                                           message: "restart of application \(app)\(version.map { " from v\($0)" } ?? "") failed: \(error)"))
            throw error
        }
    }
}
