import Foundation

/// What a configuration switch changed.
public struct ConfigurationChange: Codable, Sendable, Equatable {
    public var from: String?
    public var to: String
    public var loaded: [String] = []
    public var unloaded: [String] = []
    public var reparameterised: [String] = []
    public var kept: [String] = []
}

extension SchedulingConfigurationChanger {
    /// Makes `name` the active configuration: elements of the same kind, name and type stay
    /// loaded (their state, such as a moving average's window, is kept) and only take the new
    /// parameters; the others are unloaded or loaded.
    @discardableResult
    func switchTo(_ name: String, now: Date) -> ConfigurationChange {
        let wanted = settings.shared + (settings.configuration(name)?.elements ?? [])
        var change = ConfigurationChange(from: active, to: name)
        var current: [String: SchedulerSettings.Element] = [:]
        for p in probes.values { current[p.element.identity] = p.element }
        for f in filters { current[f.element.identity] = f.element }
        for p in policies { current[p.element.identity] = p.element }
        let wantedIDs = Set(wanted.map(\.identity))
        for (id, e) in current where !wantedIDs.contains(id) {
            change.unloaded.append(e.name)
            if e.kind == .probe { probes.removeValue(forKey: e.name)?.stop(); lastSample[e.name] = nil }
            values = values.filter { !($0.key == e.name || $0.key.hasPrefix(e.name + ".")) }
        }
        var newFilters: [Filter] = []
        var newPolicies: [Policy] = []
        for e in wanted {
            let old = current[e.identity]
            if old == nil { change.loaded.append(e.name) } else if old! != e { change.reparameterised.append(e.name) } else { change.kept.append(e.name) }
            switch e.kind {
            case .probe:
                if let p = probes[e.name] { p.element = e } else { probes[e.name] = makeProbe(e) }
            case .filter:
                let f = filters.first { $0.element.identity == e.identity } ?? Filter(e)
                f.element = e
                newFilters.append(f)
            case .policy:
                let p = policies.first { $0.element.identity == e.identity } ?? Policy(e)
                p.element = e
                newPolicies.append(p)
                if p.kind == .external, old == nil || old! != e { externals[e.name] = ExternalPolicy(e) }
            }
        }
        filters = newFilters
        policies = newPolicies
        externals = externals.filter { k, _ in newPolicies.contains { $0.name == k } }
        active = name
        note("configuration", "\(change.from ?? "(none)") -> \(name): loaded [\(change.loaded.joined(separator: ", "))] unloaded [\(change.unloaded.joined(separator: ", "))] re-parameterised [\(change.reparameterised.joined(separator: ", "))]", now)
        lastChange = change
        return change
    }

    func makeProbe(_ e: SchedulerSettings.Element) -> Probe {
        switch ProbeKind(rawValue: e.type) ?? .clock {
        case .cpu: return CPUProbe(e, node: node)
        case .memory: return MemoryProbe(e)
        case .apps: return AppsProbe(e, node: node)
        case .clock: return ClockProbe(e)
        case .external: return ExternalProbe(e)
        }
    }
}

/// What `ssi sched status` shows of one node.
public struct SchedulerStatus: Codable, Sendable {
    public struct Item: Codable, Sendable {
        public var kind: String
        public var name: String
        public var type: String
        public var parameters: [String: String]
        /// A probe's period as written and as applied now (stretched under load), in ms.
        public var periodMs: Int?
        public var effectivePeriodMs: Int?
        public var values: [String: Double]
        public var error: String?
    }
    public var node: Int
    public var source: String
    public var active: String?
    public var configurations: [String: String]
    public var stretched: Bool
    public var items: [Item]
    public var lastChange: ConfigurationChange?
    public var log: [SchedulingConfigurationChanger.LogEntry]
}

extension SchedulingConfigurationChanger {
    public func status(logLines: Int = 20) -> SchedulerStatus {
        var items: [SchedulerStatus.Item] = []
        for (name, p) in probes.sorted(by: { $0.key < $1.key }) {
            let vs = values.filter { $0.key.hasPrefix(name + ".") }
            items.append(.init(kind: "probe", name: name, type: p.element.type, parameters: p.element.parameters,
                               periodMs: Int(p.period * 1000), effectivePeriodMs: Int(effectivePeriod(p) * 1000),
                               values: Dictionary(uniqueKeysWithValues: vs.map { (String($0.key.dropFirst(name.count + 1)), $0.value) }),
                               error: probeErrors[name]))
        }
        for f in filters {
            items.append(.init(kind: "filter", name: f.element.name, type: f.element.type, parameters: f.element.parameters,
                               values: values[f.element.name].map { ["value": $0] } ?? [:]))
        }
        for p in policies {
            items.append(.init(kind: "policy", name: p.name, type: p.element.type, parameters: p.element.parameters, values: [:],
                               error: externals[p.name]?.program.lastError))
        }
        return SchedulerStatus(node: me, source: settings.source, active: active,
                               configurations: Dictionary(uniqueKeysWithValues: settings.configurations.map { ($0.name, $0.selector) }),
                               stretched: stretched, items: items, lastChange: lastChange, log: Array(log.suffix(logLines)))
    }
}
