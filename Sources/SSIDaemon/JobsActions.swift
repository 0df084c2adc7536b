import Foundation
import SSIControl
import SSICheckpoint
import SSIProcessTable
import SSIScheduler
import SSISystem
import SSITransport
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// What a job's owner asks the node of its application to do.
struct AppAction: Codable {
    enum Kind: String, Codable { case freeze, thaw, terminate }
    var kind: Kind
    var app: Int32
    var pid: Int32
}

extension JobsSubsystem {
    /// hold, release, suspend, resume, terminate, on the owner.
    func change(_ job: JobRecord, _ r: JobsRequest) async throws -> JobRecord {
        var j = job
        func refuse(_ what: String, _ states: String) -> SSIError {
            SSIError(.state, "job \(j.job) is \(j.state.rawValue): only a \(states) job can be \(what)", hint: "ssi jobs shows every job's state")
        }
        switch r {
        case .hold:
            guard j.state == .queued else { throw refuse("held", "queued") }
            j.state = .held
        case .release:
            guard j.state == .held else { throw refuse("released", "held") }
            j.state = .queued
        case .suspend:
            guard j.state == .running, let app = j.app else { throw refuse("suspended", "running") }
            try await onAppNode(.freeze, app)
            j.state = .suspended
        case .resume:
            guard j.state == .suspended, let app = j.app else { throw refuse("resumed", "suspended") }
            try await onAppNode(.thaw, app)
            j.state = .running
        case .terminate:
            guard !j.isFinal else { throw refuse("terminated", "queued, held, running or suspended") }
            if let app = j.app, j.state == .running || j.state == .suspended || j.state == .lost {
                if j.state == .suspended { try await onAppNode(.thaw, app) }
                if j.state != .lost { try await onAppNode(.terminate, app) }
            }
            j.state = .terminated
            j.ended = Date().timeIntervalSince1970
        default:
            break
        }
        try await write(j)
        return j
    }

    /// Runs `kind` on the node where application `app` runs.
    func onAppNode(_ kind: AppAction.Kind, _ app: Int32) async throws {
        guard let show = hooks.withLock({ $0.application }) else {
            throw SSIError(.unsupported, "node \(me): no process table is assembled in this daemon")
        }
        let rec = try await show(app)
        let a = AppAction(kind: kind, app: app, pid: rec.pid)
        if Int(rec.node) == me { return try act(a) }
        _ = try await core.rpc.call(rec.node, service: Self.actService, Array(try JSONEncoder().encode(a)), timeout: .seconds(10))
    }

    /// Does it here: freeze or thaw the application's cgroup (the freezer waits for the
    /// kernel to report it frozen), or TERM its init, which passes it on to the command and
    /// exits when it does; KILL after 5 s if it has not (pid_namespaces(7): killing a
    /// namespace's init kills every process in it).
    func act(_ a: AppAction) throws {
        switch a.kind {
        case .freeze, .thaw:
            let f = try CgroupFreezer.require()
            if a.kind == .freeze { try f.freeze(a.app) } else { try f.thaw(a.app) }
        case .terminate:
            guard kill(a.pid, SIGTERM) == 0 || errno == ESRCH else { throw SSIError.sys("kill \(a.pid) (application \(a.app))", errno: errno) }
            let pid = a.pid
            Task.detached {
                try? await Task.sleep(for: .seconds(5))
                if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
            }
        }
    }

    /// One pass of the owner's loop: start queued jobs, follow running ones.
    func step() async {
        let mine = live.withLock { $0 }
        guard !mine.isEmpty else { return }
        let h = hooks.withLock { $0 }
        for id in mine.sorted() {
            guard var j = try? await read(id), j.owner == me else { continue }
            let before = j
            if j.state == .queued, let launch = h.launch {
                await startQueued(&j, launch: launch, place: h.place)
            } else if let app = j.app, [.running, .suspended, .lost].contains(j.state), let show = h.application,
                      let rec = try? await show(app) {
                switch rec.state {
                case .stopped:
                    j.exitStatus = rec.exit_status
                    j.state = rec.exit_status == 0 ? .done : .failed
                    j.ended = Date().timeIntervalSince1970
                case .lost: j.state = .lost
                case .running where j.state == .lost: j.state = .running
                default: break
                }
            }
            // A change asked meanwhile (ssi terminate: it ends the application, then writes
            // `terminated`) wins over what this pass saw of a started job: the record is read
            // again just before, and left alone if it moved. Not a grab: a write may still
            // slip in between the two, a window of one KDDM read instead of this whole pass.
            // A job this pass started is written whatever happened: its application runs.
            guard j != before else { continue }
            if before.state != .queued, (try? await read(id)) != before { continue }
            try? await write(j)
        }
    }

    /// Starts a queued job within the cluster's limit on running jobs. With a limit, object 0
    /// of `jobs` (the limit) is grabbed, KDDM's exclusive write access, for the count and the
    /// start, and put back unchanged once the job is recorded running: two owners never both
    /// take the last place. A job held back says why (`waiting`, shown by `ssi jobs`).
    func startQueued(_ j: inout JobRecord, launch: @Sendable (LaunchSpec) async throws -> AppRecord, place: (@Sendable () async -> Int?)?) async {
        guard await limit() > 0 else { return await start(&j, launch: launch, place: place) }
        let held: [UInt8]?
        do { held = try await core.kddm.grab(Self.set, Self.limitObject) } catch { return }   // another owner is starting one: next round
        let max = held.flatMap { try? JSONDecoder().decode(JobLimit.self, from: Data($0)) }.map(\.maxRunning) ?? 0
        let running = ((try? await all()) ?? []).filter { $0.state == .running || $0.state == .suspended }.count
        if max > 0 && running >= max {
            j.waiting = "\(running) of at most \(max) jobs running"
        } else {
            j.waiting = nil
            await start(&j, launch: launch, place: place)
            try? await write(j)
        }
        if let held { try? await core.kddm.put(Self.set, Self.limitObject, held) } else { try? await core.kddm.release(Self.set, Self.limitObject) }
    }

    /// Launches a job as a cluster application, where it asked or where placement says.
    func start(_ j: inout JobRecord, launch: @Sendable (LaunchSpec) async throws -> AppRecord, place: (@Sendable () async -> Int?)?) async {
        var node = me
        if let asked = j.node { node = asked } else if let placed = await place?() { node = placed }
        do {
            var spec = LaunchSpec(command: j.command, environment: j.environment, directory: j.directory,
                                  node: NodeID(node), log: true, caps: ["CAN_MIGRATE"])
            spec.nice = j.nice
            let r = try await launch(spec)
            (j.state, j.app, j.startedOn, j.started) = (.running, r.app, Int(r.node), Date().timeIntervalSince1970)
        } catch {
            (j.state, j.error, j.ended) = (.failed, "\(error)", Date().timeIntervalSince1970)
        }
    }

    /// After a restart of this daemon: take back the jobs it owns that may still change.
    func reload() async {
        let ids = ((try? await all()) ?? []).filter { $0.owner == me && !$0.isFinal }.map(\.job)
        live.withLock { $0.formUnion(ids) }
    }
}

struct JobsRunner: Service {
    let jobs: JobsSubsystem
    func run() async throws {
        await jobs.reload()
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await jobs.step()
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
    }
}
