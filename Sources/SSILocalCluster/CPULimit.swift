import Foundation
import SSISystem

/// `ssi cluster up --cpus C`: each node's applications share C CPUs (the daemon puts them in
/// the node's groups: `apps.cpugroups`), so that the nodes of one machine behave like
/// separate, slower machines and load balancing can be measured. The daemon itself stays
/// outside: throttled with its applications, it would checkpoint and migrate them slowly.
///
/// The cpu controller's bandwidth limit: on cgroup v1 `cpu.cfs_quota_us` over
/// `cpu.cfs_period_us` (Documentation/scheduler/sched-bwc.rst), with a group of the same name
/// in the cpuacct hierarchy for the node's CPU time (the scheduler's cpu probe reads it); on
/// cgroup v2 `cpu.max` ("QUOTA PERIOD") and `cpu.stat`.
extension LocalCluster {
    static let cgroupRoot = "/sys/fs/cgroup"

    /// The node's groups, one per hierarchy that has a cpu or cpuacct controller.
    func cpuGroups(_ k: Int) -> [String] {
        let name = name.isEmpty ? "ssi-node\(k)" : "ssi-\(name)-node\(k)"
        let fm = FileManager.default
        if fm.fileExists(atPath: "\(Self.cgroupRoot)/cpu/cpu.cfs_quota_us") {
            return ["\(Self.cgroupRoot)/cpu/\(name)", "\(Self.cgroupRoot)/cpuacct/\(name)"].filter { fm.fileExists(atPath: ($0 as NSString).deletingLastPathComponent) }
        }
        if let c = try? ProcFS.read("\(Self.cgroupRoot)/cgroup.controllers"), c.split(separator: " ").contains(where: { $0.hasPrefix("cpu") && $0.count == 3 }) {
            return ["\(Self.cgroupRoot)/\(name)"]
        }
        return []
    }

    /// Makes node k's groups with a limit of `cpus` CPUs. Throws when the machine has no cpu
    /// controller, naming what is missing.
    func makeCPUGroups(_ k: Int, cpus: Double) throws {
        guard root else { throw SSIError(.permission, "--cpus needs root (it makes cgroups)", hint: "run as root, or drop --cpus") }
        let groups = cpuGroups(k)
        guard !groups.isEmpty else {
            throw SSIError(.unsupported, "--cpus: no cpu controller under \(Self.cgroupRoot) (neither v1 cpu/cpu.cfs_quota_us nor v2 cgroup.controllers with cpu)",
                           hint: "mount the cpu controller, or drop --cpus")
        }
        let period = 100_000
        let quota = max(1000, Int(cpus * Double(period)))
        for g in groups {
            try? FileManager.default.createDirectory(atPath: g, withIntermediateDirectories: false)
            if g.hasPrefix("\(Self.cgroupRoot)/cpu/") {
                try ProcFS.write("\(g)/cpu.cfs_period_us", "\(period)")
                try ProcFS.write("\(g)/cpu.cfs_quota_us", "\(quota)")
            } else if !g.hasPrefix("\(Self.cgroupRoot)/cpuacct/") {
                try ProcFS.write("\(g)/cpu.max", "\(quota) \(period)")
            }
        }
    }

    /// Removes node k's groups once their processes are gone (rmdir(2) of a cgroup fails
    /// with EBUSY while it has tasks).
    func removeCPUGroups(_ k: Int) {
        for g in cpuGroups(k) { rmdir(g) }
    }
}
