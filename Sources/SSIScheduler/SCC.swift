import Foundation
import SSISystem

/// The Scheduling Configuration Changer of one node (the seed's SCC, section 5.2): holds the
/// settings, keeps the probes, filters and policies of the active configuration loaded, and
/// switches configuration when another's selector holds, loading, unloading and
/// re-parameterising only what differs. The daemon calls `tick` about every 100 ms.
public final class SchedulingConfigurationChanger {
    public private(set) var settings: SchedulerSettings
    public internal(set) var active: String?
    public let me: Int
    let node: NodeSource
    var probes: [String: Probe] = [:]
    var filters: [Filter] = []
    var policies: [Policy] = []
    var externals: [String: ExternalPolicy] = [:]
    var lastSample: [String: Date] = [:]
    var lastDecided: [String: Date] = [:]
    var probeErrors: [String: String] = [:]
    /// Every value measured or computed, by full name (`cpu.load`, `load`).
    public internal(set) var values: [String: Double] = [:]
    /// Whether probe periods are stretched now (CPU usage above the settings' mark).
    public private(set) var stretched = false
    public private(set) var log: [LogEntry] = []
    /// The last configuration switch.
    public internal(set) var lastChange: ConfigurationChange?

    public struct LogEntry: Codable, Sendable, Equatable {
        public var date: Date
        public var kind: String
        public var text: String
    }

    public init(settings: SchedulerSettings, me: Int, node: NodeSource) {
        self.settings = settings
        self.me = me
        self.node = node
    }

    deinit { for p in probes.values { p.stop() } }

    func note(_ kind: String, _ text: String, _ now: Date) {
        log.append(LogEntry(date: now, kind: kind, text: text))
        if log.count > 500 { log.removeFirst(log.count - 500) }
    }

    /// Replaces the settings. Refused, changing nothing, when two configurations' selectors
    /// both hold on the values measured now (the choice would be ambiguous).
    public func load(_ new: SchedulerSettings, now: Date = Date()) throws(SettingsError) {
        let holding = Self.holding(new, values)
        if holding.count > 1 {
            throw SettingsError(source: new.source, line: holding[1].line, element: "configuration",
                                reason: "the selectors of '\(holding[0].name)' (line \(holding[0].line)) and '\(holding[1].name)' (line \(holding[1].line)) both hold now: make them exclusive")
        }
        settings = new
        note("settings", "loaded \(new.source): configurations \(new.configurations.map(\.name).joined(separator: ", "))", now)
        // Switch even to the same name: its elements may have changed with the file.
        let previous = active.flatMap { new.configuration($0)?.name }
        switchTo(choose(previous: previous) ?? new.configurations[0].name, now: now)
    }

    /// The configurations (not "otherwise") whose selectors hold on `values`.
    static func holding(_ s: SchedulerSettings, _ values: [String: Double]) -> [SchedulerSettings.Configuration] {
        s.configurations.filter { c in !c.isOtherwise && ((try? Expression.parse(c.selector))?.holds(values) ?? false) }
    }

    /// The configuration the selectors choose: the one that holds; none holds: "otherwise",
    /// or the current one; several hold: the current one if it is among them, else the first.
    func choose(previous: String?) -> String? {
        let h = Self.holding(settings, values)
        if h.count == 1 { return h[0].name }
        if h.isEmpty { return settings.configurations.first(where: \.isOtherwise)?.name ?? previous }
        return h.contains { $0.name == previous } ? previous : h[0].name
    }

    /// A move a policy decided failed: its application stayed here, and counts here again.
    public func moveFailed(app: Int) {
        for p in policies { p.pending.removeAll { $0.app == app } }
    }

    /// One round: probes that are due, filters, the selector, policies that are due. Returns
    /// the policies' decisions. `cluster(name)` gives a value on every online node (for
    /// aggregate filters); `view()` the cluster as policies see it.
    public func tick(now: Date = Date(), cluster: (String) -> [Int: Double] = { _ in [:] }, view: () -> SchedulerView) -> [Decision] {
        sampleProbes(now)
        for f in filters { values[f.element.name] = f.update(values[f.input], cluster: cluster(f.input)) ?? values[f.element.name] }
        if let next = choose(previous: active), next != active { switchTo(next, now: now) }
        return runPolicies(now, view)
    }

    func sampleProbes(_ now: Date) {
        for (name, p) in probes.sorted(by: { $0.key < $1.key }) {
            if let last = lastSample[name], now.timeIntervalSince(last) < effectivePeriod(p) { continue }
            lastSample[name] = now
            do {
                for (k, v) in try p.sample(now: now) { values["\(name).\(k)"] = v }
                probeErrors[name] = nil
            } catch {
                if probeErrors[name] == nil { note("error", "probe \(name): \(error)", now) }
                probeErrors[name] = "\(error)"
            }
        }
        let usage = probes.values.first { ($0 as? CPUProbe) != nil }.flatMap { values["\($0.element.name).usage"] } ?? 0
        if (usage > settings.stretchAbove) != stretched {
            stretched.toggle()
            note("periods", stretched ? "CPU usage \(Int(usage * 100))% above \(Int(settings.stretchAbove * 100))%: probe periods x\(settings.stretchFactor)"
                                      : "CPU usage \(Int(usage * 100))% back under \(Int(settings.stretchAbove * 100))%: probe periods as written", now)
        }
    }

    func effectivePeriod(_ p: Probe) -> Double { p.period * (stretched ? settings.stretchFactor : 1) }

    func runPolicies(_ now: Date, _ view: () -> SchedulerView) -> [Decision] {
        var out: [Decision] = []
        var snapshot: SchedulerView?
        for p in policies where p.kind != .none && p.kind != .placement {
            if let last = lastDecided[p.name], now.timeIntervalSince(last) < p.period { continue }
            lastDecided[p.name] = now
            let v = snapshot ?? view()
            snapshot = v
            do {
                let ds = try externals[p.name].map { try $0.decide(v, me: me, policy: p) } ?? p.decide(v, me: me)
                for d in ds { note("decision", "\(d.policy): \(d.action.text): \(d.reason)", now) }
                out += ds
            } catch {
                note("error", "policy \(p.name): \(error)", now)
            }
        }
        return out
    }

    /// Where `ssi run --node auto` should start an application: the active configuration's
    /// placement policy, else the least loaded node by the first cpu probe's load.
    public func place(_ view: SchedulerView) -> Decision? {
        if let p = policies.first(where: { $0.kind == .placement }) { return p.place(view) }
        let load = probes.first { $0.value is CPUProbe }.map { "\($0.key).load" } ?? "cpu.load"
        let e = SchedulerSettings.Element(kind: .policy, name: "default-placement", type: "placement", parameters: ["input": load], line: 0)
        return Policy(e).place(view)
    }
}

extension Decision.Action {
    public var text: String {
        switch self {
        case .migrate(let app, let from, let to): return "migrate app \(app) from node \(from) to node \(to)"
        case .place(let n): return "place on node \(n)"
        case .emptyNodes(let ns): return "nodes \(ns.map(String.init).joined(separator: ", ")) are empty"
        }
    }
}
