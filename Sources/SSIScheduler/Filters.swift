/// The built-in filter types.
public enum FilterKind: String, CaseIterable, Sendable {
    /// The mean of the last `window` values of its input.
    case movingAverage = "moving-average"
    /// 1 once its input reaches `high`, 0 once it falls to `low`, unchanged between: a
    /// threshold that does not flap around one value.
    case hysteresis
    /// `op` (mean, min, max, sum) over the input's value on every online node: the cluster
    /// layer gives each node's published values.
    case aggregate
}

public enum Aggregate: String, CaseIterable, Sendable { case mean, min, max, sum }

/// A filter: one input value in, one value out, state kept between samples.
public final class Filter {
    public var element: SchedulerSettings.Element
    let kind: FilterKind
    private var window: [Double] = []
    private var latched: Double = 0

    init(_ element: SchedulerSettings.Element) {
        self.element = element
        kind = FilterKind(rawValue: element.type) ?? .movingAverage
    }

    public var input: String { element.parameters["input"] ?? "" }

    /// The new output, given the input's value here and on every node (node -> value).
    func update(_ value: Double?, cluster: [Int: Double]) -> Double? {
        switch kind {
        case .movingAverage:
            guard let value else { return window.isEmpty ? nil : window.reduce(0, +) / Double(window.count) }
            window.append(value)
            let n = max(1, element.int("window", 5))
            if window.count > n { window.removeFirst(window.count - n) }
            return window.reduce(0, +) / Double(window.count)
        case .hysteresis:
            guard let value else { return latched }
            if value >= element.double("high", 1) { latched = 1 } else if value <= element.double("low", 0) { latched = 0 }
            return latched
        case .aggregate:
            var all = cluster
            if all.isEmpty, let value { all[0] = value }
            let xs = Array(all.values)
            guard !xs.isEmpty else { return nil }
            switch Aggregate(rawValue: element.parameters["op"] ?? "mean") ?? .mean {
            case .mean: return xs.reduce(0, +) / Double(xs.count)
            case .min: return xs.min()
            case .max: return xs.max()
            case .sum: return xs.reduce(0, +)
            }
        }
    }
}
