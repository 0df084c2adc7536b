import Foundation
import Testing
@testable import SSIScheduler

/// A node whose measures the test sets.
final class FakeNode: NodeSource, @unchecked Sendable {
    var cpusValue = 1.0
    var cpuNanos: UInt64 = 0
    var runnable = 0
    var apps = 0
    var cpus: Double { cpusValue }
    func cpuTimeNanoseconds() -> UInt64? { cpuNanos }
    func runnableThreads() -> Int? { runnable }
    func applicationCount() -> Int { apps }
}

let lowHigh = """
<scheduler>
  <periods stretch-above="0.8" factor="4"/>
  <probe name="cpu" type="cpu" period-ms="500"/>
  <filter name="load" type="moving-average" input="cpu.load" window="2"/>
  <filter name="busy" type="hysteresis" input="load" high="1.0" low="0.5"/>
  <configuration name="low" selector="busy == 0">
    <probe name="clock" type="clock" period-ms="1000"/>
    <policy name="lb" type="balance" input="load" threshold="0.9"/>
  </configuration>
  <configuration name="high" selector="busy == 1">
    <policy name="lb" type="balance" input="load" threshold="0.3"/>
    <policy name="pack" type="consolidate" input="load"/>
  </configuration>
</scheduler>
"""

@Suite struct SCCTests {
    func emptyView(_ now: Date) -> SchedulerView { SchedulerView(now: now, nodes: []) }

    @Test func switchesWhenLoadRisesAndFalls() throws {
        let node = FakeNode()
        let scc = SchedulingConfigurationChanger(settings: try settings(lowHigh), me: 1, node: node)
        var now = Date(timeIntervalSince1970: 1_000_000)
        try scc.load(try settings(lowHigh), now: now)
        #expect(scc.active == "low")
        // Runnable threads rise: the moving average crosses the hysteresis' high mark.
        node.runnable = 3
        for _ in 0..<4 { now += 0.6; _ = scc.tick(now: now, view: { emptyView(now) }) }
        #expect(scc.active == "high", "\(scc.values)")
        let change = try #require(scc.lastChange)
        #expect(change.from == "low" && change.to == "high")
        #expect(change.unloaded == ["clock"], "\(change)")
        #expect(change.loaded == ["pack"], "\(change)")
        #expect(change.reparameterised == ["lb"], "only the threshold differs: \(change)")
        #expect(Set(change.kept) == ["cpu", "load", "busy"], "\(change)")
        // Between the marks nothing changes; under the low mark it switches back.
        node.runnable = 0
        for _ in 0..<4 { now += 0.6; _ = scc.tick(now: now, view: { emptyView(now) }) }
        #expect(scc.active == "low")
        #expect(scc.log.contains { $0.kind == "configuration" && $0.text.hasPrefix("high -> low") })
    }

    @Test func keepsFilterStateThroughReparameterisation() throws {
        let node = FakeNode()
        let scc = SchedulingConfigurationChanger(settings: try settings(lowHigh), me: 1, node: node)
        var now = Date(timeIntervalSince1970: 1_000_000)
        try scc.load(try settings(lowHigh), now: now)
        node.runnable = 1
        now += 0.6; _ = scc.tick(now: now, view: { emptyView(now) })
        let filter = try #require(scc.filters.first { $0.element.name == "load" })
        try scc.load(try settings(lowHigh.replacingOccurrences(of: "window=\"2\"", with: "window=\"3\"")), now: now)
        #expect(scc.filters.first { $0.element.name == "load" } === filter, "the same filter, re-parameterised")
        #expect(scc.lastChange?.reparameterised == ["load"])
    }

    @Test func periodsStretchUnderLoad() throws {
        let node = FakeNode()
        let scc = SchedulingConfigurationChanger(settings: try settings(lowHigh), me: 1, node: node)
        var now = Date(timeIntervalSince1970: 1_000_000)
        try scc.load(try settings(lowHigh), now: now)
        _ = scc.tick(now: now, view: { emptyView(now) })
        // One CPU fully busy for 0.6 s: usage 1.0 > 0.8.
        now += 0.6; node.cpuNanos += 600_000_000
        _ = scc.tick(now: now, view: { emptyView(now) })
        #expect(scc.stretched)
        let cpu = try #require(scc.status().items.first { $0.name == "cpu" })
        #expect(cpu.periodMs == 500 && cpu.effectivePeriodMs == 2000, "\(cpu)")
        // Sampled again only after 2 s: an idle second after 0.6 s is not seen yet.
        now += 0.6
        _ = scc.tick(now: now, view: { emptyView(now) })
        #expect(scc.stretched)
        now += 1.5
        _ = scc.tick(now: now, view: { emptyView(now) })
        #expect(!scc.stretched, "usage fell: \(scc.values)")
        #expect(scc.log.contains { $0.kind == "periods" && $0.text.contains("back under") })
    }

    @Test func ambiguousSelectorsRefusedAtLoad() throws {
        let scc = SchedulingConfigurationChanger(settings: try settings(lowHigh), me: 1, node: FakeNode())
        let now = Date(timeIntervalSince1970: 1_000_000)
        try scc.load(try settings(lowHigh), now: now)
        _ = scc.tick(now: now, view: { emptyView(now) })
        let both = lowHigh.replacingOccurrences(of: "selector=\"busy == 1\"", with: "selector=\"busy &lt;= 1\"")
        let parsed = try settings(both)
        #expect(throws: SettingsError.self) { try scc.load(parsed, now: now) }
        do { try scc.load(parsed, now: now) } catch { #expect(error.reason.contains("both hold"), "\(error)") }
        #expect(scc.settings.configurations[1].selector == "busy == 1", "nothing changed")
    }

    @Test func placementWithoutAPolicyUsesLoad() throws {
        let s = try settings("<scheduler><probe name='cpu' type='cpu'/><configuration name='a' selector='otherwise'/></scheduler>")
        let scc = SchedulingConfigurationChanger(settings: s, me: 1, node: FakeNode())
        try scc.load(s)
        let v = SchedulerView(now: Date(), nodes: [NodeView(node: 1, cpus: 1, values: ["cpu.load": 2]), NodeView(node: 2, cpus: 1, values: ["cpu.load": 1])])
        #expect(scc.place(v)?.action == .place(node: 2))
    }

    @Test func policiesRunOnTheirPeriodAndLogWhy() throws {
        let xml = """
        <scheduler><probe name="cpu" type="cpu"/>
        <configuration name="a" selector="otherwise"><policy name="lb" type="balance" input="cpu.load" period-ms="1000" min-residence-ms="0"/></configuration></scheduler>
        """
        let s = try settings(xml)
        let scc = SchedulingConfigurationChanger(settings: s, me: 1, node: FakeNode())
        try scc.load(s)
        var now = Date(timeIntervalSince1970: 1_000_000)
        let view = { SchedulerView(now: now, nodes: [
            NodeView(node: 1, cpus: 1, values: ["cpu.load": 3], apps: (1...3).map { AppView(app: $0, node: 1, cpu: 1, arrived: now - 100) }),
            NodeView(node: 2, cpus: 1, values: ["cpu.load": 0]),
        ]) }
        let first = scc.tick(now: now, view: view)
        #expect(first.count == 1 && first[0].action == .migrate(app: 1, from: 1, to: 2), "\(first)")
        now += 0.5
        #expect(scc.tick(now: now, view: view).isEmpty, "period not over")
        #expect(scc.log.last?.text.contains("migrate app 1 from node 1 to node 2") == true)
    }
}

@Suite struct PluginTests {
    func python() -> Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") }

    @Test func externalProbeExample() throws {
        try #require(python(), "python3 is not installed: the example plug-ins are Python")
        let xml = "<scheduler><probe name='ext' type='external' command='\(shareDir)/plugins/probe-example.py' outputs='files,loadavg' dir='\(shareDir)'/><configuration name='a' selector='ext.files &gt;= 3'/><configuration name='b' selector='otherwise'/></scheduler>"
        let s = try settings(xml)
        let scc = SchedulingConfigurationChanger(settings: s, me: 1, node: FakeNode())
        try scc.load(s)
        _ = scc.tick(view: { SchedulerView(now: Date(), nodes: []) })
        #expect(scc.values["ext.files"] == 4, "default.xml, day-night.xml, low-high.xml, plugins: \(scc.values)")
        #expect(scc.values["ext.loadavg"] != nil)
        #expect(scc.active == "a")
    }

    @Test func externalProbeFailureIsReported() throws {
        let xml = "<scheduler><probe name='ext' type='external' command='read request; echo not-json' outputs='x' period-ms='10'/><configuration name='a' selector='otherwise'/></scheduler>"
        let s = try settings(xml)
        let scc = SchedulingConfigurationChanger(settings: s, me: 1, node: FakeNode())
        try scc.load(s)
        _ = scc.tick(view: { SchedulerView(now: Date(), nodes: []) })
        let item = try #require(scc.status().items.first { $0.name == "ext" })
        #expect(item.error?.contains("not a JSON object") == true, "\(item)")
        #expect(scc.log.contains { $0.kind == "error" && $0.text.contains("probe ext") })
    }

    @Test func externalPolicyExample() throws {
        try #require(python(), "python3 is not installed: the example plug-ins are Python")
        let xml = "<scheduler><configuration name='a' selector='otherwise'><policy name='mine' type='external' command='\(shareDir)/plugins/policy-example.py' max-apps='2'/></configuration></scheduler>"
        let s = try settings(xml)
        let scc = SchedulingConfigurationChanger(settings: s, me: 1, node: FakeNode())
        try scc.load(s)
        let now = Date()
        let ds = scc.tick(now: now, view: { SchedulerView(now: now, nodes: [
            NodeView(node: 1, cpus: 1, values: [:], apps: [AppView(app: 5, node: 1, cpu: 0, rssBytes: 10, arrived: now),
                                                            AppView(app: 6, node: 1, cpu: 0, rssBytes: 99, arrived: now)]),
            NodeView(node: 2, cpus: 1, values: [:], apps: [AppView(app: 7, node: 2, cpu: 0, arrived: now)]),
            NodeView(node: 3, cpus: 1, values: [:]),
        ]) })
        #expect(ds.count == 1 && ds[0].action == .migrate(app: 6, from: 1, to: 3), "\(ds) \(scc.log)")
        #expect(ds.first?.reason.contains("limit 2") == true)
    }
}
