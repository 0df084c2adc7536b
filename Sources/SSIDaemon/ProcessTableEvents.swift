import Foundation
import SSIObserve
import SSIProcessTable
import SSISystem

/// The process table's operations, as the operators' view sees them: each one done on this
/// node becomes an event (and so a metric), success or failure, with its duration.
extension ProcessTableSubsystem {
    private func timed<T>(_ body: () async throws -> T) async throws -> (T, Double) {
        let t0 = ContinuousClock.now
        let r = try await body()
        let d = ContinuousClock.now - t0
        return (r, Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }

    private func failed(_ kind: ObserveEvent.Kind, _ app: Int32?, _ what: String, _ error: Error) -> Error {
        core.observe.record(ObserveEvent(kind: kind, app: app, message: "\(what) failed on node \(core.config.node): \(error)"))
        return error
    }

    func observedLaunch(_ spec: LaunchSpec, stdio: [Int32]?) async throws -> AppRecord {
        do {
            let r = try await apps.launch(spec, stdio: stdio)
            core.observe.record(ObserveEvent(kind: .applicationStarted, app: r.app, message: "application \(r.app) started on node \(r.node): \(r.command.joined(separator: " "))"))
            return r
        } catch { throw failed(.error, nil, "ssi run \(spec.command.first ?? "")", error) }
    }

    func observedCheckpoint(_ spec: CheckpointSpec) async throws -> CheckpointDone {
        do {
            let (r, s) = try await timed { try await apps.checkpoint(spec) }
            let size = (try? await apps.table.catalog(spec.app))?.versions.first { $0.version == r.version }?.size
            core.observe.record(ObserveEvent(kind: .checkpointDone, app: r.app, seconds: s, bytes: size, version: r.version,
                                             message: "application \(r.app) checkpointed as version \(r.version) on node \(r.node) in \(String(format: "%.3f", s)) s (frozen \(String(format: "%.3f", r.frozenSeconds)) s)"))
            return r
        } catch { throw failed(.checkpointFailed, spec.app, "checkpoint of application \(spec.app)", error) }
    }

    func observedRestart(_ spec: RestartSpec) async throws -> AppRecord {
        do {
            let (r, s) = try await timed { try await apps.restart(spec) }
            core.observe.record(ObserveEvent(kind: .restartDone, app: r.app, seconds: s, version: spec.version,
                                             message: "application \(r.app) restarted on node \(r.node) in \(String(format: "%.3f", s)) s"))
            return r
        } catch { throw failed(.restartFailed, spec.app, "restart of application \(spec.app)", error) }
    }

    func observedMigrate(_ spec: MigrateSpec) async throws -> AppRecord {
        do {
            let (r, s) = try await timed { try await apps.migrate(spec) }
            core.observe.record(ObserveEvent(kind: .note, app: r.app, seconds: s,
                                             message: "application \(r.app) migrated from node \(core.config.node) to node \(r.node) in \(String(format: "%.3f", s)) s"))
            return r
        } catch { throw failed(.error, spec.app, "migration of application \(spec.app) to node \(spec.node)", error) }
    }
}
