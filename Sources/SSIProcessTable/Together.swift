import Foundation
import SSICheckpoint
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Freezing a cluster application on its node (`ssi checkpoint -f / -u`), and the node's steps
// of a checkpoint of several applications taken together (`ssi checkpoint APP1 APP2`,
// docs/streams.md "Snapshots taken together"): every one is frozen, with its address locked,
// before the first is dumped, and let go after the last, so that their snapshots agree with
// each other, the connections between them included (what one has acknowledged, the other
// has in its snapshot as sent). The daemon's process table drives the steps on each
// application's node (SSIDaemon/TogetherPart.swift).

/// `ssi checkpoint APP1 APP2 ...`: one checkpoint of several applications, frozen together.
public struct TogetherSpec: Codable, Sendable, Equatable {
    public var apps: [Int32]
    public var description: String
    /// Signal sent to each once every snapshot is on disk (`--kill`).
    public var kill: Int32?
    public var replicas: Int
    public init(apps: [Int32], description: String, kill: Int32?, replicas: Int) {
        (self.apps, self.description, self.kill, self.replicas) = (apps, description, kill, replicas)
    }
}

extension NodeApplications {
    /// Freezes local application `app` in its cgroup (every task at once). With
    /// `lockNetwork` and an address, its traffic stops too (ApplicationNetwork.lock) until
    /// `unfreeze`: a plain `ssi checkpoint -f` leaves it flowing, since a peer whose packets
    /// went unanswered for minutes would give the connection up (tcp(7) tcp_retries2), while
    /// one that sees a full window waits.
    public func freeze(_ app: Int32, lockNetwork: Bool) async throws -> AppRecord {
        let root = try await localRoot(app)
        let engine = CheckpointEngine(store: store)
        try await Self.onThread { try engine.freeze(app: root, applicationID: app) }
        if lockNetwork, let address = try? await table.record(app).address, let net = appNetwork.withLock({ $0 }) {
            do { try net.lock(app: app, address: address, root: root) } catch {
                try? engine.unfreeze(app: root, applicationID: app, signal: nil)
                throw SSIError(.system, "application \(app) on node \(me): its address \(address) could not be locked, so it was let go: \(error)",
                               hint: "nothing was checkpointed; try again")
            }
            networkLocked.withLock { $0[app] = address }
        }
        return try await table.update(app) { $0.state = .frozen }
    }

    /// Unfreezes local application `app`, sending `signal` first (delivered as it thaws); its
    /// address, if locked, is let go first, with what was held for it.
    public func unfreeze(_ app: Int32, signal: Int32?) async throws -> AppRecord {
        // Its address is let go even if its root cannot be found (the error is said below).
        let found = try? await localRoot(app)
        if let address = networkLocked.withLock({ $0.removeValue(forKey: app) }) {
            appNetwork.withLock({ $0 })?.unlock(app: app, address: address, root: found)
        }
        let root: Int32
        if let found { root = found } else { root = try await localRoot(app) }
        let engine = CheckpointEngine(store: store)
        let sig = signal.flatMap { Signal(rawValue: $0) }
        try await Self.onThread { try engine.unfreeze(app: root, applicationID: app, signal: sig) }
        return try await table.update(app) { if $0.state == .frozen { $0.state = .running } }
    }
}
