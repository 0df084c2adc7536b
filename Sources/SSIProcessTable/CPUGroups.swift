import Foundation
import SSISystem

/// The cgroups a node puts its applications in (`apps.cpugroups` in ssid's configuration):
/// in the local cluster with `--cpus C`, the node's cpu and cpuacct groups (cgroup v1), so
/// that its applications share C CPUs while the daemon itself stays outside the limit and
/// can checkpoint, migrate and schedule them at full speed.
extension NodeApplications {
    /// ssi-init's options that make a launched application born in the groups.
    func joinArguments() -> [String] {
        cpuGroups.withLock { $0 }.flatMap { ["--join", "\($0)/cgroup.procs"] }
    }

    /// Moves a restored application (its init and every descendant) into the groups: the
    /// restorer made its processes as children of this daemon, outside them. Writing a PID
    /// to cgroup.procs moves its whole thread group (cgroups(7)). Best effort: an
    /// application outside its node's limit still runs.
    func joinCPUGroups(root: Int32) {
        let groups = cpuGroups.withLock { $0 }
        guard !groups.isEmpty else { return }
        let all = processTree(root, limit: 10_000)
        for g in groups {
            for p in all {
                do { try ProcFS.write("\(g)/cgroup.procs", "\(p)") } catch {
                    logger.warning("node \(me): cannot move pid \(p) into \(g): \(error)")
                }
            }
        }
    }
}
