import Foundation
import Logging
import SSIControl
import SSIKDDM
import SSIObserve
import SSIScheduler
import SSISystem
import SSITransport
import ServiceLifecycle

/// The scheduler in the daemon: this node's Scheduling Configuration Changer, ticked every
/// 100 ms; the node's values published twice a second (and at once when it starts a move) in the KDDM set `scheduler` (object id =
/// node number), where every node's policies and aggregate filters read them; `ssi sched`.
/// Decisions go to the migrator once migration is assembled; until then they are logged
/// as not carried out.
final class SchedulerSubsystem: Subsystem, @unchecked Sendable {
    static let name = "scheduler"
    static let configuration: [ConfigKey] = [
        ConfigKey("settings", default: "", help: "the scheduler settings file (XML, docs/scheduler.md); empty: the built-in default.xml, which balances load by migration"),
        ConfigKey("node-groups", default: "", help: "the node's cgroup v1 cpu and cpuacct group directories, in that order: the cpu probe measures them; empty: the daemon's own groups, else the machine"),
    ]
    static let set = "scheduler"
    let core: NodeCore
    let engine: SchedulerEngine

    init(core: NodeCore, settings: [String: String]) throws {
        self.core = core
        let s = try settings["settings"].flatMap { $0.isEmpty ? nil : $0 }.map { try SchedulerSettings.load(path: $0) } ?? DefaultSettings.parsed()
        let groups = (settings["node-groups"] ?? "").split(separator: " ").map(String.init)
        let node: any NodeSource
        if groups.count == 2 {
            node = CgroupNode(cpuGroup: groups[0], cpuacctGroup: groups[1])
        } else if let own = CgroupNode.ofSelf() {
            node = own
        } else {
            node = HostNode()
        }
        engine = SchedulerEngine(core: core, scc: SchedulingConfigurationChanger(settings: s, me: Int(core.config.node), node: node))
    }

    var sets: [KDDMSetInfo] { [KDDMSetInfo(name: Self.set, rule: .hash)] }
    var services: [any Service] { [SchedulerLoop(engine: engine)] }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .scheduler(let r) = request else { throw misrouted(request) }
        switch r {
        case .status(let n): return .schedulerStatus(await engine.status(logLines: n))
        case .load(let xml, let source):
            let parsed = Result { () throws(SettingsError) in try SchedulerSettings.parse(Data(xml.utf8), source: source) }
            guard case .success(let s) = parsed else { if case .failure(let e) = parsed { throw e.ssiError }; return .done }
            if let e = await engine.load(s) { throw e.ssiError }
            return .schedulerStatus(await engine.status(logLines: 5))
        case .set(let element, let parameter, let value):
            try await engine.set(element: element, parameter: parameter, value: value)
            return .schedulerStatus(await engine.status(logLines: 5))
        case .place:
            return .decision(await engine.place())
        }
    }
}

/// The scheduler's state, one task at a time.
actor SchedulerEngine {
    let core: NodeCore
    let scc: SchedulingConfigurationChanger
    /// Every online node's last published view (node -> view), refreshed every `exchangePeriod`.
    var cluster: [Int: NodeView] = [:]
    var lastPublish = Date.distantPast
    /// Where applications come from: the process table (`connect`).
    var applications: @Sendable () async -> [AppView] = { [] }
    /// What carries out a migration decision: the process table's migration (`connect`).
    var migrator: (@Sendable (Int, Int) async throws -> Void)?
    /// Migrations this node's policies carried out, published with its view.
    var moves: [NodeView.Move] = []
    /// Applications this node's policies are moving now, and where.
    var moving: [Int: Int] = [:]
    var inFlight: Set<Int> { Set(moving.keys) }
    /// The empty nodes last reported (an event only when the list changes).
    var lastEmpty: [Int] = []

    /// Plugs in the application source and the migrator (NodeDaemon.connect).
    func connect(applications: @escaping @Sendable () async -> [AppView], migrator: @escaping @Sendable (Int, Int) async throws -> Void) {
        self.applications = applications
        self.migrator = migrator
    }

    init(core: NodeCore, scc: SchedulingConfigurationChanger) {
        self.core = core
        self.scc = scc
    }

    func start() throws {
        if let e = load(scc.settings) { throw e.ssiError }
    }

    func status(logLines: Int) -> SchedulerStatus { scc.status(logLines: logLines) }

    /// Applies `s`; the refusal, if any.
    func load(_ s: SchedulerSettings) -> SettingsError? {
        let before = scc.active
        if case .failure(let e) = Result(catching: { () throws(SettingsError) in try scc.load(s) }) { return e }
        noteSwitch(from: before, why: "new settings (\(s.source))")
        return nil
    }

    /// Kinds of the scheduler's events in `ssi events` and the dashboard.
    static let switched = ObserveEvent.Kind(rawValue: "sched-switch")
    static let decided = ObserveEvent.Kind(rawValue: "sched-migrate")
    static let placed = ObserveEvent.Kind(rawValue: "sched-place")
    static let moved = ObserveEvent.Kind(rawValue: "sched-migration-done")
    static let moveFailed = ObserveEvent.Kind(rawValue: "sched-migration-failed")
    static let emptied = ObserveEvent.Kind(rawValue: "sched-empty-nodes")

    func note(_ kind: ObserveEvent.Kind, app: Int? = nil, seconds: Double? = nil, _ message: String) {
        _ = core.observe.record(ObserveEvent(kind: kind, app: app.map { Int32($0) }, seconds: seconds, message: "node \(core.config.node): \(message)"))
    }

    func noteSwitch(from before: String?, why: String) {
        guard scc.active != before else { return }
        note(Self.switched, "configuration \(before ?? "(none)") -> \(scc.active ?? "(none)"): \(why)")
    }

    func set(element: String, parameter: String, value: String) throws {
        var s = scc.settings
        func patch(_ es: inout [SchedulerSettings.Element]) -> Bool {
            guard let i = es.firstIndex(where: { $0.name == element }) else { return false }
            es[i].parameters[parameter] = value
            return true
        }
        var found = patch(&s.shared)
        if let a = scc.active, let ci = s.configurations.firstIndex(where: { $0.name == a }) { found = patch(&s.configurations[ci].elements) || found }
        guard found else {
            throw SSIError(.notFound, "no probe, filter or policy named '\(element)' is loaded on node \(core.config.node)",
                           hint: "ssi sched status lists the loaded ones")
        }
        // Validated as a file would be, then applied.
        let result = Result { () throws(SettingsError) in
            try s.validate()
            try scc.load(s)
        }
        if case .failure(let e) = result { throw e.ssiError }
    }

    func place() -> Decision? {
        let d = scc.place(SchedulerView(now: Date(), nodes: onlineViews()))
        if let d, case .place(let n) = d.action { note(Self.placed, "\(d.policy) places the next application on node \(n): \(d.reason)") }
        return d
    }

    /// Each application's CPU use (share of one CPU) as its node last published it.
    func applicationCPU() -> [Int32: Double] {
        var out = [Int32: Double]()
        for v in onlineViews() { for a in v.apps { out[Int32(a.app)] = a.used ?? a.cpu } }
        return out
    }

    func onlineViews() -> [NodeView] {
        let online = Set(core.membership.online.map(Int.init))
        return cluster.values.filter { online.contains($0.node) }.sorted { $0.node < $1.node }
    }

    /// One round: publish and refresh the cluster's values every `exchangePeriod`, tick the SCC,
    /// carry out or log the decisions.
    func round() async {
        let now = Date()
        if now.timeIntervalSince(lastPublish) >= Self.exchangePeriod {
            lastPublish = now
            await exchange(now)
        }
        // Applications being moved are no longer this node's to decide about.
        let me = Int(core.config.node)
        let views = onlineViews().map { v -> NodeView in
            var v = v
            if v.node == me { v.apps.removeAll { inFlight.contains($0.app) } }
            return v
        }
        let before = scc.active
        let decisions = scc.tick(now: now, cluster: { name in
            Dictionary(uniqueKeysWithValues: views.compactMap { v in v.values[name].map { (v.node, $0) } })
        }, view: { SchedulerView(now: now, nodes: views) })
        noteSwitch(from: before, why: "its selector holds")
        for d in decisions {
            if case .emptyNodes(let nodes) = d.action, nodes != lastEmpty {
                lastEmpty = nodes
                note(Self.emptied, "\(d.policy): \(d.reason)")
            }
            guard case .migrate(let app, _, let to) = d.action else { continue }
            guard let migrator else {
                core.logger.info("scheduler: \(d.policy) decided to migrate app \(app) to node \(to), not carried out: migration is not assembled on this node")
                continue
            }
            // Several moves at once (a burst spreads in one migration's time, not in one per
            // application); each application once.
            guard !inFlight.contains(app), inFlight.count < Self.maxInFlight else { continue }
            moving[app] = to
            // Published at once: the other nodes count it at its target from now on.
            lastPublish = .distantPast
            note(Self.decided, app: app, "\(d.policy) moves application \(app) to node \(to): \(d.reason)")
            Task {
                let t0 = ContinuousClock.now
                do {
                    try await migrator(app, to)
                    let d = ContinuousClock.now - t0
                    self.note(Self.moved, app: app, seconds: Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18,
                              "application \(app) moved to node \(to) by the scheduler")
                    self.migrated(app, to: to, ok: true)
                } catch {
                    core.logger.warning("scheduler: migrating app \(app) to node \(to) failed: \(error)")
                    self.note(Self.moveFailed, app: app, "moving application \(app) to node \(to) failed: \(error)")
                    self.migrated(app, to: to, ok: false)
                }
            }
        }
    }

    static let maxInFlight = 3
    /// How often this node publishes its view and reads the others': what balancing sees is
    /// at most this old (plus a move's own publication, at once).
    static let exchangePeriod: TimeInterval = 0.5

    func migrated(_ app: Int, to: Int, ok: Bool) {
        moving[app] = nil
        guard ok else { scc.moveFailed(app: app); return }
        moves.append(NodeView.Move(app: app, from: Int(core.config.node), to: to, at: Date()))
        moves.removeAll { Date().timeIntervalSince($0.at) > 3600 }
        lastPublish = .distantPast
    }

    /// Publishes this node's view, then reads every online node's.
    func exchange(_ now: Date) async {
        let me = Int(core.config.node)
        let apps = await applications().map { a -> AppView in
            var a = a
            a.movingTo = moving[a.app]
            return a
        }
        let mine = NodeView(node: me, cpus: scc.values.first { $0.key.hasSuffix(".cpus") }?.value ?? 1,
                            configuration: scc.active ?? "", values: scc.values, apps: apps.filter { $0.node == me }, moves: moves)
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .secondsSince1970
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .secondsSince1970
        if let data = try? enc.encode(mine) { try? await core.kddm.store(SchedulerSubsystem.set, UInt64(me), Array(data)) }
        cluster[me] = mine
        for n in core.membership.online where Int(n) != me {
            if let bytes = try? await core.kddm.get(SchedulerSubsystem.set, UInt64(n)), let v = try? dec.decode(NodeView.self, from: Data(bytes)) {
                cluster[Int(n)] = v
            }
        }
    }
}

struct SchedulerLoop: Service {
    let engine: SchedulerEngine
    func run() async throws {
        try await engine.start()
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await engine.round()
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
