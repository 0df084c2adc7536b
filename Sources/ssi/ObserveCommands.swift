import ArgumentParser
import Foundation
import SSIControl
import SSILocalCluster
import SSIObserve
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The operators' view from the command line (docs/observe.md): `ssi events`, `ssi dashboard`,
// and the reports `ssi run`, `checkpoint` and `restart` send to the local daemon.
let observeCommands: [ParsableCommand.Type] = [Events.self, Dashboard.self]

/// Tells the local daemon, if one runs, about something this command did, so that its events
/// and metrics see it. Best effort: one second at most, and a daemon that is not there or does
/// not answer changes nothing for the command.
enum DaemonReport {
    static func send(_ e: ObserveEvent) {
        for path in sockets() {
            guard let c = try? ControlConnection(socket: path) else { continue }
            _ = try? c.send(.observe(.record(e)), timeout: 1)
            return
        }
    }

    /// $SSI_CONTROL, else this machine's daemon, else the nodes of the local cluster in order.
    static func sockets() -> [String] {
        if let env = ProcessInfo.processInfo.environment["SSI_CONTROL"] { return [env] }
        var out = ["/run/ssid.sock"]
        let lc = LocalCluster()
        if let plan = lc.plan() { out += (1...max(1, plan.nodes)).map { lc.socket(node: $0) } }
        return out
    }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the cluster's recent events, merged from every node by time.",
        discussion: """
        Each node keeps its last 1000 events: nodes joining, leaving or failing, applications \
        started, checkpoints and restarts done or failed (with application, version, duration \
        and bytes), operators' notes and errors. A node that does not answer is left out after \
        1.5 s; the others are still shown.

        Examples:
          ssi events                 the last 50 events, oldest first
          ssi events --follow        then new ones as they happen (Ctrl-C stops)
          ssi events --json -n 500   as JSON, one array
        """)
    @Option(name: [.short, .customLong("limit")], help: "How many of the newest events (1-1000).") var n = 50
    @Flag(name: .shortAndLong, help: "Keep printing new events as they happen.") var follow = false
    @Flag(help: "Print JSON: one array, or one object per line with --follow.") var json = false
    @OptionGroup var daemon: DaemonOptions

    func validate() throws {
        guard (1...1000).contains(n) else { throw ValidationError("--limit must be 1..1000, not \(n)") }
    }

    func run() throws {
        do {
            var seen = Set<String>()
            let first = try daemon.call(.observe(.events(limit: n)), timeout: 10).events()
            if json && !follow {
                print(String(decoding: try Self.encoder.encode(first), as: UTF8.self))
                return
            }
            show(first, &seen)
            while follow {
                fflush(nil)
                sleep(1)
                show(try daemon.call(.observe(.events(limit: 1000)), timeout: 10).events(), &seen)
            }
        } catch { fail(error) }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    private func show(_ events: [ObserveEvent], _ seen: inout Set<String>) {
        for e in events where seen.insert("\(e.node)/\(e.seq)").inserted {
            if json {
                print((try? String(decoding: Self.encoder.encode(e), as: UTF8.self)) ?? "{}")
            } else {
                print(e.line)
            }
        }
    }
}

struct Dashboard: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print where each node's dashboard and /metrics are, and how to reach them.",
        discussion: """
        Every ssid serves a page (/), a JSON API (/api/cluster, /api/nodes, /api/applications, \
        /api/events) and Prometheus metrics (/metrics) on its `dashboard = HOST:PORT` \
        (default 127.0.0.1:7180). GETs are open to loopback peers; a change (POST) needs \
        `Authorization: Bearer TOKEN`, TOKEN from `ssi dashboard token`. In a local cluster as \
        root, node K listens on 127.0.0.1:718K inside its network namespace: the lines printed \
        say how to reach it from this machine.

        Examples:
          ssi dashboard
          ssi dashboard token
          curl -H "Authorization: Bearer $(ssi dashboard token)" -d '{"message":"maintenance"}' URL/api/events
        """,
        subcommands: [DashboardShow.self, DashboardToken_.self, DashboardForward.self], defaultSubcommand: DashboardShow.self)
}

struct DashboardShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Print each node's dashboard address and how to reach it (the default).")
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        do {
            let view = try daemon.call(.observe(.cluster), timeout: 10).cluster()
            let rows = dashboardLines(view.nodes)
            if json {
                let out = rows.map { ["node": Int($0.node), "url": $0.url as Any, "reach": $0.reach as Any] }
                print(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
                return
            }
            for r in rows {
                guard let url = r.url else { print("node \(r.node): no dashboard (\(r.why))"); continue }
                print("node \(r.node): \(url)")
                if let reach = r.reach { print("  \(reach)") }
            }
            print("token for POSTs: ssi dashboard token")
        } catch { fail(error) }
    }
}

/// Each node's dashboard URL and, in a namespace cluster, the command that reaches it.
func dashboardLines(_ nodes: [NodeRow]) -> [(node: UInt8, url: String?, reach: String?, why: String)] {
    let lc = LocalCluster()
    let netns = lc.plan()?.netns ?? false
    return nodes.map { n in
        guard let d = n.dashboard else {
            return (n.id, nil, nil, n.reachable ? "dashboard = off, or its port was taken: ssi events says" : "the node does not answer")
        }
        let url = "http://\(d)/"
        let reach = netns ? "ip netns exec \(lc.nodeNamespace(Int(n.id))) curl -s \(url)api/nodes   (or a browser: ssi dashboard forward \(n.id))" : nil
        return (n.id, url, reach, "")
    }
}

// Named with a trailing underscore: `DashboardToken` is SSIObserve's.
struct DashboardToken_: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Print the bearer token every node's dashboard accepts for changes (from the cluster secret).")
    @Option(help: "The cluster secret file (default: the local cluster's, else /etc/ssi/secret).") var secret: String?

    func run() throws {
        let lc = LocalCluster()
        let path = secret ?? (lc.plan() != nil ? "\(lc.dir)/secret" : "/etc/ssi/secret")
        guard let d = FileManager.default.contents(atPath: path) else {
            fail(SSIError(.notFound, "cannot read the cluster secret \(path)",
                          hint: FileManager.default.fileExists(atPath: path) ? "run as root: it is readable by root only" : "give --secret PATH, the file named by secret = in ssid's configuration"))
        }
        guard d.count >= 16 else { fail(SSIError(.invalidArgument, "the cluster secret \(path) is shorter than 16 bytes", hint: "it is not a cluster secret; see docs/cluster.md")) }
        print(SSIObserve.DashboardToken.derive(secret: Array(d)))
    }
}
