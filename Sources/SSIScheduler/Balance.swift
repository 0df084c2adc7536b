import Foundation

extension Policy {
    /// Sender-initiated balancing: this node gives one application to the least loaded node
    /// when its load is above that node's by more than `threshold` and the move pays. Of the
    /// moves that pay, the oldest application's goes first: with the heavy-tailed run times
    /// of real jobs, the time a process has run predicts the time it has left (Harchol-Balter
    /// and Downey, "Exploiting process lifetime distributions for dynamic load balancing",
    /// 1997: the MOSIX-era result), so moving it buys the most; the gain breaks ties.
    func balance(_ view: SchedulerView, me: Int, rules: MigrationRules) -> Decision? {
        guard let mine = view.node(me), let myLoad = load(mine) else { return nil }
        let threshold = element.double("threshold", 0.5)
        // Nodes paired by rank: the busiest sends to the least loaded, the second busiest to
        // the second least loaded, and so on (ties by node number). Every node reads the same
        // view, so two busy nodes do not both pick the one idle node in the same round and
        // swamp it (the herd effect of "everyone sends to the minimum"), only to take the
        // surplus back a few seconds later.
        let ranked = view.nodes.filter { $0.online && load($0) != nil }
            .sorted { (-load($0)!, $0.node) < (-load($1)!, $1.node) }
        guard let rank = ranked.firstIndex(where: { $0.node == me }), ranked.count - 1 - rank > rank else { return nil }
        let target = ranked[ranked.count - 1 - rank]
        guard let theirLoad = load(target), myLoad - theirLoad > threshold else { return nil }
        var best: (app: AppView, gain: Double, age: Double)?
        var refusals: [String] = []
        for a in mine.apps where a.cpu > 0 {
            if let why = rules.refusal(a, from: me, to: target.node, view: view) { refusals.append(why); continue }
            // The busier of the two nodes after the move, against the busier before it: what
            // the move removes from the worst queue.
            let after = max(myLoad - a.cpu / max(0.01, mine.cpus), theirLoad + a.cpu / max(0.01, target.cpus))
            let gain = myLoad - after
            guard gain > 0, gain * rules.horizon > rules.cost(a) else { continue }
            let age = view.now.timeIntervalSince(a.started ?? a.arrived)
            if best == nil || (age, gain) > (best!.age, best!.gain) { best = (a, gain, age) }
        }
        guard let (a, gain, age) = best else { return nil }
        let f = { (x: Double) in String(format: "%.2f", x) }
        return Decision(policy: name, action: .migrate(app: a.app, from: me, to: target.node),
                        reason: "\(measuresApps ? "applications' demand" : input) \(f(myLoad)) here vs \(f(theirLoad)) on node \(target.node) (threshold \(f(threshold))); moving app \(a.app) (\(f(a.cpu)) CPU, the oldest that pays: \(Int(age)) s) lowers the busier node by \(f(gain)), worth \(f(gain * rules.horizon)) s against a price of \(f(rules.cost(a))) s"
                            + (refusals.isEmpty ? "" : "; skipped: " + refusals.joined(separator: "; ")))
    }

    /// Consolidation: a light node (input below `light`) sends one application per round to
    /// the busiest node that stays under `full` with it. Only towards a node holding more
    /// applications (ties: the lower node number), so two light nodes never trade theirs.
    /// Nodes left with no application are reported: they can be switched off.
    func consolidate(_ view: SchedulerView, me: Int, rules: MigrationRules) -> [Decision] {
        var out: [Decision] = []
        let empty = view.nodes.filter { $0.online && $0.apps.isEmpty }.map(\.node)
        if !empty.isEmpty {
            out.append(Decision(policy: name, action: .emptyNodes(empty), reason: "no application runs on node(s) \(empty.map(String.init).joined(separator: ", "))"))
        }
        guard let mine = view.node(me), let myLoad = load(mine), myLoad < element.double("light", 0.3), !mine.apps.isEmpty else { return out }
        let full = element.double("full", 0.8)
        let targets = view.nodes.filter { n in
            n.online && n.node != me && load(n) != nil
                && (n.apps.count > mine.apps.count || (n.apps.count == mine.apps.count && n.node < me))
        }.sorted { (load($0)!, -$0.node) > (load($1)!, -$1.node) }
        for a in mine.apps.sorted(by: { $0.cpu < $1.cpu }) {
            for t in targets where load(t)! + a.cpu / max(0.01, t.cpus) <= full {
                guard rules.refusal(a, from: me, to: t.node, view: view) == nil else { continue }
                let f = { (x: Double) in String(format: "%.2f", x) }
                out.append(Decision(policy: name, action: .migrate(app: a.app, from: me, to: t.node),
                                    reason: "node \(me) is light (\(input) \(f(myLoad)) < \(f(element.double("light", 0.3)))); node \(t.node) takes app \(a.app) and stays at \(f(load(t)! + a.cpu / max(0.01, t.cpus))) <= \(f(full))"))
                return out
            }
        }
        return out
    }
}
