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

    public init(node: Int, online: Bool = true, cpus: Double, configuration: String = "", values: [String: Double], apps: [AppView] = []) {
        self.node = node; self.online = online; self.cpus = cpus
        self.configuration = configuration; self.values = values; self.apps = apps
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
/// - an application stays at least `min-residence-ms` where it arrived;
/// - between two nodes, a move against the direction of recent moves (B to A after A to B,
///   whichever applications moved) waits `return-after-ms` after the last of them, four
///   times longer for each such reversal, and after `max-reversals` within `window-s` the
///   pair no longer reverses at all for the rest of the window: two nodes with opposing
///   configurations settle instead of trading applications for ever;
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
    static func moves(_ view: SchedulerView) -> [(from: Int, to: Int, at: Date)] {
        var out: [(Int, Int, Date)] = []
        for n in view.nodes {
            for a in n.apps {
                let deps = a.departures.sorted { $0.at < $1.at }
                for (i, d) in deps.enumerated() { out.append((d.node, i + 1 < deps.count ? deps[i + 1].node : a.node, d.at)) }
            }
        }
        return out
    }

    /// Why `a` may not move from `from` to `target` now, or nil if it may.
    public func refusal(_ a: AppView, from: Int, to target: Int, view: SchedulerView) -> String? {
        if !a.canMigrate { return "app \(a.app) lacks CAN_MIGRATE" }
        let now = view.now
        let stayed = now.timeIntervalSince(a.arrived)
        if stayed < minResidence { return "app \(a.app) arrived \(Int(stayed)) s ago (minimum residence \(Int(minResidence)) s)" }
        let reverse = Self.moves(view).filter { $0.from == target && $0.to == from && now.timeIntervalSince($0.at) < window }
        guard let last = reverse.map(\.at).max() else { return nil }
        if reverse.count >= maxReversals {
            return "node \(target) sent \(reverse.count) applications to node \(from) within \(Int(window)) s: no move back before that window ends"
        }
        let wait = returnAfter * pow(4, Double(reverse.count - 1))
        if now.timeIntervalSince(last) < wait {
            return "node \(target) sent an application here \(Int(now.timeIntervalSince(last))) s ago (moves back wait \(Int(wait)) s)"
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

    init(_ element: SchedulerSettings.Element) {
        self.element = element
        kind = PolicyKind(rawValue: element.type) ?? .none
    }

    public var name: String { element.name }
    public var input: String { element.parameters["input"] ?? "" }
    public var period: TimeInterval { element.double("period-ms", 2000) / 1000 }

    func load(_ n: NodeView) -> Double? { n.values[input] }

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
        let out: [Decision]
        switch kind {
        case .balance: out = balance(view, me: me, rules: rules).map { [$0] } ?? []
        case .consolidate: out = consolidate(view, me: me, rules: rules)
        case .placement, .none, .external: out = []
        }
        for d in out { if case .migrate = d.action { started.append(view.now) } }
        return out
    }
}
