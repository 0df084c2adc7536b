import Foundation
import SSISystem

/// The built-in probe types and the values each gives (a probe named `cpu` of type `cpu`
/// gives `cpu.load` and `cpu.usage`).
public enum ProbeKind: String, CaseIterable, Sendable {
    case cpu, memory, apps, clock, external

    public var outputs: [String] {
        switch self {
        case .cpu: return ["load", "usage", "cpus"]
        case .memory: return ["free", "pressure"]
        case .apps: return ["count"]
        case .clock: return ["hour", "minute", "weekday"]
        case .external: return []
        }
    }
}

/// What a node's probes measure: the node's own processes, not the whole machine, so that the
/// local cluster's nodes (one machine) measure differently, as separate machines would.
public protocol NodeSource: Sendable {
    /// CPUs the node may use (a cgroup quota, or the online CPUs).
    var cpus: Double { get }
    /// CPU time used so far by the node's processes, in nanoseconds.
    func cpuTimeNanoseconds() -> UInt64?
    /// Threads of the node's processes that are running or runnable now.
    func runnableThreads() -> Int?
    /// Applications running on the node.
    func applicationCount() -> Int
}

/// The whole machine as one node: /proc/stat and the online CPUs.
public struct HostNode: NodeSource {
    public init() {}
    public var cpus: Double { Double(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    public func cpuTimeNanoseconds() -> UInt64? {
        // proc(5): the first line of /proc/stat is "cpu user nice system idle iowait irq
        // softirq steal ..." in USER_HZ ticks (sysconf(_SC_CLK_TCK)).
        guard let text = try? ProcFS.read("/proc/stat"), let line = text.split(separator: "\n").first else { return nil }
        let f = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard f.count >= 8 else { return nil }
        let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
        return busy * UInt64(1_000_000_000 / max(1, sysconf(Int32(_SC_CLK_TCK))))
    }

    public func runnableThreads() -> Int? {
        // "procs_running" counts runnable threads machine-wide, ourselves included.
        guard let text = try? ProcFS.read("/proc/stat") else { return nil }
        for l in text.split(separator: "\n") where l.hasPrefix("procs_running ") {
            return Int(l.split(separator: " ")[1]).map { max(0, $0 - 1) }
        }
        return nil
    }

    public func applicationCount() -> Int { 0 }
}

/// A node whose processes live in cgroup v1 groups of the cpu and cpuacct controllers (the
/// local cluster with `--cpus`): CPUs from `cpu.cfs_quota_us / cpu.cfs_period_us`, CPU time
/// from `cpuacct.usage`, runnable threads from the group's `tasks` (Documentation/
/// admin-guide/cgroup-v1/cpuacct.rst and scheduler/sched-bwc.rst).
public struct CgroupNode: NodeSource {
    public var cpuGroup: String
    public var cpuacctGroup: String
    public var applications: @Sendable () -> Int

    public init(cpuGroup: String, cpuacctGroup: String, applications: @escaping @Sendable () -> Int = { 0 }) {
        self.cpuGroup = cpuGroup
        self.cpuacctGroup = cpuacctGroup
        self.applications = applications
    }

    public var cpus: Double {
        let quota = (try? ProcFS.read("\(cpuGroup)/cpu.cfs_quota_us")).flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? -1
        let period = (try? ProcFS.read("\(cpuGroup)/cpu.cfs_period_us")).flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 100_000
        return quota > 0 ? quota / period : HostNode().cpus
    }

    public func cpuTimeNanoseconds() -> UInt64? {
        (try? ProcFS.read("\(cpuacctGroup)/cpuacct.usage")).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    public func runnableThreads() -> Int? {
        guard let text = try? ProcFS.read("\(cpuGroup)/tasks") else { return nil }
        // The daemon's own threads are in the group too: they measure, they are not load
        // (and a throttled group shows them runnable while they wait for its quota).
        let mine = Set(numericEntries(of: "/proc/self/task") ?? [])
        var n = 0
        for tid in text.split(separator: "\n").compactMap({ Int32($0) }) where !mine.contains(tid) && (try? ProcStat.read(pid: tid))?.state == "R" { n += 1 }
        return n
    }

    public func applicationCount() -> Int { applications() }

    /// The node of the calling process: its cpu and cpuacct groups from /proc/self/cgroup,
    /// when both are v1 groups other than the root; nil otherwise.
    public static func ofSelf(applications: @escaping @Sendable () -> Int = { 0 }) -> CgroupNode? {
        guard let text = try? ProcFS.read("/proc/self/cgroup") else { return nil }
        var paths: [String: String] = [:]
        // cgroups(7): "hierarchy-ID:controller-list:cgroup-path".
        for line in text.split(separator: "\n") {
            let f = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard f.count == 3 else { continue }
            for c in f[1].split(separator: ",") { paths[String(c)] = String(f[2]) }
        }
        guard let cpu = paths["cpu"], let acct = paths["cpuacct"], cpu != "/", acct != "/" else { return nil }
        return CgroupNode(cpuGroup: "/sys/fs/cgroup/cpu\(cpu)", cpuacctGroup: "/sys/fs/cgroup/cpuacct\(acct)", applications: applications)
    }
}

/// One probe: measures on its period and gives named values.
public protocol Probe: AnyObject {
    var element: SchedulerSettings.Element { get set }
    /// Values by output name (without the probe's name).
    func sample(now: Date) throws -> [String: Double]
    func stop()
}

extension Probe {
    public func stop() {}
    /// The probe's own period, before stretching.
    public var period: Double { Double(element.int("period-ms", 1000)) / 1000 }
}

/// cpu.load (runnable threads per CPU), cpu.usage (share of the node's CPUs used since the
/// last sample, 0...1), cpu.cpus.
final class CPUProbe: Probe {
    var element: SchedulerSettings.Element
    let node: NodeSource
    private var last: (time: Date, cpu: UInt64)?

    init(_ element: SchedulerSettings.Element, node: NodeSource) {
        self.element = element
        self.node = node
    }

    func sample(now: Date) throws -> [String: Double] {
        let cpus = max(0.01, node.cpus)
        var v: [String: Double] = ["cpus": cpus, "load": Double(node.runnableThreads() ?? 0) / cpus]
        if let t = node.cpuTimeNanoseconds() {
            if let last, now > last.time, t >= last.cpu {
                v["usage"] = min(1, Double(t - last.cpu) / 1e9 / now.timeIntervalSince(last.time) / cpus)
            }
            last = (now, t)
        }
        v["usage"] = v["usage"] ?? 0
        return v
    }
}

/// memory.free (MemAvailable / MemTotal) and memory.pressure (PSI "some" over 10 s, 0...1;
/// Documentation/accounting/psi.rst), 0 where PSI is not built in.
final class MemoryProbe: Probe {
    var element: SchedulerSettings.Element
    init(_ element: SchedulerSettings.Element) { self.element = element }

    func sample(now: Date) throws -> [String: Double] {
        let info = (try? ProcFS.read("/proc/meminfo")) ?? ""
        func kb(_ key: String) -> Double? {
            for l in info.split(separator: "\n") where l.hasPrefix(key + ":") {
                return l.split(separator: " ").dropFirst().first.flatMap { Double($0) }
            }
            return nil
        }
        var pressure = 0.0
        if let psi = try? ProcFS.read("/proc/pressure/memory"), let some = psi.split(separator: "\n").first {
            for f in some.split(separator: " ") where f.hasPrefix("avg10=") { pressure = (Double(f.dropFirst(6)) ?? 0) / 100 }
        }
        let free = (kb("MemAvailable") ?? 0) / max(1, kb("MemTotal") ?? 1)
        return ["free": free, "pressure": pressure]
    }
}

/// apps.count: applications on the node.
final class AppsProbe: Probe {
    var element: SchedulerSettings.Element
    let node: NodeSource
    init(_ element: SchedulerSettings.Element, node: NodeSource) {
        self.element = element
        self.node = node
    }
    func sample(now: Date) throws -> [String: Double] { ["count": Double(node.applicationCount())] }
}

/// clock.hour, clock.minute, clock.weekday (0 = Sunday), local time. `offset-hours` shifts
/// it, so that a test or a demonstration can be "at night" now.
final class ClockProbe: Probe {
    var element: SchedulerSettings.Element
    init(_ element: SchedulerSettings.Element) { self.element = element }

    func sample(now: Date) throws -> [String: Double] {
        let shifted = now.addingTimeInterval(element.double("offset-hours", 0) * 3600)
        let c = Calendar.current.dateComponents([.hour, .minute, .weekday], from: shifted)
        return ["hour": Double(c.hour ?? 0), "minute": Double(c.minute ?? 0), "weekday": Double((c.weekday ?? 1) - 1)]
    }
}
