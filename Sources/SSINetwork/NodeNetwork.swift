import Foundation
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// This node's side of the cluster address: the address itself on `lo`, the kernel settings
/// that steering needs, the policy-routing rules and tables, and the nft table
/// (Steering.swift). Every step is idempotent: a daemon started again after `kill -9` finds
/// its own leftovers and keeps them.
public struct NodeNetwork: Sendable {
    public let clusterIP: String
    public let me: NodeID

    public init(clusterIP: String, me: NodeID) { (self.clusterIP, self.me) = (clusterIP, me) }

    /// Kernel settings of this network namespace (they are per namespace, ip-sysctl.txt):
    /// - ip_forward: an entry node passes packets for C on to the server's node;
    /// - send_redirects off: it forwards out of the interface the packet came in by, and an
    ///   ICMP redirect would teach the client's router to send all of C to that one node;
    /// - accept_local: a reply from C (a server elsewhere) to a client on this node comes
    ///   from an address that is local here too, which Linux drops as a martian otherwise;
    /// - rp_filter off: those replies fail the reverse-path check for the same reason;
    /// - arp_ignore=1: C is on `lo`; the node must not answer ARP for it on the LAN.
    public func prepareKernel() throws {
        let settings = [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/send_redirects", "0"), ("net/ipv4/conf/default/send_redirects", "0"),
            ("net/ipv4/conf/all/accept_local", "1"), ("net/ipv4/conf/default/accept_local", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"), ("net/ipv4/conf/default/rp_filter", "0"),
            ("net/ipv4/conf/all/arp_ignore", "1"),
        ]
        for (key, value) in settings { try write(key, value) }
        // Interfaces that exist already took the defaults when they were made.
        for dev in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/sys/net/ipv4/conf")) ?? [] where !["all", "default"].contains(dev) {
            try? write("net/ipv4/conf/\(dev)/send_redirects", "0")
            try? write("net/ipv4/conf/\(dev)/accept_local", "1")
            try? write("net/ipv4/conf/\(dev)/rp_filter", "0")
        }
    }

    private func write(_ key: String, _ value: String) throws {
        do { try ProcFS.write("/proc/sys/\(key)", value) } catch {
            throw SSIError(.permission, "node \(me): cannot set \(key.replacingOccurrences(of: "/", with: ".")) = \(value) for the cluster address: \(error)",
                           hint: "the cluster address needs root in the node's network namespace; or leave network.cluster-ip empty")
        }
    }

    /// C on `lo`, the local-table rule moved behind ours, one rule per node mark.
    public func prepareRouting(nodes: [NodeID], myAddress: String?) throws {
        let (_, addrs) = try Proc.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"])
        if !addrs.contains(" \(clusterIP)/32 ") {
            try Proc.run(["ip", "addr", "add", "\(clusterIP)/32", "dev", "lo"])
        }
        // A connection made on this node to C takes its source address from the route to C,
        // which is local: by default C itself (the `src` of the address's route), and a
        // packet from C to C steered to another node would come back to nobody. The node's
        // own address as the preferred source makes it an ordinary client.
        if let myAddress {
            let (_, local) = try Proc.run(["ip", "route", "show", "table", "local", "\(clusterIP)/32"])
            if !local.contains("src \(myAddress)") {
                try Proc.run(["ip", "route", "replace", "local", "\(clusterIP)/32", "dev", "lo", "table", "local", "src", myAddress])
            }
        }
        let (_, rules) = try Proc.run(["ip", "rule", "show"])
        if !rules.split(separator: "\n").contains(where: { $0.hasPrefix("100:") && $0.contains("lookup local") }) {
            try Proc.run(["ip", "rule", "add", "pref", "100", "lookup", "local"])
        }
        if rules.split(separator: "\n").contains(where: { $0.hasPrefix("0:") && $0.contains("lookup local") }) {
            try Proc.run(["ip", "rule", "del", "pref", "0", "lookup", "local"])
        }
        for n in nodes where n != me {
            let mark = "0x" + String(SteeringPlan.mark(n), radix: 16)
            if !rules.contains("fwmark \(mark) lookup \(SteeringPlan.routeTable(n))") {
                try Proc.run(["ip", "rule", "add", "pref", "50", "fwmark", mark, "lookup", "\(SteeringPlan.routeTable(n))"])
            }
        }
    }

    /// Applies a plan: every other node's route, then the nft table in one transaction.
    public func apply(_ plan: SteeringPlan) throws {
        try prepareRouting(nodes: Array(plan.nodes.keys), myAddress: plan.nodes[me])
        for (table, via) in plan.routes() {
            try Proc.run(["ip", "route", "replace", "\(clusterIP)/32", "via", via, "table", "\(table)"])
        }
        try applyRules(plan)
    }

    /// Only the nft rules of `plan` (one transaction): the routing was prepared by `apply`.
    public func applyRules(_ plan: SteeringPlan) throws {
        let (code, out) = try NFTables.apply(plan.ruleset(), tag: "ssi-cip")
        if code != 0 {
            throw SSIError(.system, "node \(me): nft refused the cluster address's rules: \(out)",
                           hint: "is nftables installed (scripts/setup-cluster.sh)? see the node's log")
        }
    }

    /// Removes what `apply` added (daemon stopped): the nft table, our rules and tables, C
    /// on `lo`. The local table's rule stays at preference 100, where it works as well.
    public func teardown() {
        _ = try? Proc.run(["nft", "delete", "table", "ip", SteeringPlan.nftTable], check: false)
        let rules = (try? Proc.run(["ip", "rule", "show"], check: false))?.1 ?? ""
        for line in rules.split(separator: "\n") where line.hasPrefix("50:") && line.contains("fwmark 0x55") {
            let f = line.split(separator: " ")
            guard let i = f.firstIndex(of: "fwmark"), i + 1 < f.count, let j = f.firstIndex(of: "lookup"), j + 1 < f.count else { continue }
            _ = try? Proc.run(["ip", "rule", "del", "pref", "50", "fwmark", String(f[i + 1]), "lookup", String(f[j + 1])], check: false)
            _ = try? Proc.run(["ip", "route", "flush", "table", String(f[j + 1])], check: false)
        }
        _ = try? Proc.run(["ip", "addr", "del", "\(clusterIP)/32", "dev", "lo"], check: false)
    }

    /// nft is needed as soon as a cluster address is set.
    public static func requireNft(node: NodeID) throws {
        let found = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].contains { (p: String) in access(p, X_OK) == 0 }
        if !found {
            throw SSIError(.notFound, "node \(node): nft (nftables) is not installed, and the cluster address and application addresses need it",
                           hint: "run scripts/setup-cluster.sh as root (it installs nftables), or leave network.cluster-ip and network.app-subnet empty")
        }
    }
}
