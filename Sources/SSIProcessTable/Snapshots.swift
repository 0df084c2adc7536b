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
}

struct FileRef: Codable { var app: Int32; var version: Int; var name: String; var offset: UInt64; var length: Int }
struct VersionRef: Codable { var app: Int32; var version: Int; var from: NodeID }
struct FileInfo: Codable { var name: String; var size: UInt64 }

/// What `ssi checkpoint APP` asks.
public struct CheckpointSpec: Codable, Sendable, Equatable {
    public var app: Int32
    public var description: String
    /// Signal sent once the snapshot is on disk (`--kill`).
    public var kill: Int32?
    /// Copies on this many other online nodes.
    public var replicas: Int
    public init(app: Int32, description: String, kill: Int32?, replicas: Int) {
        (self.app, self.description, self.kill, self.replicas) = (app, description, kill, replicas)
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
    public func registerServices() {
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
            return Array(try JSONEncoder().encode(try incoming.handle(step, bytes, store: store)))
        }
        rpc.register(ProcessTableService.migrateIn) { [self] _, p in
            try await migrateIn(try JSONDecoder().decode(MigrateIn.self, from: Data(p)))
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
        if let k = spec.kill { o.killSignal = Signal(rawValue: k) }
        let engine = CheckpointEngine(store: store)
        let opts = o
        let r = try await Self.onThread { try engine.checkpoint(app: root, options: opts) }
        let size = (try? files(spec.app, r.version).reduce(UInt64(0)) { $0 + $1.size }) ?? 0
        let v = SnapshotCatalog.Version(version: r.version, date: r.date, description: r.description, size: size, nodes: [me])
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

    // MARK: moving snapshots between nodes

    func files(_ app: Int32, _ version: Int) throws -> [FileInfo] {
        let dir = store.directory(app, version: version)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else {
            throw SSIError(.notFound, "node \(me) has no snapshot v\(version) of application \(app) (\(dir))", hint: "ssi snapshots \(app) shows which nodes hold it")
        }
        return names.sorted().map { n in
            var st = stat()
            stat("\(dir)/\(n)", &st)
            return FileInfo(name: n, size: UInt64(st.st_size))
        }
    }

    func chunk(_ f: FileRef) throws -> [UInt8] {
        guard !f.name.contains("/"), f.length <= Self.chunkSize else { throw SSIError(.invalidArgument, "bad snapshot file request \(f.name)") }
        let path = "\(store.directory(f.app, version: f.version))/\(f.name)"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SSIError.sys("node \(me): open \(path)", errno: errno) }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: f.length)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, f.length, off_t(f.offset)) }
        guard n >= 0 else { throw SSIError.sys("node \(me): read \(path)", errno: errno) }
        return Array(buf.prefix(n))
    }

    /// 4 MiB per RPC: well under the transport's 16 MiB frame.
    static let chunkSize = 4 << 20

    /// Copies version `version` of `app` from node `from` into this node's store: every file
    /// streamed in chunks over the cluster's authenticated RPC into a temporary directory,
    /// then verified whole by the snapshot's own checksums (Snapshot.load: the manifest's
    /// CRC, each file's CRC-32C and size) before it is renamed into place, so a copy cut
    /// short or damaged never becomes a version.
    public func pull(_ app: Int32, _ version: Int, from node: NodeID) async throws {
        if store.versions(app).contains(version) { return }
        let ref = Array(try JSONEncoder().encode(VersionRef(app: app, version: version, from: node)))
        let list = try JSONDecoder().decode([FileInfo].self, from: Data(try await rpc.call(node, service: ProcessTableService.files, ref, timeout: .seconds(30))))
        let appDir = store.appDirectory(app)
        try FileManager.default.createDirectory(atPath: appDir, withIntermediateDirectories: true)
        let tmp = "\(appDir)/.tmp-\(getpid())-pull-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(tmp, 0o700) == 0 else { throw SSIError.sys("node \(me): mkdir \(tmp)", errno: errno) }
        do {
            for f in list { try await fetch(f, app: app, version: version, from: node, into: tmp) }
            _ = try Snapshot.load(directory: tmp)
            let dest = store.directory(app, version: version)
            guard rename(tmp, dest) == 0 else { throw SSIError.sys("node \(me): rename \(tmp) to \(dest)", errno: errno) }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw SSIError(.system, "node \(me): copying snapshot v\(version) of application \(app) from node \(node) failed: \(error)",
                           hint: "nothing was kept; the copy on node \(node) is untouched")
        }
        let c = try await table.catalog(app)
        if let v = c.versions.first(where: { $0.version == version }) { try await table.addSnapshot(app, v, holder: me) }
    }

    private func fetch(_ f: FileInfo, app: Int32, version: Int, from node: NodeID, into dir: String) async throws {
        let fd = open("\(dir)/\(f.name)", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SSIError.sys("create \(dir)/\(f.name)", errno: errno) }
        defer { close(fd) }
        var off: UInt64 = 0
        while off < f.size {
            let want = Int(min(UInt64(Self.chunkSize), f.size - off))
            let req = Array(try JSONEncoder().encode(FileRef(app: app, version: version, name: f.name, offset: off, length: want)))
            let bytes = try await rpc.call(node, service: ProcessTableService.chunk, req, timeout: .seconds(60))
            guard !bytes.isEmpty else { throw SSIError(.corrupt, "\(f.name) ended early on node \(node)") }
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(off)) }
            guard n == bytes.count else { throw SSIError.sys("write \(dir)/\(f.name)", errno: errno) }
            off += UInt64(n)
        }
        guard fsync(fd) == 0 else { throw SSIError.sys("fsync \(dir)/\(f.name)", errno: errno) }
    }
}
