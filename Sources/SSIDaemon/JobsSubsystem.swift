import Foundation
import SSIControl
import SSIKDDM
import SSIProcessTable
import SSIScheduler
import SSISystem
import SSITransport
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Jobs (`ssi submit`, `ssi jobs`, `ssi wait`, `hold/release`, `suspend/resume`,
/// `terminate`): records in the KDDM set `jobs`, each written only by its owner (the node
/// that took the submission; other nodes forward to it over RPC). The owner starts queued
/// jobs as cluster applications through the process table, where the placement policy says
/// (or on the node asked for), and follows their applications to their end.
final class JobsSubsystem: Subsystem, @unchecked Sendable {
    static let name = "jobs"
    static let configuration: [ConfigKey] = [
        ConfigKey("max-running", default: "0", help: "the cluster-wide limit on running (and suspended) jobs, written when this node starts; 0: leave it as it is (ssi jobs --max-running N changes it at run time)"),
    ]
    static let set = "jobs"
    /// Job numbers come from this KDDM counter (the process table's ids use object 1).
    static let counter: UInt64 = 2
    static let forwardService = ServiceBlock.scheduler.number(10)
    static let actService = ServiceBlock.scheduler.number(11)

    let core: NodeCore
    /// `jobs.max-running`, written to the cluster's limit at start when above 0.
    let configuredLimit: Int
    /// Object 0 of `jobs`: the limit, and the lock every owner takes to start a job under it.
    static let limitObject: UInt64 = 0
    let hooks = Mutex(Hooks())
    /// Jobs this node owns that may still change.
    let live = Mutex<Set<Int>>([])

    struct Hooks {
        var launch: (@Sendable (LaunchSpec) async throws -> AppRecord)?
        var application: (@Sendable (Int32) async throws -> AppRecord)?
        var place: (@Sendable () async -> Int?)?
    }

    init(core: NodeCore, settings: [String: String]) throws {
        self.core = core
        guard let n = Int(settings["max-running"] ?? "0"), n >= 0 else {
            throw SSIError(.invalidArgument, "jobs.max-running = \(settings["max-running"] ?? ""): not a whole number of at least 0", hint: "e.g. jobs.max-running = 4 (0: no limit)")
        }
        configuredLimit = n
    }

    var me: Int { Int(core.config.node) }
    var sets: [KDDMSetInfo] { [KDDMSetInfo(name: Self.set, rule: .hash)] }
    var services: [any Service] { [JobsRunner(jobs: self)] }

    func start() async throws {
        if configuredLimit > 0 { try await core.kddm.store(Self.set, Self.limitObject, Array(try JSONEncoder().encode(JobLimit(maxRunning: configuredLimit)))) }
        core.rpc.register(Self.forwardService) { [self] _, p in
            let r = try JSONDecoder().decode(JobsRequest.self, from: Data(p))
            return Array(try JSONEncoder().encode(try await answer(r)))
        }
        core.rpc.register(Self.actService) { [self] _, p in
            let a = try JSONDecoder().decode(AppAction.self, from: Data(p))
            try act(a)
            return []
        }
    }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .jobs(let r) = request else { throw misrouted(request) }
        return try await answer(r)
    }

    // MARK: records

    func read(_ job: Int) async throws -> JobRecord {
        guard let bytes = try await core.kddm.get(Self.set, UInt64(job)) else {
            throw SSIError(.notFound, "no job \(job)", hint: "ssi jobs lists them")
        }
        return try JSONDecoder().decode(JobRecord.self, from: Data(bytes))
    }

    func write(_ j: JobRecord) async throws {
        try await core.kddm.store(Self.set, UInt64(j.job), Array(try JSONEncoder().encode(j)))
        live.withLock { l in if j.isFinal { l.remove(j.job) } else { l.insert(j.job) } }
    }

    func all() async throws -> [JobRecord] {
        try await core.kddm.list(Self.set).filter { $0.id != Self.limitObject }
            .compactMap { try? JSONDecoder().decode(JobRecord.self, from: Data($0.value)) }.sorted { $0.job < $1.job }
    }

    func limit() async -> Int {
        guard let b = try? await core.kddm.get(Self.set, Self.limitObject), let l = try? JSONDecoder().decode(JobLimit.self, from: Data(b)) else { return 0 }
        return l.maxRunning
    }

    // MARK: requests

    func answer(_ r: JobsRequest) async throws -> ControlReply {
        switch r {
        case .submit(let s):
            guard !s.command.isEmpty else { throw SSIError(.invalidArgument, "ssi submit: no command given", hint: "ssi submit [--node N|auto] -- CMD ARGS") }
            if let n = s.node, core.membership.view[NodeID(n)]?.state != .online {
                throw SSIError(.unreachable, "node \(n) is not online: job not submitted", hint: "ssi nodes status lists them; --node auto lets the scheduler choose")
            }
            let id = try await core.kddm.increment("counters", Self.counter, count: 1)
            var j = JobRecord(job: id, name: s.name ?? URL(fileURLWithPath: s.command[0]).lastPathComponent, command: s.command,
                              directory: s.directory, environment: s.environment, node: s.node, owner: me, held: s.hold)
            j.nice = s.nice
            try await write(j)
            return .job(j)
        case .list:
            return .jobList(try await all())
        case .limit(let n):
            guard n >= 0 else { throw SSIError(.invalidArgument, "--max-running \(n): not a whole number of at least 0", hint: "e.g. ssi jobs --max-running 4 (0: no limit)") }
            try await core.kddm.store(Self.set, Self.limitObject, Array(try JSONEncoder().encode(JobLimit(maxRunning: n))))
            return .jobList(try await all())
        case .show(let job):
            return .job(try await read(job))
        case .hold(let job), .release(let job), .suspend(let job), .resume(let job), .terminate(let job):
            let j = try await read(job)
            if j.owner != me { return try await forward(r, to: j.owner) }
            return .job(try await change(j, r))
        }
    }

    func forward(_ r: JobsRequest, to n: Int) async throws -> ControlReply {
        guard core.membership.view[NodeID(n)]?.state == .online else {
            throw SSIError(.unreachable, "job's owner, node \(n), is not online: its jobs cannot change now", hint: "bring node \(n) back (ssi nodes status)")
        }
        let out = try await core.rpc.call(NodeID(n), service: Self.forwardService, Array(try JSONEncoder().encode(r)), timeout: .seconds(30))
        return try JSONDecoder().decode(ControlReply.self, from: Data(out))
    }
}
