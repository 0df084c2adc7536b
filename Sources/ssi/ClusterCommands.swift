import ArgumentParser
import Foundation
import SSIControl
import SSINetwork
import SSIKDDM
import SSILocalCluster
import SSIMembership
import SSISystem

// Cluster commands (`ssi nodes`, `ssi cluster`, `ssi kddm`): issue "Cluster core".
// `krgadm nodes status` is `ssi nodes status`.
let clusterCommands: [ParsableCommand.Type] = [Nodes.self, Cluster.self, KDDMCommand.self]

func clusterFail(_ error: Error) -> Never {
    FileHandle.standardError.write(Data("ssi: \(error)\n".utf8))
    exit(1)
}

/// What `body` returns; an error is printed (message and hint) and ssi exits 1.
func orFail<T>(_ body: () throws -> T) -> T {
    do { return try body() } catch { clusterFail(error) }
}

/// `value` as JSON on stdout, keys sorted (what --json prints): on one line, or indented with
/// ISO 8601 dates when `pretty` (the scheduler's status and log, read by people too).
func printJSON<T: Encodable>(_ value: T, pretty: Bool = false) {
    let e = JSONEncoder()
    e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
    if pretty { e.dateEncodingStrategy = .iso8601 }
    print(String(decoding: orFail { try e.encode(value) }, as: UTF8.self))
}

/// Which daemon to ask: --socket, else $SSI_CONTROL, else node --node (default: the first
/// that answers) of the local cluster, else /run/ssid.sock.
struct DaemonOptions: ParsableArguments {
    @Option(name: .customLong("node"), help: "Ask this node of the local cluster (default: the first that answers).")
    var node: Int?
    @Option(help: "The daemon's control socket.")
    var socket: String?

    func call(_ req: ControlRequest, timeout: Int = 60) throws -> ControlReply {
        try connect().send(req, timeout: timeout)
    }

    /// Only a daemon that cannot be reached makes us try the next node: once one has the
    /// request, its answer (or its error) is final.
    func connect() throws -> ControlConnection {
        if let socket { return try ControlConnection(socket: socket) }
        if let env = ProcessInfo.processInfo.environment["SSI_CONTROL"] { return try ControlConnection(socket: env) }
        let lc = LocalCluster()
        guard let plan = lc.plan() else { return try ControlConnection(socket: "/run/ssid.sock") }
        if let node { return try ControlConnection(socket: lc.socket(node: node)) }
        var last = SSIError(.unreachable, "no node of the local cluster answers", hint: "ssi cluster up starts one")
        for k in 1...plan.nodes {
            do { return try ControlConnection(socket: lc.socket(node: k)) } catch let e as SSIError where e.kind == .unreachable {
                last = e
            }
        }
        throw last
    }
}

struct Nodes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cluster membership (Kerrighed: krgadm nodes).",
        subcommands: [NodesStatus.self, NodesAdd.self, NodesDel.self])
}

struct NodesStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Print id:state for each node (possible, present, online, failed).")
    @Option(name: .short, help: "Only these nodes, e.g. 2,3,6-10.") var n: String?
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        do {
            let only = try n.map { Set(try parseNodeList($0)) }
            let nodes = try daemon.call(.membership(.status)).status().nodes
            for node in nodes {
                if let only, !only.contains(node.id) { continue }
                print("\(node.id):\(node.state.rawValue)")
            }
            if let only {
                let known = Set(nodes.map(\.id))
                for id in only.sorted() where !known.contains(id) { print("\(id):unknown") }
            }
        } catch { clusterFail(error) }
    }
}

struct NodeSelectionOptions: ParsableArguments {
    @Option(name: .short, help: "Nodes, e.g. 2,3,6-10.") var n: String?
    @Option(name: .short, help: "This many nodes.") var c: Int?
    @Flag(name: .short, help: "All nodes.") var a = false

    func selection() throws -> SSIControl.NodeSelection {
        let given = (n != nil ? 1 : 0) + (c != nil ? 1 : 0) + (a ? 1 : 0)
        guard given == 1 else { throw ValidationError("give exactly one of -n LIST, -c COUNT, -a") }
        if let n { return .nodes(try parseNodeList(n)) }
        if let c { return .count(c) }
        return .all
    }

    /// Sends the add or removal of the selected nodes and prints those it changed.
    func apply(_ request: (SSIControl.NodeSelection) -> MembershipRequest, via daemon: DaemonOptions, done verb: String) throws {
        let req = ControlRequest.membership(request(try selection()))
        print("\(verb): \(orFail { try daemon.call(req).nodes() }.map(String.init).joined(separator: ","))")
    }
}

struct NodesAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add present nodes to the cluster (they become online).")
    @OptionGroup var sel: NodeSelectionOptions
    @OptionGroup var daemon: DaemonOptions
    func run() throws { try sel.apply(MembershipRequest.add, via: daemon, done: "added") }
}

struct NodesDel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "del", abstract: "Remove nodes from the cluster (they stay present).")
    @OptionGroup var sel: NodeSelectionOptions
    @OptionGroup var daemon: DaemonOptions
    func run() throws { try sel.apply(MembershipRequest.remove, via: daemon, done: "removed") }
}

struct Cluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A local cluster on this machine, and the cluster's status.",
        subcommands: [ClusterUp.self, ClusterDown.self, ClusterStatus.self, ClusterStartNode.self, ClusterLink.self, ClusterSupervise.self])
}

/// The sibling binary `name` of this executable (ssid beside ssi).
func sibling(_ name: String) -> String {
    let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    let p = me.deletingLastPathComponent().appendingPathComponent(name).path
    if FileManager.default.isExecutableFile(atPath: p) { return p }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent(name).path
}

struct ClusterUp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up", abstract: "Start a local cluster: etcd and N daemons, each in its own network namespace (root) or on a loopback address.",
        discussion: """
        Returns once every node is online, and prints each node's address, control socket and \
        dashboard. SSI_CLUSTER_NAME names an instance, so that several can run on one machine.

        Examples:
          ssi cluster up --nodes 3
          SSI_CLUSTER_NAME=mine ssi cluster up --loopback
        """)
    @Option(help: "Number of nodes.") var nodes = 3
    @Flag(help: "Loopback addresses instead of network namespaces, even as root.") var loopback = false
    @Option(help: "Limit each node's processes to this many CPUs (cgroup cpu controller), e.g. 0.5: nodes behave like slower, separate machines.") var cpus: Double?
    @Option(name: .customLong("cluster-ip"), help: "The cluster's one address for the outside world (the hub namespace), e.g. 10.77.1.1: servers of any node answer on it (ssi ports).") var clusterIP: String?
    @Option(name: .customLong("app-links"), help: "How applications with addresses reach each other (network.app-links): routed (through their nodes, the default) or direct (each also has a macvlan link of its own on the nodes' LAN; experimental, docs/streams.md).") var appLinks: String?
    @Flag(help: "Show progress as plain lines even when stderr is not a terminal.") var progress = false
    func run() throws {
        do {
            let lc = LocalCluster()
            let clusterIP = try self.clusterIP.map { try ClusterAddress.parse($0) }
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let shown = OperationProgress("cluster up", mode: OperationProgress.mode(json: false, forced: progress), bytes: { 0 })
            shown.start()
            defer { shown.finish() }
            let plan = try lc.up(nodes: nodes, ssid: sibling("ssid"), ssi: exe, useNetns: loopback ? false : nil, cpus: cpus, clusterIP: clusterIP, appLinks: appLinks)
            shown.finish()
            print("status: up on \(plan.nodes) nodes\(plan.cpus.map { " of \($0) CPU each" } ?? "") (\(plan.netns ? "network namespaces \(lc.nodeNamespace(1))..\(plan.nodes), bridge ssi-br0 in \(lc.hub)" : "loopback addresses"))")
            for k in 1...plan.nodes {
                let how = plan.netns ? "ip netns exec \(lc.nodeNamespace(k)) ..." : "127.0.1.\(k)"
                print("node \(k): \(lc.nodeHost(k, netns: plan.netns)):7100  control \(lc.socket(node: k))  (\(how))")
            }
            for k in 1...plan.nodes {
                let url = "http://127.0.0.1:\(lc.dashboardPort(k))/"
                print("dashboard node \(k): \(url)" + (plan.netns ? "  (ip netns exec \(lc.nodeNamespace(k)) curl -s \(url); in a browser: ssi dashboard forward \(k))" : ""))
            }
            if let ip = plan.clusterIP { print("cluster address: \(ip) (routed by \(lc.hub) to every node; ssi ports lists what answers on it)") }
            print("etcd: \(plan.etcd)\(plan.netns ? " (in netns \(lc.hub))" : "")  logs: \(lc.dir)/*.log")
            print("ssi nodes status --node K asks node K; ssi cluster down removes everything")
        } catch { clusterFail(error) }
    }
}

struct ClusterDown: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop the local cluster and remove its namespaces, processes and files.")
    func run() throws {
        do {
            try LocalCluster().down()
            print("status: down")
        } catch { clusterFail(error) }
    }
}

struct ClusterStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Print 'status: up on N nodes' or 'status: down', then each node's dashboard.",
        discussion: """
        The first line is Kerrighed's. Then one line per node: its state and its dashboard's \
        address (docs/observe.md), with how to reach it in a namespace cluster.

        Examples:
          ssi cluster status
          ssi cluster status --json | jq .dashboard
        """)
    @Flag(help: "Print JSON: status, online, node (the one asked), dashboard (its URL) and nodes.") var json = false
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        guard let status = try? daemon.call(.membership(.status), timeout: 5).status(), status.online > 0 else {
            print(json ? #"{"online":0,"status":"down"}"# : "status: down")
            return
        }
        // The dashboards come from the observe view; a daemon without it still gets its status.
        let nodes = (try? daemon.call(.observe(.cluster), timeout: 10).cluster().nodes) ?? []
        let lines = dashboardLines(nodes)
        if json {
            let asked = lines.first { $0.node == status.node }?.url
            let rows: [[String: Any]] = nodes.map { n in
                let l = lines.first { $0.node == n.id }
                return ["id": Int(n.id), "state": n.state, "address": n.address, "reachable": n.reachable,
                        "dashboard": jsonValue(l?.url), "reach": jsonValue(l?.reach)]
            }
            let out: [String: Any] = ["status": "up", "online": status.online, "node": Int(status.node),
                                      "dashboard": jsonValue(asked), "nodes": rows]
            print(String(decoding: (try? JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self))
            return
        }
        print("status: up on \(status.online) nodes")
        for (n, l) in zip(nodes, lines) {
            print("node \(n.id): \(n.state)\(n.reachable ? "" : " (no answer)")  dashboard \(l.url ?? "none: \(l.why)")")
        }
    }
}

struct ClusterStartNode: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start-node", abstract: "Start node K's daemon of the local cluster again (after it stopped or was killed).")
    @Argument var node: Int
    func run() throws {
        do { try LocalCluster().startNode(node); print("node \(node): started") } catch { clusterFail(error) }
    }
}

struct ClusterLink: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link", abstract: "Partition node K (namespace clusters only).",
        discussion: "down: its link is down, cut from everyone; isolate: it reaches etcd but no other node; up: back to normal.")
    @Argument var node: Int
    @Argument(help: "down, isolate or up") var state: String
    func run() throws {
        guard let s = LocalCluster.LinkState(rawValue: state) else { throw ValidationError("state must be down, isolate or up, not '\(state)'") }
        do { try LocalCluster().setLink(node, s) } catch { clusterFail(error) }
    }
}

struct ClusterSupervise: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "supervise", abstract: "Internal: the local cluster's supervisor.", shouldDisplay: false)
    @Option var dir: String
    func run() throws {
        do { try LocalCluster().supervise() } catch { clusterFail(error) }
    }
}

struct KDDMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kddm", abstract: "Inspect and use KDDM sets and objects.",
        subcommands: [KDDMSets.self, KDDMList.self, KDDMShow.self, KDDMGet.self, KDDMPut.self, KDDMIncr.self, KDDMRemove.self, KDDMCreateSet.self, KDDMDeleteSet.self, KDDMBench.self])
}

struct ObjectArgs: ParsableArguments {
    @Argument(help: "The set's name.") var set: String
    @Argument(help: "The object's 64-bit id.") var id: UInt64
}

struct KDDMSets: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sets", abstract: "List sets: name, owner rule, objects.")
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        let sets = orFail { try daemon.call(.kddm(.sets)).sets() }
        print("SET            RULE       OBJECTS")
        for s in sets {
            print(s.name.padding(toLength: 14, withPad: " ", startingAt: 0) + " " + s.rule.description.padding(toLength: 10, withPad: " ", startingAt: 0) + " \(s.objects)")
        }
    }
}

struct KDDMList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Print every object of a set: id, then value.")
    @Argument(help: "The set's name.") var set: String
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        for o in orFail({ try daemon.call(.kddm(.list(set: set))).objects() }) { print("\(o.id)\t\(o.value)") }
    }
}

struct KDDMShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show an object: value, owner and coherence state.")
    @OptionGroup var obj: ObjectArgs
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        let (s, asker) = orFail { try daemon.call(.kddm(.show(set: obj.set, id: obj.id))).object() }
        let readers = s.readers.map(String.init).joined(separator: ",")
        print("object:    \(obj.set)/\(obj.id)")
        print("owner:     node \(s.owner)")
        print("exists:    \(s.exists ? "yes" : "no")")
        print("value:     \(s.value.map { String(decoding: $0, as: UTF8.self) } ?? "-")")
        print("revision:  \(s.revision)")
        print("readers:   \(readers.isEmpty ? "-" : readers)")
        print("writer:    \(s.writer.map { "node \($0)" } ?? "-")")
        print("waiting:   \(s.waiting)")
        print("node \(asker) copy: \(s.localCopy)")
    }
}

struct KDDMGet: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "Print an object's value (a read copy).")
    @OptionGroup var obj: ObjectArgs
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        guard let v = orFail({ try daemon.call(.kddm(.get(set: obj.set, id: obj.id))).value() }) else {
            clusterFail(SSIError(.notFound, "no object \(obj.set)/\(obj.id)", hint: "ssi kddm put \(obj.set) \(obj.id) VALUE makes it"))
        }
        print(v)
    }
}

struct KDDMPut: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "put", abstract: "Set an object's value (grab, then put).")
    @OptionGroup var obj: ObjectArgs
    @Argument var value: String
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        _ = orFail { try daemon.call(.kddm(.put(set: obj.set, id: obj.id, value: value))) }
    }
}

struct KDDMIncr: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "incr", abstract: "Increment a decimal counter object COUNT times, each by grab and put; prints the last value.")
    @OptionGroup var obj: ObjectArgs
    @Option var count = 1
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        do { print(try daemon.call(.kddm(.increment(set: obj.set, id: obj.id, count: count)), timeout: 600).count()) }
    }
}

struct KDDMRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove an object.")
    @OptionGroup var obj: ObjectArgs
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        _ = orFail { try daemon.call(.kddm(.remove(set: obj.set, id: obj.id))) }
    }
}

struct KDDMCreateSet: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create-set", abstract: "Create a set with an owner rule (hash, fixed:NODE).")
    @Argument var name: String
    @Option var rule = "hash"
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        _ = orFail { try daemon.call(.kddm(.createSet(name: name, rule: try OwnerRule(parsing: rule)))) }
    }
}

struct KDDMDeleteSet: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete-set", abstract: "Delete a set and all its objects, on every node.")
    @Argument var name: String
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        _ = orFail { try daemon.call(.kddm(.deleteSet(name: name))) }
    }
}

struct KDDMBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "KDDM and RPC latency on the local cluster (same as ssi-bench kddm).")
    @Option var from = 1
    @Option var to = 2
    @Option(name: .short) var n = 2000
    /// The benchmark lives in ssi-bench (it starts its own echo server for the raw TCP
    /// baseline): run it.
    func run() throws {
        let argv = [sibling("ssi-bench"), "kddm", "--from", "\(from)", "--to", "\(to)", "-n", "\(n)"]
        let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        execv(argv[0], cargs)
        clusterFail(SSIError.sys("exec \(argv[0])", errno: errno, hint: "build ssi-bench beside ssi (swift build)"))
    }
}
