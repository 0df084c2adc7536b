import Foundation
import SSIControl
import SSIProcessTable
import SSISystem
import Synchronization

/// `ssi checkpoint APP1 APP2 ...` (docs/streams.md, "Snapshots taken together"), driven from
/// the node asked, each step on each application's node (SSIProcessTable/Together.swift):
///
/// 1. every application is frozen, its address's traffic held: from then on no packet
///    passes between them, so none can acknowledge what another's snapshot will not have;
/// 2. each is dumped (frozen as it is, `-c`), all at once;
/// 3. each is let go (its held packets delivered), or receives the --kill signal.
///
/// The freeze is as long as the slowest dump. Nothing half-made remains: an application
/// that cannot be frozen lets the others go with nothing written; a dump that fails lets
/// every one go and deletes the snapshots the others made, which without it are not a whole.
extension ProcessTableSubsystem {
    func checkpointTogether(_ spec: TogetherSpec) async throws -> [CheckpointDone] {
        var group: [Int32] = []
        for a in spec.apps where !group.contains(a) { group.append(a) }
        guard !group.isEmpty else { throw SSIError(.invalidArgument, "no application to checkpoint", hint: "ssi checkpoint APP1 APP2 ...") }
        for app in group {
            let rec = try await apps.table.record(app)
            guard rec.state == .running else {
                throw SSIError(.state, "application \(app) is \(rec.state.rawValue) (node \(rec.node)): applications checkpointed together must all be running; nothing was changed",
                               hint: rec.state == .frozen ? "ssi checkpoint -u \(app) unfreezes it" : "leave it out, or try again once it settles")
            }
        }
        // 1. Frozen together.
        let froze = await each(group) { app in _ = try await self.answer(.freeze(app: app, lockNetwork: true), fds: []) }
        let frozen = group.filter { froze[$0] == nil }
        if let (app, error) = group.compactMap({ a in froze[a].map { (a, $0) } }).first {
            await letGo(frozen)
            throw SSIError(.state, "application \(app) could not be frozen: \(error); the others were let go and nothing was checkpointed",
                           hint: "try again, or leave \(app) out")
        }
        // 2. Dumped, each on its node, all at once.
        let done = Mutex<[Int32: CheckpointDone]>([:])
        let dumped = await each(group) { app in
            let one = CheckpointSpec(app: app, description: spec.description, kill: spec.kill, replicas: spec.replicas, frozen: true)
            let d = try await self.answer(.checkpoint(one), fds: []).checkpointed()
            done.withLock { $0[app] = d }
        }
        let made = done.withLock { $0 }
        // 3. Let go; a --kill signal is queued already and delivered as each thaws.
        await letGo(group)
        if dumped.isEmpty {
            // Each member's catalog entry names the group, so that `ssi restart APP1 APP2`
            // takes these versions back together even after one of them was checkpointed
            // alone (SnapshotCatalog.takenTogether).
            let together = SnapshotCatalog.Together(group: UUID().uuidString.lowercased(),
                                                    members: group.compactMap { a in made[a].map { .init(app: a, version: $0.version) } })
            for m in together.members {
                do { try await apps.table.markTogether(m.app, m.version, together) } catch {
                    core.logger.warning("apps: snapshot v\(m.version) of application \(m.app) was not marked as taken together: \(error)")
                }
            }
        }
        if let (app, error) = group.compactMap({ a in dumped[a].map { (a, $0) } }).first {
            var dropped: [String] = []
            for (other, d) in made.sorted(by: { $0.key < $1.key }) {
                if (try? await apps.deleteSnapshot(other, d.version)) != nil { dropped.append("\(other) v\(d.version)") }
            }
            throw SSIError(.system, "application \(app) could not be checkpointed: \(error); every application was let go\(spec.kill != nil ? " (and signalled as asked)" : "")\(dropped.isEmpty ? "" : ", and the snapshots the others made (\(dropped.joined(separator: ", "))) were deleted, since without it they are not a whole")",
                           hint: "older snapshots are intact; try again, or leave \(app) out")
        }
        return group.compactMap { made[$0] }
    }

    /// Runs `step` for every application at once; the error of each that failed.
    private func each(_ list: [Int32], _ step: @escaping @Sendable (Int32) async throws -> Void) async -> [Int32: String] {
        await withTaskGroup(of: (Int32, String?).self) { g in
            for app in list {
                g.addTask {
                    do { try await step(app); return (app, nil) } catch { return (app, "\(error)") }
                }
            }
            var failed: [Int32: String] = [:]
            for await (app, e) in g { if let e { failed[app] = e } }
            return failed
        }
    }

    /// Every one unfrozen, its address let go; one that a --kill signal ended is gone
    /// already, and one that cannot be reached says so in the log.
    private func letGo(_ list: [Int32]) async {
        let failed = await each(list) { app in _ = try await self.answer(.unfreeze(app: app, signal: nil), fds: []) }
        for (app, e) in failed { core.logger.warning("apps: application \(app) could not be unfrozen after a checkpoint taken together: \(e)") }
    }
}
