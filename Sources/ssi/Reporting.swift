import Foundation
import SSICheckpoint
import SSIControl
import SSIObserve
import SSIProcessTable
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

// A cluster application's checkpoint and restart run in its node's daemon (the process
// table); the command reports them the same way, with what the daemon answered.

extension Checkpoint {
    static func reportedCluster(_ app: Int32, _ body: () throws -> CheckpointDone) throws {
        let t0 = ContinuousClock.now
        do {
            let r = try body()
            DaemonReport.send(ObserveEvent(kind: .checkpointDone, app: app, seconds: elapsed(since: t0), version: r.version,
                                           message: "application \(app) checkpointed on node \(r.node) as v\(r.version), frozen \(String(format: "%.3f", r.frozenSeconds)) s"))
        } catch {
            DaemonReport.send(ObserveEvent(kind: .checkpointFailed, app: app, seconds: elapsed(since: t0), message: "checkpoint of application \(app) failed: \(error)"))
            throw error
        }
    }
}

extension Restart {
    static func reportedCluster(_ app: Int32, version: Int?, _ body: () throws -> AppRecord) throws {
        let t0 = ContinuousClock.now
        do {
            let r = try body()
            DaemonReport.send(ObserveEvent(kind: .restartDone, app: app, seconds: elapsed(since: t0), version: version,
                                           message: "application \(app) restarted\(version.map { " from v\($0)" } ?? "") on node \(r.node) as PID \(r.pid)"))
        } catch {
            DaemonReport.send(ObserveEvent(kind: .restartFailed, app: app, seconds: elapsed(since: t0), version: version,
                                           message: "restart of application \(app)\(version.map { " from v\($0)" } ?? "") failed: \(error)"))
            throw error
        }
    }
}
