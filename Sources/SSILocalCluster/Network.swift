import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The local cluster's network, as root: a hub namespace with a bridge and etcd, one
/// namespace per node with a veth on the bridge; and partitions of a node.
extension LocalCluster {
    func buildNetwork(nodes: Int) throws {
        let ip = "ip"
        try Proc.run([ip, "netns", "add", hub])
        try Proc.run([ip, "-n", hub, "link", "set", "lo", "up"])
        try Proc.run([ip, "-n", hub, "link", "add", "ssi-br0", "type", "bridge"])
        try Proc.run([ip, "-n", hub, "addr", "add", "\(Self.subnet).254/24", "dev", "ssi-br0"])
        try Proc.run([ip, "-n", hub, "link", "set", "ssi-br0", "up"])
        for k in 1...nodes {
            let ns = nodeNamespace(k)
            // Its TCP table of its own: /proc/net/tcp of a node is read on every move of its
            // applications (PrivateTCPHash).
            try PrivateTCPHash.during { try Proc.run([ip, "netns", "add", ns]) }
            try Proc.run([ip, "-n", hub, "link", "add", "ssi-h\(k)", "type", "veth", "peer", "name", "eth0", "netns", ns])
            try Proc.run([ip, "-n", hub, "link", "set", "ssi-h\(k)", "master", "ssi-br0", "up"])
            try Proc.run([ip, "-n", ns, "link", "set", "lo", "up"])
            // A migration's image is a burst of megabytes on a node-to-node connection idle
            // for seconds: with slow start after idle (the default), TCP sends it from its
            // initial window again, round trip after round trip (a 2.9 MB image 9.3 ms on
            // the wire instead of 4.5, inside the application's freeze). docs/cluster.md
            // recommends the same on real nodes.
            try Proc.run([ip, "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.tcp_slow_start_after_idle=0"])
            try Proc.run([ip, "-n", ns, "addr", "add", "\(Self.subnet).\(k)/24", "dev", "eth0"])
            try Proc.run([ip, "-n", ns, "link", "set", "eth0", "up"])
        }
    }


    public enum LinkState: String, CaseIterable, Sendable {
        /// Node k's veth on the hub's bridge is down: cut off from everyone, etcd included.
        case down
        /// Node k reaches etcd but no other node (a filter in its namespace): its RPC link is
        /// cut while its membership goes on, the partition a lease alone does not detect.
        case isolate
        /// Back to normal.
        case up
    }

    /// A network partition of node k.
    public func setLink(_ k: Int, _ state: LinkState) throws {
        guard plan()?.netns == true else { throw SSIError(.unsupported, "links exist only in a root (namespace) local cluster") }
        let ns = nodeNamespace(k)
        guard FileManager.default.fileExists(atPath: "/run/netns/\(ns)") else {
            throw SSIError(.notFound, "no node \(k) in the local cluster", hint: "ssi nodes status lists them")
        }
        try Proc.run(["ip", "-n", hub, "link", "set", "ssi-h\(k)", state == .down ? "down" : "up"])
        // The outside world's router stops (or starts again) sending the cluster address there.
        if let p = plan(), let ip = p.clusterIP { try routeClusterIP(ip, nodes: p.nodes) }
        // nft(8): one table of our own, deleted whole; loopback stays open (a node's calls to
        // its own address), and so does the hub, where etcd listens.
        _ = try? Proc.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "ssi-isolate"], check: false)
        if state == .isolate {
            let rules = """
            table inet ssi-isolate {
                chain input { type filter hook input priority 0; iifname "lo" accept; ip saddr \(Self.subnet).254 accept; ip saddr \(Self.subnet).0/24 drop; }
                chain output { type filter hook output priority 0; oifname "lo" accept; ip daddr \(Self.subnet).254 accept; ip daddr \(Self.subnet).0/24 drop; }
            }

            """
            let file = "\(dir)/isolate-\(k).nft"
            try rules.write(toFile: file, atomically: true, encoding: .utf8)
            try Proc.run(["ip", "netns", "exec", ns, "nft", "-f", file])
        }
    }

}
