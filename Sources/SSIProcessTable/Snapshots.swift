import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// The process table's RPC services (block 200).
public enum ProcessTableService {
    /// Forwards a control request to the node that must answer it (the daemon's subsystem).
    public static let forward = ServiceBlock.processTable.number(1)
    /// The files of one snapshot version: name and size.
    public static let files = ServiceBlock.processTable.number(2)
    /// A piece of one file of a snapshot version.
    public static let chunk = ServiceBlock.processTable.number(3)
    /// Asks a node to pull a version from another (a replica).
    public static let pull = ServiceBlock.processTable.number(4)
    /// Deletes a version from a node's store.
    public static let deleteVersion = ServiceBlock.processTable.number(20)
}

struct FileRef: Codable { var app: Int32; var version: Int; var name: String; var offset: UInt64; var length: Int }
struct VersionRef: Codable { var app: Int32; var version: Int; var from: NodeID }
/// A version as another node receives it: its manifest, and every file with the size and
/// CRC-32C the copy must have (SnapshotStore.portable: pooled pages files whole).
struct PortableVersion: Codable { var manifest: Manifest; var files: [FileEntry] }

/// What `ssi checkpoint APP` asks.
public struct CheckpointSpec: Codable, Sendable, Equatable {
    public var app: Int32
    public var description: String
    /// Signal sent once the snapshot is on disk (`--kill`).
    public var kill: Int32?
    /// Copies on this many other online nodes.
    public var replicas: Int
    /// `-c`: the application is frozen already (`ssi checkpoint -f`, or a checkpoint taken
    /// together with others) and stays frozen.
    public var frozen: Bool?
    public init(app: Int32, description: String, kill: Int32?, replicas: Int, frozen: Bool? = nil) {
        (self.app, self.description, self.kill, self.replicas, self.frozen) = (app, description, kill, replicas, frozen)
    }
}

/// What a checkpoint made.
public struct CheckpointDone: Codable, Sendable {
    public var app: Int32
    public var version: Int
    public var node: NodeID
    public var replicas: [NodeID]
    public var date: String
    public var description: String
    public var frozenSeconds: Double
}

extension NodeApplications {
    /// One above the highest version of `app` the cluster's catalog records (nil when it
    /// cannot be read: this node's own numbering then).
    func nextVersion(_ app: Int32) async -> Int? {
        (try? await table.catalog(app))?.versions.map(\.version).max().map { $0 + 1 }
    }

    public func registerServices() {
        incoming.restoreOnCommit = { [self] request, version in restoreOnCommit(request, version: version) }
        rpc.register(ProcessTableService.files) { [self] _, p in
            let v = try JSONDecoder().decode(VersionRef.self, from: Data(p))
            return Array(try JSONEncoder().encode(try files(v.app, v.version)))
        }
        rpc.register(ProcessTableService.chunk) { [self] _, p in
            let f = try JSONDecoder().decode(FileRef.self, from: Data(p))
            return try chunk(f)
        }
        rpc.register(ProcessTableService.incoming) { [self] _, p in
            let (step, bytes) = try IncomingStep.decode(p)
            return Array(try JSONEncoder().encode(try await incoming.handle(step, bytes, store: store)))
        }
        rpc.register(ProcessTableService.migrateAbort) { [self] _, p in
            migrateAbort(try JSONDecoder().decode(MigrateAbort.self, from: Data(p)))
            return []
        }
        rpc.register(ProcessTableService.migrateCancel) { [self] _, p in
            await cancelMigration(try JSONDecoder().decode(Int32.self, from: Data(p)))
            return []
        }
        rpc.register(ProcessTableService.migrateIn) { [self] _, p in
            let m = try JSONDecoder().decode(MigrateIn.self, from: Data(p))
            // Started by the image's commit already: its outcome.
            if let token = m.token, let started = restoresOnCommit.withLock({ $0.removeValue(forKey: token) }) {
                try await started.value
            } else {
                try await migrateIn(m)
            }
            return []
        }
        rpc.register(ProcessTableService.deleteVersion) { [self] _, p in
            let v = try JSONDecoder().decode(VersionRef.self, from: Data(p))
            try deleteLocal(v.app, v.version)
            return []
        }
        rpc.register(ProcessTableService.pull) { [self] _, p in
            let v = try JSONDecoder().decode(VersionRef.self, from: Data(p))
            try await pull(v.app, v.version, from: v.from)
            return []
        }
    }

    // MARK: checkpoint

    /// Checkpoints a local application into this node's store, records the version in the
    /// `snapshots` set, then has `replicas` other online nodes pull a copy. A replica that
    /// fails is reported; the snapshot made here stays.
    public func checkpoint(_ spec: CheckpointSpec) async throws -> CheckpointDone {
        let root = try await localRoot(spec.app)
        var o = CheckpointEngine.CheckpointOptions()
        o.description = spec.description
        o.applicationID = spec.app
        o.alreadyFrozen = spec.frozen == true
        if let k = spec.kill { o.killSignal = Signal(rawValue: k) }
        o.firstVersion = await nextVersion(spec.app)
        // An application with an address of its own: its connections to other applications
        // are saved (TCP_REPAIR); a restart rebuilds or resets them (Restart.swift).
        let address = (try? await table.record(spec.app))?.address
        if address != nil { o.tcpEstablished = true }
        // Killed after its snapshot, it is restarted from it: its connections must not move
        // past what the snapshot has. Its kernel would otherwise go on acknowledging what its
        // peers send while the snapshot is written (the processes are stopped, their sockets
        // are not), the peers would drop those bytes as delivered, and the restart would have
        // to reset the connections (Restart.swift). So its traffic stops at the freeze,
        // before its sockets are read, and what came meanwhile is dropped with its link after
        // the kill: the peers send it again, to the restarted copy. One frozen already (a
        // checkpoint taken together) was locked by its freeze.
        let net = appNetwork.withLock { $0 }
        var lockedAddress: String? = nil
        if spec.kill != nil, let address, let net {
            if spec.frozen == true {
                lockedAddress = networkLocked.withLock { $0.removeValue(forKey: spec.app) }
            } else {
                let app = spec.app
                o.whenFrozen = { try net.lock(app: app, address: address, root: root) }
                lockedAddress = address
            }
        }
        let engine = CheckpointEngine(store: store)
        let opts = o
        let r: CheckpointEngine.CheckpointResult
        let app = spec.app
        checkpointing.withLock { _ = $0.insert(app) }
        defer { checkpointing.withLock { _ = $0.remove(app) } }
        do {
            r = try await Self.onThread { try engine.checkpoint(app: root, options: opts) }
        } catch {
            // It goes on: its traffic with it (a lock not made yet is undone harmlessly).
            if let lockedAddress {
                if spec.frozen == true { networkLocked.withLock { $0[spec.app] = lockedAddress } } else { net?.unlock(app: spec.app, address: lockedAddress, root: root) }
            }
            throw error
        }
        if let lockedAddress { net?.discardLock(app: spec.app, address: lockedAddress) }
        let m = try? store.manifest(app: spec.app, version: r.version)
        var v = SnapshotCatalog.Version(version: r.version, date: r.date, description: r.description, size: m?.totalBytes ?? 0, nodes: [me])
        v.added = m?.addedBytes
        try await table.addSnapshot(spec.app, v, holder: me)
        var done = CheckpointDone(app: spec.app, version: r.version, node: me, replicas: [], date: r.date,
                                  description: r.description, frozenSeconds: r.frozenSeconds)
        let others = table.online.subtracting([me]).sorted()
        guard spec.replicas > 0 else { return done }
        guard others.count >= spec.replicas else {
            throw SSIError(.state, "application \(spec.app): snapshot v\(r.version) was made on node \(me), but \(spec.replicas) replicas need \(spec.replicas) other online nodes and there are \(others.count)",
                           hint: "ssi snapshots \(spec.app) shows where it is; add nodes, or ask fewer --replicas")
        }
        for n in others.prefix(spec.replicas) {
            do {
                let ref = VersionRef(app: spec.app, version: r.version, from: me)
                _ = try await rpc.call(n, service: ProcessTableService.pull, Array(try JSONEncoder().encode(ref)), timeout: .seconds(300))
                done.replicas.append(n)
            } catch {
                throw SSIError(.system, "application \(spec.app): snapshot v\(r.version) was made on node \(me) but its replica on node \(n) failed: \(error)",
                               hint: "the snapshot on node \(me) is intact; try again with --replicas")
            }
        }
        return done
    }

    /// Deletes version `version` of `app` on every node that holds it (the other versions
    /// keep every page they need: SnapshotStore.delete), then from the catalog. A holder
    /// that is offline or fails keeps its copy, and the error names it.
    public func deleteSnapshot(_ app: Int32, _ version: Int) async throws -> SnapshotCatalog {
        let catalog = try await table.catalog(app)
        guard let entry = catalog.versions.first(where: { $0.version == version }) else {
            let all = catalog.versions.map { "v\($0.version)" }.joined(separator: ", ")
            throw SSIError(.notFound, "application \(app) has no snapshot version \(version) (versions: \(all.isEmpty ? "none" : all))", hint: "ssi snapshots \(app) lists them")
        }
        var kept = [String]()
        let ref = Array(try JSONEncoder().encode(VersionRef(app: app, version: version, from: me)))
        for n in entry.nodes {
            do {
                if n == me { try deleteLocal(app, version); continue }
                guard table.online.contains(n) else { kept.append("node \(n) (offline)"); continue }
                _ = try await rpc.call(n, service: ProcessTableService.deleteVersion, ref, timeout: .seconds(60))
            } catch { kept.append("node \(n) (\(error))") }
        }
        let c = try await table.removeSnapshot(app, version)
        guard kept.isEmpty else {
            throw SSIError(.system, "application \(app): version \(version) is no longer listed, but its copy stays on \(kept.joined(separator: ", "))",
                           hint: "delete it there by hand: SSI_CHKPT_DIR=<that node's snapshot directory> ssi snapshots --delete \(app) \(version)")
        }
        return c
    }

    /// A version absent here is already deleted.
    func deleteLocal(_ app: Int32, _ version: Int) throws {
        if store.versions(app).contains(version) { try store.delete(app: app, version: version) }
    }

    // MARK: moving snapshots between nodes

    /// A version's files as another node copies them: a pooled version's pages go whole (the
    /// copy never names a pool page the other node lacks).
    func files(_ app: Int32, _ version: Int) throws -> PortableVersion {
        guard store.versions(app).contains(version) else {
            throw SSIError(.notFound, "node \(me) has no snapshot v\(version) of application \(app) (\(store.directory(app, version: version)))",
                           hint: "ssi snapshots \(app) shows which nodes hold it")
        }
        let (m, files) = try store.portable(app: app, version: version)
        return PortableVersion(manifest: m, files: files)
    }

    func chunk(_ f: FileRef) throws -> [UInt8] {
        guard f.length <= Self.chunkSize else { throw SSIError(.invalidArgument, "bad snapshot file request \(f.name)") }
        do { return try store.readPortable(app: f.app, version: f.version, name: f.name, offset: f.offset, length: f.length) } catch let e as SSIError {
            throw SSIError(e.kind, "node \(me): \(e.message)", hint: e.hint)
        }
    }

    /// 4 MiB per RPC: well under the transport's 16 MiB frame.
    static let chunkSize = 4 << 20

    /// Copies version `version` of `app` from node `from` into this node's store: every file
    /// streamed in chunks over the cluster's authenticated RPC into a new version written
    /// as a checkpoint writes one (pages into this node's page pool, where pages it already
    /// holds are not written again), each file checked against the size and CRC-32C the
    /// source gave before the version is committed under its number, so a copy cut short
    /// or damaged never becomes a version.
    public func pull(_ app: Int32, _ version: Int, from node: NodeID) async throws {
        if store.versions(app).contains(version) { return }
        let ref = Array(try JSONEncoder().encode(VersionRef(app: app, version: version, from: node)))
        let list = try JSONDecoder().decode(PortableVersion.self, from: Data(try await rpc.call(node, service: ProcessTableService.files, ref, timeout: .seconds(30))))
        let writer = try store.beginWrite(app: app)
        do {
            for f in list.files { try await fetch(f, app: app, version: version, from: node, into: writer) }
            _ = try writer.commit(copying: list.manifest)
        } catch {
            writer.abort()
            throw SSIError(.system, "node \(me): copying snapshot v\(version) of application \(app) from node \(node) failed: \(error)",
                           hint: "nothing was kept; the copy on node \(node) is untouched")
        }
        let c = try await table.catalog(app)
        if let v = c.versions.first(where: { $0.version == version }) { try await table.addSnapshot(app, v, holder: me) }
    }

    private func fetch(_ f: FileEntry, app: Int32, version: Int, from node: NodeID, into writer: SnapshotWriter) async throws {
        let out = try writer.createFile(f.name)
        var off: UInt64 = 0
        while off < f.size {
            let want = Int(min(UInt64(Self.chunkSize), f.size - off))
            let req = Array(try JSONEncoder().encode(FileRef(app: app, version: version, name: f.name, offset: off, length: want)))
            let bytes = try await rpc.call(node, service: ProcessTableService.chunk, req, timeout: .seconds(60))
            guard !bytes.isEmpty else { throw SSIError(.corrupt, "\(f.name) ended early on node \(node)") }
            try bytes.withUnsafeBytes { try out.append($0) }
            off += UInt64(bytes.count)
        }
        // Synced by the commit, with every other file of the version.
        let got = try out.finish(sync: false)
        guard got.size == f.size, got.crc32c == f.crc32c else {
            throw SSIError(.corrupt, "\(f.name) arrived as \(got.size) bytes with CRC-32C \(String(got.crc32c, radix: 16)); node \(node) has \(f.size) bytes with \(String(f.crc32c, radix: 16))")
        }
    }
}
