import Foundation

/// The built-in policy types.
public enum PolicyKind: String, CaseIterable, Sendable {
    /// Where `ssi run --node auto` starts an application: the node with the lowest input value.
    case placement
    /// Sender-initiated load balancing by migration, as MOSIX does: a node whose load exceeds
    /// the least loaded node's by `threshold` sends it the application whose move evens the
    /// two best, when the move is worth its price.
    case balance
    /// Packs light applications onto few nodes and reports the nodes left empty (the seed's
    /// night-time energy example).
    case consolidate
    /// Decides nothing.
    case none
    /// An external program decides (docs/scheduler.md, "Plug-ins").
    case external
}

/// One application as policies see it.
public struct AppView: Codable, Sendable, Equatable {
    public var app: Int
    public var node: Int
    /// CPUs it used recently (1.0 = one CPU busy).
    public var cpu: Double
    public var rssBytes: UInt64
    /// When it arrived on its node (launch, restart or migration).
    public var arrived: Date
    /// Kerrighed's CAN_MIGRATE capability.
    public var canMigrate: Bool
    /// Nodes it left, and when: what anti-ping-pong reads.
    public var departures: [Departure]
    /// When it was launched (its age: balancing moves the oldest first); nil: `arrived`.
    public var started: Date?
    /// Share of a CPU it used over the last sample (what `ssi ps` shows); `cpu` is its
    /// demand (at least one CPU per runnable thread), what balancing weighs.
    public var used: Double?
    /// The node a migration under way is taking it to (its node publishes it so that every
    /// node's policies count it there already, `measure="apps"`); nil: not moving.
    public var movingTo: Int?

    public struct Departure: Codable, Sendable, Equatable {
        public var node: Int
        public var at: Date
        public init(node: Int, at: Date) { self.node = node; self.at = at }
    }

    public init(app: Int, node: Int, cpu: Double, rssBytes: UInt64 = 0, arrived: Date, canMigrate: Bool = true, departures: [Departure] = []) {
        self.app = app; self.node = node; self.cpu = cpu; self.rssBytes = rssBytes
        self.arrived = arrived; self.canMigrate = canMigrate; self.departures = departures
    }
}

/// One node as policies see it: its published values and its applications.
public struct NodeView: Codable, Sendable, Equatable {
    public var node: Int
    public var online: Bool
    public var cpus: Double
    public var configuration: String
    public var values: [String: Double]
    public var apps: [AppView]
    /// Migrations this node's policies carried out lately: with the applications'
    /// departures, what anti-ping-pong reads (an application's new node does not know them).
    public var moves: [Move]?

    public struct Move: Codable, Sendable, Equatable {
        public var app: Int
        public var from: Int
        public var to: Int
        public var at: Date
        public init(app: Int, from: Int, to: Int, at: Date) { (self.app, self.from, self.to, self.at) = (app, from, to, at) }
    }

    public init(node: Int, online: Bool = true, cpus: Double, configuration: String = "", values: [String: Double], apps: [AppView] = [], moves: [Move]? = nil) {
        self.node = node; self.online = online; self.cpus = cpus
        self.configuration = configuration; self.values = values; self.apps = apps; self.moves = moves
    }
}

public struct SchedulerView: Codable, Sendable, Equatable {
    public var now: Date
    public var nodes: [NodeView]
    public init(now: Date, nodes: [NodeView]) { self.now = now; self.nodes = nodes }
    public func node(_ k: Int) -> NodeView? { nodes.first { $0.node == k } }
}

/// What a policy decided, and why (shown by `ssi sched log`).
public struct Decision: Codable, Sendable, Equatable {
    public enum Action: Codable, Sendable, Equatable {
        case migrate(app: Int, from: Int, to: Int)
        case place(node: Int)
        case emptyNodes([Int])
    }
    public var policy: String
    public var action: Action
    public var reason: String
    public init(policy: String, action: Action, reason: String) { self.policy = policy; self.action = action; self.reason = reason }
}

/// The rules every migrating policy obeys (anti-ping-pong, the seed's future work):
/// - an application that has moved stays at least `min-residence-ms` where it arrived (one
///   launched and never moved may leave at once);
/// - an application moved from A to B goes back from B to A (a reversal) only
///   `return-after-ms` after its last move, four times longer for each earlier reversal of it
///   within `window-s`, and after `max-reversals` no more for the rest of the window;
/// - between two nodes whose configurations differ (they may pull opposite ways), the same
///   holds for every application together (B to A after A to B, whichever moved): two nodes
///   with opposing configurations settle instead of trading applications for ever. Moves in
///   one direction (spreading a burst) are never held back;
/// - a move must be worth its price: expected gain (load removed from the busiest of the two
///   nodes, times `gain-horizon-s`) above its cost (`fixed-cost-ms` plus its memory sent at
///   `bandwidth-mbps`);
/// - at most `max-per-minute` migrations started by one node's policy per minute.
public struct MigrationRules: Sendable {
    public var minResidence: TimeInterval
    public var returnAfter: TimeInterval
    public var maxReversals: Int
    public var window: TimeInterval
    public var horizon: TimeInterval
    public var fixedCost: TimeInterval
    public var bandwidth: Double
    public var maxPerMinute: Int

    public init(_ e: SchedulerSettings.Element) {
        minResidence = e.double("min-residence-ms", 10_000) / 1000
        returnAfter = e.double("return-after-ms", 60_000) / 1000
        maxReversals = e.int("max-reversals", 3)
        window = e.double("window-s", 3600)
        horizon = e.double("gain-horizon-s", 10)
        fixedCost = e.double("fixed-cost-ms", 200) / 1000
        bandwidth = e.double("bandwidth-mbps", 100) * 1_000_000
        maxPerMinute = e.int("max-per-minute", 6)
    }

    /// Every move the view remembers, from the applications' departures: (from, to, when).
    static func moves(_ view: SchedulerView) -> [(app: Int, from: Int, to: Int, at: Date)] {
        var out: [(Int, Int, Int, Date)] = []
        var seen = Set<String>()
        for n in view.nodes {
            for m in n.moves ?? [] where seen.insert("\(m.app)@\(m.at.timeIntervalSince1970)").inserted { out.append((m.app, m.from, m.to, m.at)) }
        }
        for n in view.nodes {
            for a in n.apps {
                let deps = a.departures.sorted { $0.at < $1.at }
                for (i, d) in deps.enumerated() where seen.insert("\(a.app)@\(d.at.timeIntervalSince1970)").inserted {
                    out.append((a.app, d.node, i + 1 < deps.count ? deps[i + 1].node : a.node, d.at))
                }
            }
        }
        return out
    }

    /// Why `a` may not move from `from` to `target` now, or nil if it may.
    public func refusal(_ a: AppView, from: Int, to target: Int, view: SchedulerView) -> String? {
        if !a.canMigrate { return "app \(a.app) lacks CAN_MIGRATE" }
        let now = view.now
        let stayed = now.timeIntervalSince(a.arrived)
        // Residence guards against moving *again*: an application launched here and never
        // moved may leave at once (a burst started on one node spreads without waiting).
        if !a.departures.isEmpty && stayed < minResidence { return "app \(a.app) arrived \(Int(stayed)) s ago (minimum residence \(Int(minResidence)) s)" }
        let pair = Self.moves(view).filter { ($0.from == target && $0.to == from) || ($0.from == from && $0.to == target) }
            .filter { now.timeIntervalSince($0.at) < window }.sorted { $0.at < $1.at }
        // The application's own moves between the two nodes; and, when the two nodes run
        // different configurations (which may pull opposite ways), every application's.
        if let why = reversal(pair.filter { $0.app == a.app }, from: from, to: target, now: now, what: "app \(a.app)") { return why }
        let configs = (view.node(from)?.configuration, view.node(target)?.configuration)
        if configs.0 != configs.1, let why = reversal(pair, from: from, to: target, now: now, what: "nodes \(from) (\(configs.0 ?? "?")) and \(target) (\(configs.1 ?? "?"))") {
            return why
        }
        return nil
    }

    /// A move from `from` to `to` against the direction of the last of `moves` (time
    /// ordered, between the two nodes) is a reversal; counts the reversals it would make.
    func reversal(_ moves: [(app: Int, from: Int, to: Int, at: Date)], from: Int, to target: Int, now: Date, what: String) -> String? {
        guard let last = moves.last, last.from == target else { return nil }
        var flips = 1
        for (a, b) in zip(moves, moves.dropFirst()) where a.from != b.from { flips += 1 }
        if flips > maxReversals {
            return "\(what): moved between nodes \(from) and \(target) against the last direction \(flips - 1) times within \(Int(window)) s: no move back before that window ends"
        }
        let wait = returnAfter * pow(4, Double(flips - 1))
        if now.timeIntervalSince(last.at) < wait {
            return "\(what): node \(target) sent an application to node \(from) \(Int(now.timeIntervalSince(last.at))) s ago (moves back wait \(Int(wait)) s)"
        }
        return nil
    }

    /// The price of moving `a`, in seconds.
    public func cost(_ a: AppView) -> TimeInterval { fixedCost + Double(a.rssBytes) / bandwidth }
}

/// The state a policy keeps between rounds.
public final class Policy {
    public var element: SchedulerSettings.Element
    public let kind: PolicyKind
    var started: [Date] = []
    var pending: [Pending] = []

    init(_ element: SchedulerSettings.Element) {
        self.element = element
        kind = PolicyKind(rawValue: element.type) ?? .none
    }

    public var name: String { element.name }
    public var input: String { element.parameters["input"] ?? "" }
    public var period: TimeInterval { element.double("period-ms", 2000) / 1000 }

    /// What the policy compares nodes by: `measure="input"` (the default) the value it is
    /// connected to, e.g. the node's run queue averaged over a few samples, which counts
    /// every process of the node; `measure="apps"` the demand of the node's applications
    /// per CPU (each one's runnable threads, at least its recent CPU use), from the lists the
    /// nodes publish: fresh each exchange, no average lagging seconds behind a move or a job
    /// that ended, and a move under way counted where it goes (`movingTo`, `settled`), but
    /// blind to processes that are not cluster applications.
    var measuresApps: Bool { element.parameters["measure"] == "apps" }

    func load(_ n: NodeView) -> Double? {
        if measuresApps { return n.apps.reduce(0) { $0 + $1.cpu } / max(0.01, n.cpus) }
        return n.values[input]
    }

    /// The node `ssi run --node auto` should use, by this policy: the online node with the
    /// lowest input value; ties go to fewer applications, then the lower node number.
    public func place(_ view: SchedulerView) -> Decision? {
        let candidates = view.nodes.filter { $0.online && load($0) != nil }
        guard let best = candidates.min(by: { (load($0)!, $0.apps.count, $0.node) < (load($1)!, $1.apps.count, $1.node) }) else { return nil }
        return Decision(policy: name, action: .place(node: best.node),
                        reason: "node \(best.node) has the lowest \(input) (\(String(format: "%.2f", load(best)!))) of \(candidates.count) online nodes")
    }

    /// This node's decisions for this round.
    public func decide(_ view: SchedulerView, me: Int) -> [Decision] {
        let rules = MigrationRules(element)
        started.removeAll { view.now.timeIntervalSince($0) > 60 }
        guard started.count < rules.maxPerMinute else { return [] }
        var seen = settled(view, me: me)
        var out: [Decision] = []
        func record(_ ds: [Decision]) {
            for d in ds {
                out.append(d)
                guard case .migrate(let app, _, let to) = d.action else { continue }
                started.append(view.now)
                let demand = seen.node(me)?.apps.first { $0.app == app }?.cpu ?? 0
                pending.append(Pending(app: app, to: to, demand: demand, at: view.now))
            }
        }
        switch kind {
        case .balance:
            // Up to `moves-per-round` moves, each decided on the view as the ones before it
            // will leave it (counted at their targets): a burst launched on one node spreads
            // in one round instead of one move per period.
            let most = max(1, element.int("moves-per-round", 1))
            while out.count < most, started.count < rules.maxPerMinute, let d = balance(seen, me: me, rules: rules) {
                record([d])
                seen = settled(view, me: me)
            }
        case .consolidate: record(consolidate(seen, me: me, rules: rules))
        case .placement, .none, .external: break
        }
        return out
    }

    /// A move this policy decided whose effect the measured values may not show yet.
    struct Pending {
        var app: Int; var to: Int; var demand: Double; var at: Date
        /// The first round that no longer saw the application here: the move is done, and
        /// the measures start catching up.
        var done: Date?
    }

    /// The view as it will be once this policy's recent moves show in the measures: while a
    /// move runs and for `settle-ms` (3000) after it is done (its application no longer
    /// listed here: this node's list is read fresh each round), its application counts on
    /// its new node, not here. Without it a node reads its own stale load (a moving average
    /// of samples taken before the move) and sends everything away; counted from the
    /// decision instead, a slow move would leave too little time to catch up, and a long
    /// settle would hide a real imbalance that has shown in the measures already.
    func settled(_ view: SchedulerView, me: Int) -> SchedulerView {
        let settle = element.double("settle-ms", 3000) / 1000
        let here = Set(view.node(me)?.apps.map(\.app) ?? [])
        for i in pending.indices where pending[i].done == nil && !here.contains(pending[i].app) { pending[i].done = view.now }
        // A move that failed is dropped at once (SCC.moveFailed); one still not done after a
        // minute, in case that word was lost.
        pending.removeAll { p in
            // Measuring the applications, a move counts at its target until that node's
            // list shows it there: exact, whatever the move's length.
            if measuresApps { return view.node(p.to)?.apps.contains { $0.app == p.app } == true || view.now.timeIntervalSince(p.at) > 60 }
            return p.done.map { view.now.timeIntervalSince($0) > settle } ?? (view.now.timeIntervalSince(p.at) > 60)
        }
        var v = view
        if measuresApps {
            // Every node's moves under way, as their nodes published them: counted at their
            // targets by every node alike (the busy nodes' ranks agree), and only once.
            for (i, n) in v.nodes.enumerated() {
                for a in n.apps where a.movingTo != nil && a.movingTo != n.node {
                    guard let j = v.nodes.firstIndex(where: { $0.node == a.movingTo }) else { continue }
                    v.nodes[i].apps.removeAll { $0.app == a.app }
                    var there = a
                    there.node = v.nodes[j].node
                    if !v.nodes[j].apps.contains(where: { $0.app == a.app }) { v.nodes[j].apps.append(there) }
                }
            }
        }
        for p in pending {
            guard let i = v.nodes.firstIndex(where: { $0.node == me }), let j = v.nodes.firstIndex(where: { $0.node == p.to }) else { continue }
            let moving = v.nodes[i].apps.firstIndex(where: { $0.app == p.app }).map { v.nodes[i].apps.remove(at: $0) }
            if measuresApps {
                // Its target's list says where it is once it has arrived: counted there once.
                if !v.nodes[j].apps.contains(where: { $0.app == p.app }) {
                    var a = moving ?? AppView(app: p.app, node: p.to, cpu: p.demand, arrived: p.at)
                    a.node = p.to
                    v.nodes[j].apps.append(a)
                }
                continue
            }
            // Only while the measure still counts it here: a fresher sample may show it gone.
            if let x = v.nodes[i].values[input] { v.nodes[i].values[input] = max(0, x - p.demand / max(0.01, v.nodes[i].cpus)) }
            if let y = v.nodes[j].values[input] { v.nodes[j].values[input] = y + p.demand / max(0.01, v.nodes[j].cpus) }
        }
        return v
    }
}
