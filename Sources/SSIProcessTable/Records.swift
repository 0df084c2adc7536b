import Foundation
import SSITransport

/// What the `applications` and `snapshots` KDDM sets hold (docs/migration.md, "The
/// application table"). Both are JSON, so `ssi kddm get applications ID` reads them too.

/// The state of a cluster application as its node last wrote it; `lost` is never written:
/// readers show it for records whose node is not online.
public enum AppState: String, Codable, Sendable {
    case running, frozen, migrating, stopped, lost
}

/// One application of the cluster: the value of `applications/<id>`.
public struct AppRecord: Codable, Sendable, Equatable {
    /// The id: 10,000,000 + a KDDM counter value, above PID_MAX_LIMIT (2^22), so a number
    /// names a cluster application or a local process, never both.
    public var app: Int32
    /// The node it runs on (or last ran on).
    public var node: NodeID
    public var state: AppState
    /// Its root (ssi-init, process 1 of its PID namespace) as seen from its node.
    public var pid: Int32
    public var command: [String]
    public var processes: Int
    public var rss_bytes: UInt64
    /// ISO 8601, UTC.
    public var started: String
    /// Kerrighed's capabilities, e.g. CAN_MIGRATE.
    public var caps: [String]
    public var exit_status: Int32?
    /// The node keeping its stdout/stderr log, when it has one (no caller's files).
    public var log_node: NodeID?
    public var migrations: Int
    /// Its own address in the cluster's application network (`ssi run --net app`), which
    /// it keeps wherever it runs; nil: it uses its node's network.
    public var address: String?
    /// Percent of one CPU it used over the scheduler's last sample (`ssi ps`); filled in
    /// when the list is read, never stored.
    public var cpu: Double?
    /// The migration under way (state `migrating`): set by its source, cleared by whichever
    /// of the two nodes settles it, the target taking the record over or the source giving
    /// the migration up (Migrate.swift, "Exactly one copy").
    public var migration: MigrationMark?

    public init(app: Int32, node: NodeID, pid: Int32, command: [String], started: String) {
        (self.app, self.node, self.pid, self.command, self.started) = (app, node, pid, command, started)
        state = .running
        processes = 1
        rss_bytes = 0
        caps = []
        migrations = 0
    }

    /// The record as a reader shows it: `lost` when its node is not online and it had not
    /// stopped (a stopped application is not lost with its node: nothing runs).
    public func seen(online: Set<NodeID>) -> AppRecord {
        var r = self
        if !online.contains(node) && state != .stopped { r.state = .lost }
        return r
    }

    public func encoded() -> [UInt8] { Array((try? JSONEncoder.sorted.encode(self)) ?? Data()) }
    public static func decode(_ bytes: [UInt8]) throws -> AppRecord { try JSONDecoder().decode(AppRecord.self, from: Data(bytes)) }
}

/// Which migration an application is in: a token the source drew, and its target.
public struct MigrationMark: Codable, Sendable, Equatable {
    public var token: UInt64
    public var to: NodeID
    public init(token: UInt64, to: NodeID) { (self.token, self.to) = (token, to) }
}

/// The snapshots of one application: the value of `snapshots/<id>`.
public struct SnapshotCatalog: Codable, Sendable, Equatable {
    public struct Version: Codable, Sendable, Equatable {
        public var version: Int
        public var date: String
        public var description: String
        /// Bytes of the snapshot as the engine wrote it.
        public var size: UInt64
        /// Bytes it added on the node that made it (pages new to its page pool, and its own
        /// files); nil for versions recorded before page pools.
        public var added: UInt64?
        /// The nodes holding a copy, first the one that made it.
        public var nodes: [NodeID]
        /// Made by a checkpoint of several applications frozen together (`ssi checkpoint APP1
        /// APP2`): the group's id, the same in each member's entry, and every member's
        /// version, itself included. Nil for a snapshot taken alone.
        public var together: Together?
        public init(version: Int, date: String, description: String, size: UInt64, nodes: [NodeID]) {
            (self.version, self.date, self.description, self.size, self.nodes) = (version, date, description, size, nodes)
        }
    }
    public struct Together: Codable, Sendable, Equatable {
        public var group: String
        /// Each member's version of the group, by application.
        public var members: [Member]
        public struct Member: Codable, Sendable, Equatable {
            public var app: Int32
            public var version: Int
            public init(app: Int32, version: Int) { (self.app, self.version) = (app, version) }
        }
        public init(group: String, members: [Member]) { (self.group, self.members) = (group, members) }
    }
    public var app: Int32
    public var versions: [Version]
    public init(app: Int32, versions: [Version] = []) { (self.app, self.versions) = (app, versions) }

    /// The versions `ssi restart APP1 APP2 ...` brings back: those of the latest checkpoint
    /// that took every one of `apps` together, found in each one's catalog (a member whose
    /// version was deleted since breaks the group). Nil when no such group is whole.
    public static func takenTogether(_ apps: [Int32], in catalogs: [SnapshotCatalog]) -> [Int32: Int]? {
        guard let first = apps.first, let mine = catalogs.first(where: { $0.app == first }) else { return nil }
        for v in mine.versions.reversed() {
            guard let t = v.together else { continue }
            var chosen: [Int32: Int] = [:]
            for app in apps {
                guard let m = t.members.first(where: { $0.app == app }),
                      let c = catalogs.first(where: { $0.app == app }),
                      c.versions.contains(where: { $0.version == m.version && $0.together?.group == t.group }) else { break }
                chosen[app] = m.version
            }
            if chosen.count == Set(apps).count { return chosen }
        }
        return nil
    }

    /// Adds `node` as a holder of `v` (the version itself when new).
    public mutating func add(_ v: Version, holder node: NodeID) {
        if let i = versions.firstIndex(where: { $0.version == v.version }) {
            if !versions[i].nodes.contains(node) { versions[i].nodes.append(node) }
        } else {
            var nv = v
            if !nv.nodes.contains(node) { nv.nodes.append(node) }
            versions.append(nv)
            versions.sort { $0.version < $1.version }
        }
    }

    public func encoded() -> [UInt8] { Array((try? JSONEncoder.sorted.encode(self)) ?? Data()) }
    public static func decode(_ bytes: [UInt8]) throws -> SnapshotCatalog { try JSONDecoder().decode(SnapshotCatalog.self, from: Data(bytes)) }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

/// Application ids start above the largest PID Linux can give (PID_MAX_LIMIT = 2^22,
/// include/linux/threads.h).
public enum ApplicationID {
    public static let base: Int32 = 10_000_000
    public static func isCluster(_ id: Int32) -> Bool { id > base }
}
