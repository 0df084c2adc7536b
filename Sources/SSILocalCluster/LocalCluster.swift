import Foundation
import SSIControl
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// A cluster on this one machine, for development and tests.
///
/// As root every node runs in a network namespace `ssi-nodeK` with one veth whose other end
/// sits on the bridge `ssi-br0` of a hub namespace `ssi-hub`, where etcd runs; nodes are
/// 10.77.0.K and etcd 10.77.0.254:2379. No address or link is added to the caller's namespace.
/// Without root, nodes are processes on 127.0.1.K and etcd listens on 127.0.0.1:23790.
///
/// Everything lives under one state directory, so `down` (and the next `up`, after a crash)
/// finds it: the supervisor's pid, every child's pid, configs, logs, sockets, etcd's data.
public struct LocalCluster: Sendable {
    public static let subnet = "10.77.0"
    /// The application network of a namespace local cluster (network.app-subnet).
    public static let appSubnet = "10.78.0.0/16"
    /// The instance's name, from `SSI_CLUSTER_NAME` (empty by default). Two engineers, or two
    /// test runs, on one machine give different names and get separate state directories and
    /// namespaces; addresses can repeat because each instance has namespaces of its own.
    public let name: String
    public let dir: String
    public let root: Bool

    public init(name: String? = nil) {
        root = geteuid() == 0
        let n = (name ?? ProcessInfo.processInfo.environment["SSI_CLUSTER_NAME"] ?? "")
            .filter { $0.isLetter || $0.isNumber }
        // Namespace names are free-form, but keep them short and shell-safe.
        self.name = String(n.prefix(8))
        let suffix = self.name.isEmpty ? "" : "-\(self.name)"
        dir = root ? "/run/ssi-cluster\(suffix)" : "/tmp/ssi-cluster-\(geteuid())\(suffix)"
    }

    /// The hub namespace (bridge and etcd), as root.
    public var hub: String { name.isEmpty ? "ssi-hub" : "ssi-\(name)-hub" }
    /// Node k's network namespace, as root.
    public func nodeNamespace(_ k: Int) -> String { name.isEmpty ? "ssi-node\(k)" : "ssi-\(name)-node\(k)" }
    /// The argv prefix that runs a program in node k's network namespace, or nothing for
    /// loopback nodes. nsenter(1) enters the network namespace only; `ip netns exec` would
    /// also remount /sys in a mount namespace of its own (ip-netns(8)), where the cgroup
    /// hierarchies under /sys/fs/cgroup are no longer mounted: the daemon and the engine need
    /// them (the freezer, the node's cpu group).
    public func inNode(_ k: Int, netns: Bool) -> [String] { netns ? ["nsenter", "--net=/run/netns/\(nodeNamespace(k))", "--"] : [] }

    public func socket(node: Int) -> String { "\(dir)/node\(node).sock" }
    public func log(node: Int) -> String { "\(dir)/node\(node).log" }
    var planPath: String { "\(dir)/plan.json" }

    public struct Plan: Codable, Sendable {
        public var nodes: Int
        public var netns: Bool
        public var session: UInt64
        public var etcd: String
        public var ssid: String
        /// CPUs of each node (`--cpus`), nil: unlimited.
        public var cpus: Double? = nil
        /// The cluster's address for the outside world (`--cluster-ip`), nil: none.
        public var clusterIP: String? = nil
    }

    public func plan() -> Plan? {
        guard let d = FileManager.default.contents(atPath: planPath) else { return nil }
        return try? JSONDecoder().decode(Plan.self, from: d)
    }

    /// Node k's dashboard port, on 127.0.0.1: inside its namespace, or on the host's loopback
    /// for a loopback cluster (hence one port per node).
    public func dashboardPort(_ k: Int) -> Int { 7180 + k }

    public func nodeHost(_ k: Int, netns: Bool) -> String { netns ? "\(Self.subnet).\(k)" : "127.0.1.\(k)" }

    // MARK: up

    /// Builds the cluster and returns once every node is online.
    public func up(nodes: Int, ssid: String, ssi: String, useNetns: Bool? = nil, cpus: Double? = nil, clusterIP: String? = nil, appLinks: String? = nil) throws -> Plan {
        if let appLinks, appLinks != "direct" && appLinks != "routed" {
            throw SSIError(.invalidArgument, "--app-links \(appLinks): expected routed or direct")
        }
        guard (1...200).contains(nodes) else { throw SSIError(.invalidArgument, "--nodes must be 1..200") }
        if let cpus, !(cpus >= 0.01 && cpus <= 1024) { throw SSIError(.invalidArgument, "--cpus must be between 0.01 and 1024 (CPUs per node), not \(cpus)") }
        let netns = useNetns ?? root
        if netns && !root { throw SSIError(.permission, "network namespaces need root", hint: "run as root, or without --netns for loopback nodes") }
        if clusterIP != nil && !netns {
            throw SSIError(.unsupported, "--cluster-ip needs network namespaces (root, no --loopback): the hub namespace plays the router in front of the nodes")
        }
        if let clusterIP, (1...nodes).contains(where: { nodeHost($0, netns: true) == clusterIP }) || clusterIP == "\(Self.subnet).254" {
            throw SSIError(.invalidArgument, "the cluster address \(clusterIP) is a node's or the hub's own address", hint: "choose one outside \(Self.subnet).0/24, e.g. \(Self.defaultClusterIP)")
        }
        guard let etcdPath = which("etcd") else {
            throw SSIError(.notFound, "etcd is not installed", hint: "run scripts/setup-cluster.sh (as root) to install etcd-server")
        }
        try down(quiet: true)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o700)
        mountEtcdMemory()
        var secret = [UInt8](repeating: 0, count: 32)
        for i in secret.indices { secret[i] = UInt8.random(in: 0...255) }
        _ = FileManager.default.createFile(atPath: "\(dir)/secret", contents: Data(secret), attributes: [.posixPermissions: 0o600])
        let session = UInt64.random(in: 1...UInt64(UInt32.max))
        let etcdHost = netns ? "\(Self.subnet).254" : "127.0.0.1"
        let etcdPort = netns ? 2379 : 23790
        let plan = Plan(nodes: nodes, netns: netns, session: session, etcd: "http://\(etcdHost):\(etcdPort)", ssid: ssid, cpus: cpus, clusterIP: clusterIP)
        if let cpus { for k in 1...nodes { try makeCPUGroups(k, cpus: cpus) } }
        if netns {
            OperationProgress.report("building network namespaces")
            try buildNetwork(nodes: nodes)
            if let clusterIP { try routeClusterIP(clusterIP, nodes: nodes) }
        }
        for k in 1...nodes {
            var conf = """
            # written by ssi cluster up
            node = \(k)
            session = \(session)
            listen = \(nodeHost(k, netns: netns)):7100
            secret = \(dir)/secret
            etcd = \(plan.etcd)
            control = \(socket(node: k))
            join = yes
            dashboard = 127.0.0.1:\(dashboardPort(k))
            # each node keeps its own snapshots and logs: nothing relies on a shared directory
            apps.snapshots = \(dir)/node\(k)/chkpt
            apps.logs = \(dir)/node\(k)/log
            """
            if let clusterIP { conf += "\nnetwork.cluster-ip = \(clusterIP)" }
            // Application addresses (`ssi run --net app`) need each node in a network
            // namespace of its own: the nodes route the subnet among themselves.
            if netns { conf += "\nnetwork.app-subnet = \(Self.appSubnet)" }
            if netns, let appLinks { conf += "\nnetwork.app-links = \(appLinks)" }
            let groups = cpuGroups(k)
            if cpus != nil, !groups.isEmpty {
                // --cpus: the node's applications share its groups' CPUs; the daemon stays
                // outside them (CPULimit.swift), and its scheduler measures them.
                conf += "\napps.cpugroups = \(groups.joined(separator: " "))\nscheduler.node-groups = \(groups.joined(separator: " "))"
            }
            try conf.write(toFile: "\(dir)/node\(k).conf", atomically: true, encoding: .utf8)
        }
        // etcd's command line, kept for the supervisor.
        let etcdArgv = [etcdPath, "--name", "ssi", "--data-dir", "\(dir)/etcd",
                        "--listen-client-urls", plan.etcd, "--advertise-client-urls", plan.etcd,
                        "--listen-peer-urls", "http://127.0.0.1:\(etcdPort + 1)",
                        "--initial-advertise-peer-urls", "http://127.0.0.1:\(etcdPort + 1)",
                        "--initial-cluster", "ssi=http://127.0.0.1:\(etcdPort + 1)", "--log-level", "warn",
                        // A KDDM put's view fence takes 2 comparisons per online node (Etcd.Fence).
                        "--max-txn-ops", "1024"]
        try JSONSerialization.data(withJSONObject: netns ? ["ip", "netns", "exec", hub] + etcdArgv : etcdArgv)
            .write(to: URL(fileURLWithPath: "\(dir)/etcd.argv"))
        try JSONEncoder().encode(plan).write(to: URL(fileURLWithPath: planPath))
        OperationProgress.report("starting etcd and \(nodes) daemons")
        let sup = try Proc.spawnSibling([ssi, "cluster", "supervise", "--dir", dir], log: "\(dir)/supervisor.log")
        try "\(sup)".write(toFile: "\(dir)/supervisor.pid", atomically: true, encoding: .utf8)
        // Wait until every node is online, seen from node 1, and then until every node's
        // KDDM grants writes: for 600 ms after the online nodes change, owners hold grants
        // back (nodes may still trust copies read under the previous view), so the first
        // `ssi run` after `up` would otherwise wait that long for its application id.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let online = try? onlineCount(via: 1)
            if online == nodes {
                let waits = (1...nodes).map { k in (try? ControlClient.request(socket: socket(node: k), .membership(.status), timeout: 2).status().grantsInMs ?? 0) ?? 1 }
                if waits.allSatisfy({ $0 == 0 }) { return plan }
                OperationProgress.report("waiting for the nodes' views to settle")
                usleep(UInt32(min(100, max(10, waits.max() ?? 10))) * 1000)
                continue
            }
            OperationProgress.report("waiting for the nodes: \(online ?? 0) of \(nodes) online")
            if !Proc.alive(sup) { break }
            usleep(100_000)
        }
        let tail = (try? String(contentsOfFile: log(node: 1), encoding: .utf8))?.split(separator: "\n").suffix(5).joined(separator: "\n") ?? ""
        throw SSIError(.system, "the local cluster did not come up within 30 s", hint: "see \(dir)/*.log; node 1 says:\n\(tail)")
    }

    /// etcd's data in memory (a tmpfs of its own), as root: etcd syncs its log to disk on
    /// every write (fdatasync, one per KDDM put), which on this kind of machine's virtual
    /// disk costs 1-3 ms, and a migration's record take-over is one of the writes inside
    /// the application's frozen time. The local cluster does not outlive the machine's boot
    /// (its namespaces and processes do not), so durability across a power cut buys it
    /// nothing; on most systems /run, where it lives, is a tmpfs already. A production etcd
    /// keeps its data on a disk of its own. Without root, or if the mount fails, etcd's data
    /// stays in the directory.
    func mountEtcdMemory() {
        guard root else { return }
        let path = "\(dir)/etcd"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        if mount("ssi-etcd", path, "tmpfs", 0, "mode=0700,size=512m") != 0 {
            FileHandle.standardError.write(Data("ssi: etcd's data stays on disk (\(path)): tmpfs mount failed: \(String(cString: strerror(errno)))\n".utf8))
        }
    }

    func onlineCount(via k: Int) throws -> Int {
        try ControlClient.request(socket: socket(node: k), .membership(.status), timeout: 2).status().online
    }

    /// Asks the supervisor to start node k's daemon again (after it died), and waits for its
    /// control socket.
    public func startNode(_ k: Int) throws {
        guard let p = plan(), (1...p.nodes).contains(k) else { throw SSIError(.notFound, "no node \(k) in the local cluster") }
        _ = FileManager.default.createFile(atPath: "\(dir)/start-\(k)", contents: nil)
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if FileManager.default.fileExists(atPath: "\(dir)/start-\(k)") == false,
               (try? ControlClient.request(socket: socket(node: k), .membership(.status), timeout: 2)) != nil { return }
            usleep(100_000)
        }
        throw SSIError(.system, "node \(k) did not start within 15 s", hint: "see \(log(node: k))")
    }


    // MARK: down

    /// Removes everything `up` made, whether or not its processes still run. Idempotent.
    public func down(quiet: Bool = false) throws {
        var pids: [pid_t] = []
        if let s = try? String(contentsOfFile: "\(dir)/supervisor.pid", encoding: .utf8), let p = pid_t(s) { pids.append(p) }
        if let names = try? FileManager.default.contentsOfDirectory(atPath: "\(dir)/pids") {
            for n in names { if let s = try? String(contentsOfFile: "\(dir)/pids/\(n)", encoding: .utf8), let p = pid_t(s) { pids.append(p) } }
        }
        // Only our own processes: the supervisor (ssi), etcd and ssid.
        pids = pids.filter { p in Proc.alive(p) && ["ssi", "etcd", "ssid"].contains { Proc.cmdline(p).contains($0) } }
        // And the applications, children of their node's ssid: those with an address of their
        // own live in network namespaces of their own, which `ip netns pids` of the node's
        // namespace does not list.
        for p in pids where Proc.cmdline(p).contains("ssid") { pids += processTree(p).filter { $0 != p } }
        var nsList: [String] = []
        if root, let (_, out) = try? Proc.run(["ip", "netns", "list"], check: false) {
            nsList = out.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
                .filter { ns in ns == hub || (1...200).contains { ns == nodeNamespace($0) } }
            for ns in nsList {
                if let (_, o) = try? Proc.run(["ip", "netns", "pids", ns], check: false) {
                    pids += o.split(separator: "\n").compactMap { pid_t($0.trimmingCharacters(in: .whitespaces)) }
                }
            }
        }
        for p in pids { kill(p, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(5)
        while pids.contains(where: Proc.alive) && ContinuousClock.now < deadline {
            Proc.reapAll()
            usleep(50_000)
        }
        for p in pids where Proc.alive(p) { kill(p, SIGKILL) }
        while pids.contains(where: Proc.alive) { Proc.reapAll(); usleep(20_000) }
        Proc.reapAll()
        for ns in nsList { _ = try? Proc.run(["ip", "netns", "del", ns], check: false) }
        if root, let n = plan()?.nodes { for k in 1...max(1, n) { removeCPUGroups(k) } }
        // A lazy unmount (MNT_DETACH, umount(2)): etcd is gone, but a shell may sit in it.
        if root { _ = umount2("\(dir)/etcd", Int32(MNT_DETACH)) }
        if FileManager.default.fileExists(atPath: dir) {
            try FileManager.default.removeItem(atPath: dir)
        }
    }
}

func which(_ name: String) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
    for d in path + ["/usr/sbin", "/sbin"] {
        let p = "\(d)/\(name)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}
