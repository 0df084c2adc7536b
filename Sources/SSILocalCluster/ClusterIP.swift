import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The cluster address seen from outside (issue 13, docs/network.md). In the local cluster
/// the hub namespace is the outside world and plays the router: it sends the cluster address
/// to every node whose link is up, one route with a next hop per node (ip-route(8)
/// `nexthop`), and spreads connections over them by a hash of addresses and ports
/// (fib_multipath_hash_policy = 1, ip-sysctl.txt), so that any node takes traffic in. On a
/// real network the router in front of the nodes does the same (a multipath route, or an
/// anycast announcement).
extension LocalCluster {
    public static let defaultClusterIP = "10.77.1.1"

    /// The hub's route to the cluster address: every node whose veth on the bridge is up.
    func routeClusterIP(_ ip: String, nodes: Int) throws {
        try Proc.run(["ip", "netns", "exec", hub, "sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"])
        // A next hop whose neighbour entry has failed is skipped (fib_multipath_use_neigh):
        // a node that stopped answering is left out even before the route is rewritten.
        try Proc.run(["ip", "netns", "exec", hub, "sysctl", "-q", "-w", "net.ipv4.fib_multipath_use_neigh=1"])
        var hops: [String] = []
        for k in 1...nodes {
            let (_, state) = try Proc.run(["ip", "-n", hub, "-o", "link", "show", "ssi-h\(k)"], check: false)
            if state.contains("<") && !state.split(separator: "<")[1].split(separator: ">")[0].split(separator: ",").contains("UP") { continue }
            hops += ["nexthop", "via", "\(Self.subnet).\(k)"]
        }
        if hops.isEmpty {
            _ = try? Proc.run(["ip", "-n", hub, "route", "del", "\(ip)/32"], check: false)
            return
        }
        try Proc.run(["ip", "-n", hub, "route", "replace", "\(ip)/32"] + hops)
    }
}
