import Foundation
import Testing
@testable import SSIScheduler

func policy(_ type: String, _ params: [String: String] = [:]) -> Policy {
    var p = params
    p["input"] = p["input"] ?? "load"
    return Policy(SchedulerSettings.Element(kind: .policy, name: type, type: type, parameters: p, line: 1))
}

/// A toy cluster: nodes with CPUs and applications of fixed CPU demand; a node's load is
/// its applications' demand per CPU. Policies run on every node each second and their
/// migrations are applied at once: enough to see whether they converge.
struct Simulation {
    var cpus: [Int: Double]
    var apps: [AppView]
    var configurations: [Int: String] = [:]
    var now = Date(timeIntervalSince1970: 1_000_000)
    var migrations: [(app: Int, from: Int, to: Int)] = []

    func load(_ k: Int) -> Double { apps.filter { $0.node == k }.map(\.cpu).reduce(0, +) / cpus[k]! }

    var view: SchedulerView {
        SchedulerView(now: now, nodes: cpus.keys.sorted().map { k in
            NodeView(node: k, cpus: cpus[k]!, configuration: configurations[k] ?? "", values: ["load": load(k)], apps: apps.filter { $0.node == k })
        })
    }

    mutating func apply(_ ds: [Decision]) {
        for d in ds {
            guard case .migrate(let app, let from, let to) = d.action, let i = apps.firstIndex(where: { $0.app == app && $0.node == from }) else { continue }
            apps[i].departures.append(.init(node: from, at: now))
            apps[i].node = to
            apps[i].arrived = now
            migrations.append((app, from, to))
        }
    }

    /// `seconds` rounds of each node's own policy.
    mutating func run(_ seconds: Int, policies: [Int: Policy]) {
        for _ in 0..<seconds {
            for k in cpus.keys.sorted() { apply(policies[k]!.decide(view, me: k)) }
            now += 1
        }
    }
}

@Suite struct PolicyTests {
    let t0 = Date(timeIntervalSince1970: 1_000_000 - 3600)

    @Test func placementPicksTheLeastLoaded() throws {
        let v = SchedulerView(now: Date(), nodes: [
            NodeView(node: 1, cpus: 1, values: ["load": 0.9]),
            NodeView(node: 2, cpus: 1, values: ["load": 0.2]),
            NodeView(node: 3, online: false, cpus: 1, values: ["load": 0.0]),
            NodeView(node: 4, cpus: 1, values: ["load": 0.2], apps: [AppView(app: 9, node: 4, cpu: 0.2, arrived: t0)]),
        ])
        let d = try #require(policy("placement").place(v))
        #expect(d.action == .place(node: 2), "\(d)")
        #expect(d.reason.contains("lowest load"))
    }

    @Test func balanceSpreadsSkewedLoad() {
        // Six one-CPU jobs on node 1 of three one-CPU nodes: balancing ends at two per node.
        var sim = Simulation(cpus: [1: 1, 2: 1, 3: 1], apps: (1...6).map { AppView(app: $0, node: 1, cpu: 1, arrived: t0) })
        let ps = [1: policy("balance", ["min-residence-ms": "0"]), 2: policy("balance"), 3: policy("balance")]
        sim.run(20, policies: ps)
        #expect([1, 2, 3].map { k in sim.apps.filter { $0.node == k }.count } == [2, 2, 2], "\(sim.apps.map(\.node))")
        #expect(sim.migrations.count == 4, "\(sim.migrations)")
    }

    @Test func balanceRespectsThresholdCostAndCapability() {
        let mk = { (cpu: Double, rss: UInt64, can: Bool) in
            SchedulerView(now: Date(timeIntervalSince1970: 1_000_000), nodes: [
                NodeView(node: 1, cpus: 1, values: ["load": cpu], apps: [AppView(app: 1, node: 1, cpu: cpu, rssBytes: rss, arrived: self.t0, canMigrate: can)]),
                NodeView(node: 2, cpus: 1, values: ["load": 0]),
            ])
        }
        #expect(policy("balance").decide(mk(0.4, 0, true), me: 1).isEmpty, "under the threshold")
        #expect(policy("balance").decide(mk(1, 0, false), me: 1).isEmpty, "no CAN_MIGRATE")
        // 64 GiB at 100 MB/s: a 687 s price against 10 s of gain.
        #expect(policy("balance").decide(mk(1, 64 << 30, true), me: 1).isEmpty, "not worth its price")
        // A lone one-CPU job moved from a busy node to an idle one gains nothing.
        #expect(policy("balance").decide(mk(1, 0, true), me: 1).isEmpty, "moving the only job gains nothing")
    }

    @Test func balanceMovesTheOldestFirst() throws {
        // Three equal jobs on a busy node: the one launched first goes (age predicts the time
        // left), even though it arrived on this node last (a restart).
        let now = Date(timeIntervalSince1970: 1_000_000)
        var apps = (1...3).map { AppView(app: $0, node: 1, cpu: 1, arrived: now - 100) }
        apps[0].started = now - 50
        apps[1].started = now - 500
        apps[1].arrived = now - 20
        apps[2].started = now - 200
        let v = SchedulerView(now: now, nodes: [NodeView(node: 1, cpus: 1, values: ["load": 3], apps: apps), NodeView(node: 2, cpus: 1, values: ["load": 0])])
        let d = try #require(policy("balance", ["min-residence-ms": "0"]).decide(v, me: 1).first)
        #expect(d.action == .migrate(app: 2, from: 1, to: 2), "\(d)")
        #expect(d.reason.contains("oldest"), "\(d.reason)")
    }

    @Test func measuringAppsSpreadsABurstInOneRound() {
        // Nine one-CPU jobs on node 1 of three one-CPU nodes, the measured load still zero
        // everywhere (an average that has not caught up): measuring the applications, node 1
        // sends three in its first round, alternating between the two idle nodes as each
        // move counts at its target, and stops at three per node.
        let now = Date(timeIntervalSince1970: 1_000_000)
        let apps = (1...9).map { AppView(app: $0, node: 1, cpu: 1, arrived: now - 100) }
        let v = SchedulerView(now: now, nodes: [
            NodeView(node: 1, cpus: 1, values: ["load": 0], apps: apps),
            NodeView(node: 2, cpus: 1, values: ["load": 0]), NodeView(node: 3, cpus: 1, values: ["load": 0]),
        ])
        let p = policy("balance", ["measure": "apps", "moves-per-round": "3"])
        let first = p.decide(v, me: 1)
        let targets = first.compactMap { d -> Int? in if case .migrate(_, _, let to) = d.action { return to } else { return nil } }
        #expect(targets.sorted() == [2, 2, 3] || targets.sorted() == [2, 3, 3], "\(first)")
        #expect(policy("balance").decide(v, me: 1).isEmpty, "measuring the input (0 everywhere), nothing moves")
        // Three more in the next round (the first three still under way, counted at their
        // targets); then none: three per node.
        let second = p.decide(SchedulerView(now: now + 1, nodes: v.nodes), me: 1)
        #expect(second.count == 3, "\(second)")
        var after = v
        after.now = now + 2
        for d in first + second { if case .migrate(let app, _, let to) = d.action { after.nodes[0].apps.removeAll { $0.app == app }; after.nodes[to - 1].apps.append(AppView(app: app, node: to, cpu: 1, arrived: now)) } }
        #expect(p.decide(after, me: 1).isEmpty, "three per node: balanced")
    }

    @Test func measuringAppsCountsOtherNodesMovesAtTheirTargets() throws {
        // Nodes 1 and 2 hold three jobs each, node 3 none; node 2 is moving one of its jobs
        // to node 3 (published as movingTo). Node 1 sees node 2 at two and node 3 at one:
        // it is the busiest and sends to node 3 (the least loaded), instead of waiting its
        // rank behind node 2 (ties go to the lower node number) or seeing node 3 empty.
        let now = Date(timeIntervalSince1970: 1_000_000)
        var two = (4...6).map { AppView(app: $0, node: 2, cpu: 1, arrived: now - 100) }
        two[0].movingTo = 3
        let v = SchedulerView(now: now, nodes: [
            NodeView(node: 1, cpus: 1, values: ["load": 3], apps: (1...3).map { AppView(app: $0, node: 1, cpu: 1, arrived: now - 100) }),
            NodeView(node: 2, cpus: 1, values: ["load": 3], apps: two),
            NodeView(node: 3, cpus: 1, values: ["load": 0]),
        ])
        let p = policy("balance", ["measure": "apps"])
        let d = try #require(p.decide(v, me: 1).first)
        guard case .migrate(_, 1, 3) = d.action else { Issue.record("\(d)"); return }
        #expect(d.reason.contains("demand 3.00 here vs 1.00 on node 3"), "\(d.reason)")
        // Node 3, seeing the same, sends nothing (it is the least loaded).
        #expect(policy("balance", ["measure": "apps"]).decide(v, me: 3).isEmpty)
    }

    @Test func maxPerMinute() {
        var sim = Simulation(cpus: [1: 1, 2: 8], apps: (1...10).map { AppView(app: $0, node: 1, cpu: 1, arrived: t0) })
        let p = policy("balance", ["max-per-minute": "3"])
        sim.run(30, policies: [1: p, 2: policy("none")])
        #expect(sim.migrations.count == 3, "\(sim.migrations)")
    }

    @Test func consolidationEmptiesLightNodes() {
        var sim = Simulation(cpus: [1: 1, 2: 1, 3: 1], apps: [
            AppView(app: 1, node: 1, cpu: 0.1, arrived: t0), AppView(app: 2, node: 1, cpu: 0.1, arrived: t0),
            AppView(app: 3, node: 2, cpu: 0.1, arrived: t0), AppView(app: 4, node: 3, cpu: 0.1, arrived: t0),
        ])
        let ps = [1: policy("consolidate"), 2: policy("consolidate"), 3: policy("consolidate")]
        sim.run(30, policies: ps)
        #expect(sim.apps.allSatisfy { $0.node == 1 }, "\(sim.apps.map(\.node))")
        #expect(sim.migrations.count == 2)
        let report = policy("consolidate").decide(sim.view, me: 1)
        #expect(report.contains { $0.action == .emptyNodes([2, 3]) }, "\(report)")
    }

    @Test func opposingConfigurationsConverge() {
        // Node 1 consolidates (packs onto node 2, which holds more), node 2 balances (sends
        // back to the less loaded node 1): without anti-ping-pong the application would swap
        // every round. With it, the pair reverses at most max-reversals (3) times, waiting
        // 30 s, 120 s, 480 s, and then stays put.
        var sim = Simulation(cpus: [1: 1, 2: 1], apps: [
            AppView(app: 1, node: 1, cpu: 0.25, arrived: t0),
            AppView(app: 2, node: 2, cpu: 0.25, arrived: t0), AppView(app: 3, node: 2, cpu: 0.25, arrived: t0),
        ], configurations: [1: "night", 2: "day"])
        let ps = [1: policy("consolidate", ["light": "0.3", "full": "1.0", "min-residence-ms": "1000", "return-after-ms": "30000"]),
                  2: policy("balance", ["threshold": "0.2", "min-residence-ms": "1000", "return-after-ms": "30000", "max-per-minute": "60"])]
        sim.run(1200, policies: ps)
        #expect(sim.migrations.count <= 4, "\(sim.migrations.map { "\($0.app):\($0.from)->\($0.to)" })")
        // Settled: another ten minutes, no move.
        let before = sim.migrations.count
        sim.run(600, policies: ps)
        #expect(sim.migrations.count == before, "\(sim.migrations)")
    }

    @Test func reversalsWaitLongerThenStop() {
        let rules = MigrationRules(SchedulerSettings.Element(kind: .policy, name: "p", type: "balance", parameters: ["return-after-ms": "10000", "min-residence-ms": "0"], line: 1))
        let now = Date(timeIntervalSince1970: 10_000)
        let a = AppView(app: 1, node: 2, cpu: 1, arrived: now - 100)
        /// Node 2's view with the given moves between nodes 1 and 2 (from, at).
        func view(_ moves: [(Int, Date)]) -> SchedulerView {
            let ms = moves.enumerated().map { i, m in NodeView.Move(app: 100 + i, from: m.0, to: 3 - m.0, at: m.1) }
            return SchedulerView(now: now, nodes: [NodeView(node: 2, cpus: 1, configuration: "day", values: [:], apps: [a], moves: ms),
                                                   NodeView(node: 1, cpus: 1, configuration: "night", values: [:])])
        }
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(1, now - 15)])) == nil)
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(1, now - 5)]))?.contains("wait 10 s") == true)
        // Many moves one way are one direction: moving back is the first reversal.
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(1, now - 40), (1, now - 30), (1, now - 20), (1, now - 15)])) == nil)
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(1, now - 500), (2, now - 400), (1, now - 15)]))?.contains("wait 90 s") == false)
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(1, now - 500), (2, now - 400), (1, now - 15)]))?.contains("wait 160 s") == true)
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(1, now - 900), (2, now - 800), (1, now - 700), (2, now - 600), (1, now - 500)]))?.contains("no move back") == true)
        #expect(rules.refusal(a, from: 2, to: 3, view: view([(1, now - 5)])) == nil, "other pairs are free")
        #expect(rules.refusal(a, from: 2, to: 1, view: view([(2, now - 5)])) == nil, "the same direction again is free")
        // Same configuration on both nodes: other applications' moves do not hold this one
        // back, its own do.
        var same = view([(1, now - 5)])
        same.nodes[1].configuration = "day"
        #expect(rules.refusal(a, from: 2, to: 1, view: same) == nil)
        same.nodes[0].moves = [NodeView.Move(app: 1, from: 1, to: 2, at: now - 5)]
        #expect(rules.refusal(a, from: 2, to: 1, view: same)?.contains("app 1") == true)
    }
}

@Suite struct SettleTests {
    @Test func busyNodesDoNotAllSendToTheOneIdleNode() {
        // Every node reads the same view and decides in the same round: the busiest sends to
        // the least loaded, the next to the next, so two busy nodes never swamp one idle node.
        let now = Date(timeIntervalSince1970: 1_000_000)
        func view(_ loads: [Int: Double]) -> SchedulerView {
            SchedulerView(now: now, nodes: loads.keys.sorted().map { k in
                NodeView(node: k, cpus: 1, values: ["load": loads[k]!],
                         apps: (0..<Int(loads[k]!)).map { AppView(app: k * 10 + $0, node: k, cpu: 1, arrived: now - 3600) })
            })
        }
        func targets(_ v: SchedulerView) -> [Int: Int] {
            var out: [Int: Int] = [:]
            for n in v.nodes {
                for d in policy("balance").decide(v, me: n.node) { if case .migrate(_, let from, let to) = d.action { out[from] = to } }
            }
            return out
        }
        #expect(targets(view([1: 4, 2: 4, 3: 0])) == [1: 3], "one busy node sends to the idle one, the other waits its turn")
        #expect(targets(view([1: 4, 2: 5, 3: 0, 4: 1])) == [2: 3, 1: 4], "pairs by rank, distinct targets")
    }

    @Test func aNodeDoesNotActOnItsOwnStaleLoad() {
        // Measures that do not move (stale for the whole test): four one-CPU jobs on node 1,
        // nodes 2 and 3 idle. Without settling node 1 would send all four away.
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        let apps = (1...4).map { AppView(app: $0, node: 1, cpu: 1, arrived: t0 - 3600) }
        let p = policy("balance", ["max-per-minute": "60"])
        var moved: [Int] = []
        for s in 0..<4 {
            let now = t0 + Double(s)
            let view = SchedulerView(now: now, nodes: [
                NodeView(node: 1, cpus: 1, values: ["load": 4], apps: apps.filter { !moved.contains($0.app) }),
                NodeView(node: 2, cpus: 1, values: ["load": 0]), NodeView(node: 3, cpus: 1, values: ["load": 0]),
            ])
            for d in p.decide(view, me: 1) { if case .migrate(let a, _, _) = d.action { moved.append(a) } }
        }
        #expect(moved.count == 2, "two moves even the load (2, 1, 1): \(moved)")
    }

    @Test func aSlowMoveCountsAtItsTargetUntilDone() {
        // A move that takes 8 s (a large application): while it runs, the node's list still
        // has the application and its measures still count it; the policy counts it on its
        // target all along (settle-ms runs from the end of the move, not from the decision),
        // so the node does not send a third application meanwhile.
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        let apps = (1...4).map { AppView(app: $0, node: 1, cpu: 1, arrived: t0 - 3600) }
        let p = policy("balance", ["max-per-minute": "60", "settle-ms": "1000"])
        var decided: [(app: Int, at: Int)] = []
        for s in 0..<12 {
            let now = t0 + Double(s)
            // Moves finish 8 s after their decision; the measures catch up 1 s after that.
            let done = decided.filter { s >= $0.at + 8 }.map(\.app), caught = decided.filter { s >= $0.at + 9 }.count
            let view = SchedulerView(now: now, nodes: [
                NodeView(node: 1, cpus: 1, values: ["load": Double(4 - caught)], apps: apps.filter { !done.contains($0.app) }),
                NodeView(node: 2, cpus: 1, values: ["load": Double(decided.filter { s >= $0.at + 9 && $0.app % 2 == 1 }.count)]),
                NodeView(node: 3, cpus: 1, values: ["load": Double(decided.filter { s >= $0.at + 9 && $0.app % 2 == 0 }.count)]),
            ])
            for d in p.decide(view, me: 1) { if case .migrate(let a, _, _) = d.action { decided.append((a, s)) } }
        }
        #expect(decided.count == 2, "two moves even the load (2, 1, 1): \(decided)")
    }
}
