import Foundation
import SSITransport
import Synchronization

/// What must follow an application when it moves besides its processes: its network (the
/// cluster address's connections today, SSINetwork; application addresses, SSIStreams), installed
/// by the daemon (SSIDaemon/Wiring.swift). Every step has a default that does nothing. The
/// migration calls them in this order; a step that throws on the source before the freeze
/// refuses the migration, with the application untouched.
public protocol MigrationHooks: Sendable {
    /// On the source, before anything stops: refuse what cannot follow (naming it), and say
    /// whether the application's TCP connections to peers outside it are to be saved and
    /// rebuilt (the engine's --tcp-established) because they follow it.
    /// `address`: the application's own address (AppRecord.address), nil when it has none.
    func sourceWillFreeze(app: Int32, root: Int32, address: String?, to target: NodeID) async throws -> MigrationPlan
    /// On the target, before the restore.
    func targetWillRestore(app: Int32, from source: NodeID) async throws
    /// On the target, once the application's processes and sockets are rebuilt, just before
    /// they run (the engine's RestartOptions.beforeResume, on the restore's thread): what
    /// must point here before the first packet reaches the rebuilt sockets.
    func targetRebuilt(app: Int32, from source: NodeID)
    /// On the target, once its copy runs.
    func targetDidResume(app: Int32, root: Int32, from source: NodeID) async
    /// On the source, once the target's copy runs, before the source copy is killed.
    func sourceWillKill(app: Int32, root: Int32) async
    /// On the source, once its copy is gone (`committed`) or goes on (the migration failed).
    func sourceDidFinish(app: Int32, committed: Bool) async
}

/// What the hooks ask of the migration's checkpoint.
public struct MigrationPlan: Sendable {
    /// Save TCP connections to peers outside the application and rebuild them on the target.
    public var tcpEstablished = false
    /// Run once the application is frozen, before its fds are read (the engine's
    /// CheckpointOptions.whenFrozen): a network lock placed there stops the application's
    /// traffic for the freeze only, not while its memory is copied.
    public var whenFrozen: [@Sendable () throws -> Void] = []
    /// Run just before the freeze, after the memory's pre-copy (the engine's
    /// CheckpointOptions.beforeFreeze): a network lock placed there lets the application read
    /// what it has received before it stops, so that little is left in its sockets to save.
    public var beforeFreeze: [@Sendable () throws -> Void] = []
    /// Read on the source once the image is committed, just before the target restores:
    /// the last acknowledgement each peer sent to the frozen copy (by flow,
    /// "peer-address:peer-port>local-port"), for the restore (RestartOptions.tcpPeerAcks).
    public var peerAcknowledgements: (@Sendable () -> [String: UInt32])? = nil
    /// Rebuild each TCP send queue with the part the frozen copy had sent counted as sent
    /// (RestartOptions.tcpKeepSent): true when nothing it sent can have been lost on its
    /// node (its own link to its peers has no queue of its own), so that a peer's late
    /// acknowledgement of that part is taken.
    public var keepSentTCP = false
    public init(tcpEstablished: Bool = false, whenFrozen: [@Sendable () throws -> Void] = [], beforeFreeze: [@Sendable () throws -> Void] = []) {
        self.tcpEstablished = tcpEstablished
        self.whenFrozen = whenFrozen
        self.beforeFreeze = beforeFreeze
    }
}

extension MigrationHooks {
    public func sourceWillFreeze(app: Int32, root: Int32, address: String?, to target: NodeID) async throws -> MigrationPlan { MigrationPlan() }
    public func targetWillRestore(app: Int32, from source: NodeID) async throws {}
    public func targetRebuilt(app: Int32, from source: NodeID) {}
    public func targetDidResume(app: Int32, root: Int32, from source: NodeID) async {}
    public func sourceWillKill(app: Int32, root: Int32) async {}
    public func sourceDidFinish(app: Int32, committed: Bool) async {}
}

extension NodeApplications {
    /// Every installed hook's plan, merged; the first refusal stops the others (those that
    /// had answered are told the migration did not happen).
    func planMigration(app: Int32, root: Int32, address: String?, to target: NodeID) async throws -> MigrationPlan {
        var plan = MigrationPlan()
        let all = migrationHooks.withLock { $0 }
        for (i, h) in all.enumerated() {
            do {
                let p = try await h.sourceWillFreeze(app: app, root: root, address: address, to: target)
                plan.tcpEstablished = plan.tcpEstablished || p.tcpEstablished
                plan.whenFrozen += p.whenFrozen
                plan.beforeFreeze += p.beforeFreeze
                if let acks = p.peerAcknowledgements { plan.peerAcknowledgements = acks }
                plan.keepSentTCP = plan.keepSentTCP || p.keepSentTCP
            } catch {
                for done in all.prefix(i) { await done.sourceDidFinish(app: app, committed: false) }
                throw error
            }
        }
        return plan
    }

    func eachHook(_ f: (any MigrationHooks) async throws -> Void) async rethrows {
        for h in migrationHooks.withLock({ $0 }) { try await f(h) }
    }
}
