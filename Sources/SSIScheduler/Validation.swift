/// The checks a settings file passes before anything is applied: known types, parameters in
/// range, every input connected to a value that exists, selectors that parse and read only
/// shared values, one "otherwise" at most.
struct SettingsValidator {
    let settings: SchedulerSettings

    func fail(_ line: Int, _ element: String, _ reason: String) -> SettingsError {
        SettingsError(source: settings.source, line: line, element: element, reason: reason)
    }

    func validate() throws(SettingsError) {
        guard !settings.configurations.isEmpty else { throw fail(1, "scheduler", "no <configuration>: define at least one") }
        var seen: Set<String> = []
        var otherwise: SchedulerSettings.Configuration?
        // Values the shared probes and filters give: the only ones selectors may read.
        let sharedValues = try values(of: settings.shared, after: [])
        for c in settings.configurations {
            guard seen.insert(c.name).inserted else { throw fail(c.line, "configuration", "a second configuration named '\(c.name)'") }
            if c.isOtherwise {
                if let o = otherwise { throw fail(c.line, "configuration", "'\(c.name)' and '\(o.name)' are both \"otherwise\": keep one") }
                otherwise = c
            } else {
                try checkSelector(c, sharedValues)
            }
            let clash = Set(c.elements.map(\.name)).intersection(settings.shared.map(\.name))
            if let n = clash.first, let e = c.elements.first(where: { $0.name == n }) {
                throw fail(e.line, e.kind.rawValue, "'\(n)' is already a shared probe or filter")
            }
            _ = try values(of: c.elements, after: sharedValues)
        }
    }

    private func checkSelector(_ c: SchedulerSettings.Configuration, _ shared: Set<String>) throws(SettingsError) {
        let e: Expression
        do { e = try Expression.parse(c.selector) } catch { throw fail(c.line, "configuration", "'\(c.name)': \(error)") }
        if let missing = e.names.subtracting(shared).sorted().first {
            throw fail(c.line, "configuration", "'\(c.name)': the selector reads '\(missing)', which no shared probe or filter gives (shared values: \(shared.sorted().joined(separator: ", ")))")
        }
    }

    /// Checks `elements` in order (an input must be declared before it is read) and returns
    /// the value names available after them.
    private func values(of elements: [SchedulerSettings.Element], after known: Set<String>) throws(SettingsError) -> Set<String> {
        var names = known
        var local: Set<String> = []
        for e in elements {
            guard local.insert(e.name).inserted else { throw fail(e.line, e.kind.rawValue, "a second element named '\(e.name)'") }
            switch e.kind {
            case .probe: names.formUnion(try probeOutputs(e).map { "\(e.name).\($0)" })
            case .filter:
                try checkFilter(e, names)
                names.insert(e.name)
            case .policy: try checkPolicy(e, names)
            }
        }
        return names
    }

    private func probeOutputs(_ e: SchedulerSettings.Element) throws(SettingsError) -> [String] {
        guard let kind = ProbeKind(rawValue: e.type) else {
            throw fail(e.line, "probe", "unknown probe type '\(e.type)' (known: \(ProbeKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        if let p = e.parameters["period-ms"], (Int(p) ?? 0) < 10 { throw fail(e.line, "probe", "'\(e.name)': period-ms must be an integer >= 10") }
        if kind == .external {
            guard let cmd = e.parameters["command"], !cmd.isEmpty else { throw fail(e.line, "probe", "external probe '\(e.name)' needs command=\"...\"") }
            let outs = (e.parameters["outputs"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !outs.isEmpty else { throw fail(e.line, "probe", "external probe '\(e.name)' needs outputs=\"a,b\" (the values it prints)") }
            return outs
        }
        return kind.outputs
    }

    private func checkInput(_ e: SchedulerSettings.Element, _ names: Set<String>) throws(SettingsError) {
        guard let input = e.parameters["input"] else { throw fail(e.line, e.kind.rawValue, "'\(e.name)' needs input=\"...\"") }
        guard names.contains(input) else {
            throw fail(e.line, e.kind.rawValue, "'\(e.name)' is connected to '\(input)', which no probe or filter declared before it gives (available: \(names.sorted().joined(separator: ", ")))")
        }
    }

    private func checkFilter(_ e: SchedulerSettings.Element, _ names: Set<String>) throws(SettingsError) {
        guard let kind = FilterKind(rawValue: e.type) else {
            throw fail(e.line, "filter", "unknown filter type '\(e.type)' (known: \(FilterKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        try checkInput(e, names)
        switch kind {
        case .movingAverage:
            guard (1...1000).contains(e.int("window", 0)) else { throw fail(e.line, "filter", "'\(e.name)': window must be 1..1000 samples") }
        case .hysteresis:
            guard let hi = e.parameters["high"].flatMap(Double.init), let lo = e.parameters["low"].flatMap(Double.init), lo < hi else {
                throw fail(e.line, "filter", "'\(e.name)': needs numbers high and low with low < high")
            }
        case .aggregate:
            guard Aggregate(rawValue: e.parameters["op"] ?? "mean") != nil else {
                throw fail(e.line, "filter", "'\(e.name)': op must be one of \(Aggregate.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }

    private func checkPolicy(_ e: SchedulerSettings.Element, _ names: Set<String>) throws(SettingsError) {
        guard let kind = PolicyKind(rawValue: e.type) else {
            throw fail(e.line, "policy", "unknown policy type '\(e.type)' (known: \(PolicyKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        switch kind {
        case .none: return
        case .external:
            guard let cmd = e.parameters["command"], !cmd.isEmpty else { throw fail(e.line, "policy", "external policy '\(e.name)' needs command=\"...\"") }
        case .placement, .balance, .consolidate:
            try checkInput(e, names)
        }
        if let m = e.parameters["measure"], m != "input" && m != "apps" {
            throw fail(e.line, "policy", "'\(e.name)': measure must be \"input\" (the value it is connected to) or \"apps\" (its applications' demand), not '\(m)'")
        }
        for key in ["threshold", "period-ms", "moves-per-round", "max-per-minute", "min-residence-ms", "light", "full", "gain-horizon-s"] {
            if let v = e.parameters[key], Double(v) == nil || Double(v)! < 0 {
                throw fail(e.line, "policy", "'\(e.name)': \(key) must be a number >= 0, not '\(v)'")
            }
        }
    }
}

extension SchedulerSettings {
    /// The checks `parse` makes, for settings changed in memory (`ssi sched set`).
    public func validate() throws(SettingsError) { try SettingsValidator(settings: self).validate() }
}
