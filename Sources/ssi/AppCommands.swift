import ArgumentParser
import Foundation
import SSIControl
import SSIScheduler
import SSILocalCluster
import SSIProcessTable
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Cluster applications (docs/migration.md): `ssi run` with a daemon, `ps`, `caps`, `logs`,
// and the cluster forms of `checkpoint`, `restart`, `snapshots`.
let appCommands: [ParsableCommand.Type] = [PS.self, Caps.self, Logs.self, Migrate.self, Kill.self]

func appsFail(_ error: Error) -> Never {
    FileHandle.standardError.write(Data("ssi: \(error)\n".utf8))
    exit(1)
}

enum ClusterApps {
    /// True when a daemon is there to ask: $SSI_CONTROL, a local cluster, or /run/ssid.sock.
    static func daemonReachable() -> Bool {
        (try? connect(node: nil)) != nil
    }

    /// DaemonOptions' choice without its parsed options: $SSI_CONTROL, else node `node` (or
    /// the first that answers) of the local cluster, else /run/ssid.sock.
    static func connect(node: Int?) throws -> ControlConnection {
        if let env = ProcessInfo.processInfo.environment["SSI_CONTROL"] { return try ControlConnection(socket: env) }
        let lc = LocalCluster()
        guard let plan = lc.plan() else { return try ControlConnection(socket: "/run/ssid.sock") }
        if let node {
            guard (1...plan.nodes).contains(node) else {
                throw SSIError(.notFound, "no node \(node) in the local cluster (nodes 1-\(plan.nodes))", hint: "ssi nodes status lists them")
            }
            do { return try ControlConnection(socket: lc.socket(node: node)) } catch let e as SSIError {
                throw SSIError(e.kind, "node \(node): \(e.message)", hint: "is node \(node) up? ssi nodes status; ssi cluster start-node \(node)")
            }
        }
        var last = SSIError(.unreachable, "no node of the local cluster answers", hint: "ssi cluster up starts one")
        for k in 1...plan.nodes {
            do { return try ControlConnection(socket: lc.socket(node: k)) } catch let e as SSIError where e.kind == .unreachable { last = e }
        }
        throw last
    }

    /// `--node N` or `--node auto` (ask the scheduler of this machine's node where: the
    /// active configuration's placement policy, least loaded by default).
    static func node(_ arg: String?) throws -> Int? {
        guard let arg else { return nil }
        if arg == "auto" {
            guard let d = try connect(node: nil).send(.scheduler(.place), timeout: 10).decision(), case .place(let n) = d.action else {
                throw SSIError(.unreachable, "the scheduler knows no online node to place the application on yet", hint: "ssi sched status; give --node N")
            }
            return n
        }
        guard let n = Int(arg), (1...255).contains(n) else {
            throw SSIError(.invalidArgument, "--node is a node number (1..255) or auto, not '\(arg)'")
        }
        return n
    }

    static func call(_ r: AppsRequest, node: Int? = nil, timeout: Int = 60) throws -> ControlReply {
        try connect(node: node).send(.apps(r), timeout: timeout)
    }

    static func call(_ r: AppsRequest, via d: DaemonOptions, timeout: Int = 60) throws -> ControlReply {
        try d.call(.apps(r), timeout: timeout)
    }

    /// `ssi run` in cluster mode. In the local cluster the CLI reaches node N's socket itself
    /// and passes its fds 0-2 (SCM_RIGHTS: the caller and the node are the same machine);
    /// otherwise its own node's daemon forwards the launch and the application logs on N.
    static func launch(_ cmd: [String], node: Int?, log: Bool, network: NetworkMode? = nil) throws -> AppRecord {
        let lc = LocalCluster()
        let local = lc.plan() != nil && ProcessInfo.processInfo.environment["SSI_CONTROL"] == nil
        let env = ProcessInfo.processInfo.environment
        let cwd = FileManager.default.currentDirectoryPath
        var spec = LaunchSpec(command: cmd, environment: env, directory: cwd,
                              node: local ? nil : node.map { UInt8($0) }, log: log, network: network)
        spec.nice = callerNice()
        let conn = try connect(node: local ? node : nil)
        let pass: [Int32] = (local || node == nil) && !log ? [0, 1, 2] : []
        return try conn.send(.apps(.launch(spec)), timeout: 60, passing: pass).application()
    }

    /// Waits for a cluster application to stop; returns its exit status.
    /// The signal ssi run got while it waits (0: none): a handler may only store it.
    nonisolated(unsafe) static var pending: Int32 = 0  // sig_atomic_t-like: one aligned word written by the handler, read by the loop

    /// Waits for a cluster application to stop and returns its exit status; SIGINT and SIGTERM
    /// sent to ssi run are passed on to the application (its init forwards them).
    static func wait(_ app: Int32, node: Int?) throws -> Int32 {
        signal(SIGINT) { ClusterApps.pending = $0 }
        signal(SIGTERM) { ClusterApps.pending = $0 }
        while true {
            if pending != 0 {
                let s = pending
                pending = 0
                _ = try? call(.signal(app: app, signal: s), node: node)
            }
            let r = try call(.show(app: app), node: node).application()
            if r.state == .stopped { return r.exit_status ?? 0 }
            if r.state == .lost { throw SSIError(.state, "application \(app) is lost: node \(r.node) is not online", hint: "ssi restart \(app) --node N brings it back from a snapshot") }
            usleep(200_000)
        }
    }
}

extension NetworkMode: ExpressibleByArgument {}

struct PS: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ps", abstract: "Every application of the cluster, from any node.")
    @Flag(help: "Print JSON: one object per application.") var json = false
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        do {
            let apps = try ClusterApps.call(.list, via: daemon).applications()
            if json {
                return printJSON(apps)
            }
            // The ADDRESS column only when some application has an address of its own.
            let addresses = apps.contains { $0.address != nil }
            print("APP        NODE STATE     PID      PROCS CPU    RSS        " + (addresses ? "ADDRESS         " : "") + "STARTED               COMMAND")
            for a in apps {
                func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
                let rss = a.rss_bytes >= 1 << 20 ? "\(a.rss_bytes >> 20) MiB" : "\(a.rss_bytes >> 10) KiB"
                print(pad("\(a.app)", 10) + " " + pad("\(a.node)", 4) + " " + pad(a.state.rawValue, 9) + " " + pad("\(a.pid)", 8) + " "
                      + pad("\(a.processes)", 5) + " " + pad(a.cpu.map { String(format: "%.0f%%", $0) } ?? "-", 6) + " " + pad(rss, 10) + " " + (addresses ? pad(a.address ?? "-", 15) + " " : "") + pad(a.started, 21) + " " + a.command.joined(separator: " "))
            }
        } catch { appsFail(error) }
    }
}

struct Caps: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "caps", abstract: "Show or change an application's capabilities (Kerrighed: krgcapset).",
                                                    discussion: "e.g. ssi caps 10000001 +CAN_MIGRATE")
    @Argument(help: "The application id.") var app: Int32
    @Argument(parsing: .allUnrecognized, help: "+CAP or -CAP, e.g. +CAN_MIGRATE.") var changes: [String] = []
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        do {
            let r = try ClusterApps.call(changes.isEmpty ? .show(app: app) : .caps(app: app, changes: changes), via: daemon).application()
            print("\(r.app): \(r.caps.isEmpty ? "(none)" : r.caps.joined(separator: " "))")
        } catch { appsFail(error) }
    }
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Move a cluster application to another node (Kerrighed: migrate).",
                                                    discussion: "Its memory is copied while it runs (pre-copy), then it is frozen, its last changes and state sent, restarted on NODE, and its old copy killed only once the new one runs; a failed move leaves it running where it was. Needs the CAN_MIGRATE capability (ssi caps APP +CAN_MIGRATE).")
    @Argument(help: "The application id.") var app: Int32
    @Argument(help: "The target node.") var target: Int
    @Option(name: .customLong("node"), help: "Ask this node of the local cluster (any node will do).") var askNode: Int?
    func run() throws {
        do {
            guard ApplicationID.isCluster(app) else {
                throw SSIError(.invalidArgument, "\(app) is not a cluster application: only those (ids above 10,000,000) can migrate",
                               hint: "start it with ssi run --node N")
            }
            guard (1...255).contains(target) else { throw SSIError(.invalidArgument, "node \(target) is not a node id (1..255)") }
            let t0 = ContinuousClock.now
            let r: AppRecord
            do {
                r = try ClusterApps.call(.migrate(MigrateSpec(app: app, node: UInt8(target))), node: askNode, timeout: 900).application()
            } catch let e as SSIError where [.disconnected, .timeout, .unknownOutcome].contains(e.kind) {
                // The call was lost on the way (a node between us and the application's node
                // failed or was cut off, e.g. just after it rejoined): the migration itself
                // went on or rolled back on its own. Say which, once its record has settled.
                throw settled(after: e)
            }
            print("Migrated application \(r.app) to node \(r.node) (pid \(r.pid)) in \(ContinuousClock.now - t0)")
        } catch { appsFail(error) }
    }

    /// The outcome of a migration whose call was lost: the record, asked again (of any node
    /// that answers) until it is no longer migrating, says where the application runs.
    private func settled(after e: SSIError) -> SSIError {
        let deadline = ContinuousClock.now + .seconds(60)
        var last: AppRecord?
        while ContinuousClock.now < deadline {
            if let r = try? ClusterApps.call(.show(app: app), node: askNode, timeout: 10).application() {
                last = r
                if r.state != .migrating { break }
            }
            usleep(300_000)
        }
        guard let r = last else {
            return SSIError(e.kind, "the migration of application \(app) to node \(target) lost its answer (\(e.message)), and no node answers about it since",
                            hint: "ssi ps shows where it runs once the nodes answer")
        }
        if r.node == UInt8(target) && (r.state == .running || r.state == .frozen) {
            print("Migrated application \(r.app) to node \(r.node) (pid \(r.pid)); its answer was lost on the way (\(e.message))")
            Glibc.exit(0)
        }
        return SSIError(e.kind, "the migration of application \(app) to node \(target) was interrupted (\(e.message)): it \(r.state == .migrating ? "is still migrating, from" : "runs on") node \(r.node) (pid \(r.pid))",
                        hint: "ssi migrate \(app) \(target) again once ssi nodes status shows node \(target) online")
    }
}

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print an application's log (stdout and stderr), from any node.")
    @Flag(name: .shortAndLong, help: "Follow: keep printing until the application stops.") var follow = false
    @Argument(help: "The application id.") var app: Int32
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        do {
            var off: UInt64 = 0
            while true {
                let c = try ClusterApps.call(.logs(app: app, offset: off), via: daemon).log()
                FileHandle.standardOutput.write(Data(c.data.utf8))
                off = c.next
                if !follow || (!c.running && c.data.isEmpty) { return }
                if c.data.isEmpty { usleep(300_000) }
            }
        } catch { appsFail(error) }
    }
}

/// `ssi checkpoint APP` and `ssi restart APP` for a cluster application.
enum ClusterCR {
    @discardableResult
    static func checkpoint(app: Int32, description: String, kill: Signal?, replicas: Int, frozen: Bool = false, json: Bool, via: Int?) throws -> CheckpointDone {
        let spec = CheckpointSpec(app: app, description: description, kill: kill?.rawValue, replicas: replicas, frozen: frozen ? true : nil)
        let r = try ClusterApps.call(.checkpoint(spec), node: via, timeout: 900).checkpointed()
        try report(r, json: json)
        return r
    }

    /// `ssi checkpoint APP1 APP2 ...`: frozen together, then dumped (TogetherPart.swift).
    static func checkpoint(together apps: [Int32], description: String, kill: Signal?, replicas: Int, json: Bool, via: Int?) throws {
        let spec = TogetherSpec(apps: apps, description: description, kill: kill?.rawValue, replicas: replicas)
        for r in try ClusterApps.call(.checkpointTogether(spec), node: via, timeout: 900).checkpointedAll() { try report(r, json: json) }
    }

    /// `ssi checkpoint -f / -u` of a cluster application.
    static func freeze(app: Int32, thaw: Bool, signal: Signal?, via: Int?) throws {
        let r = try ClusterApps.call(thaw ? .unfreeze(app: app, signal: signal?.rawValue) : .freeze(app: app, lockNetwork: false), node: via).application()
        print("Application \(r.app) \(thaw ? "unfrozen" : "frozen") on node \(r.node)")
    }

    private static func report(_ r: CheckpointDone, json: Bool) throws {
        if json {
            let d: [String: Any] = ["identifier": Int(r.app), "version": r.version, "description": r.description, "date": r.date,
                                    "node": Int(r.node), "replicas": r.replicas.map { Int($0) }, "frozenSeconds": r.frozenSeconds]
            print(String(decoding: try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print("Identifier: \(r.app)")
            print("Version: \(r.version)")
            print("Description: \(r.description)")
            print("Date: \(r.date)")
            print("Node: \(r.node)\(r.replicas.isEmpty ? "" : " (replicas on \(r.replicas.map(String.init).joined(separator: ",")))")")
        }
    }

    @discardableResult
    static func restart(app: Int32, version: Int?, node: Int?, json: Bool) throws -> AppRecord {
        let spec = RestartSpec(app: app, version: version, node: node.map { UInt8($0) })
        let r = try ClusterApps.call(.restart(spec), timeout: 900).application()
        if json {
            print("{\"identifier\":\(r.app),\"node\":\(r.node),\"pid\":\(r.pid)}")
        } else {
            print("Restarted application \(r.app) on node \(r.node) (pid \(r.pid))")
        }
        return r
    }

    /// The versions `ssi restart APP1 APP2 ...` takes: those of the latest checkpoint that
    /// froze them all together, so that their connections come back whole even if one was
    /// checkpointed alone since; nil (each its latest) when no checkpoint took them together.
    static func versions(together apps: [Int32], json: Bool) throws -> [Int32: Int]? {
        let catalogs = try ClusterApps.call(.snapshots(app: nil)).catalogs()
        let chosen = SnapshotCatalog.takenTogether(apps, in: catalogs)
        if !json {
            if let chosen {
                print("From the snapshots taken together: \(apps.map { "\($0) v\(chosen[$0] ?? 0)" }.joined(separator: ", "))")
            } else {
                print("No checkpoint took \(apps.map(String.init).joined(separator: " ")) together: each comes back from its latest snapshot, and a connection one end talked past is reset")
            }
        }
        return chosen
    }

    static func snapshots(app: Int32?, delete version: Int? = nil) throws {
        if let app, let version {
            _ = try ClusterApps.call(.deleteSnapshot(app: app, version: version), timeout: 120)
            print("Deleted version \(version) of application \(app)")
            return
        }
        for c in try ClusterApps.call(.snapshots(app: app)).catalogs() {
            for v in c.versions {
                let size = v.added.map { Snapshots.added($0, of: v.size) } ?? "\(v.size) bytes"
                let with = v.together.map { t in
                    "\ttaken together with " + t.members.filter { $0.app != c.app }.map { "\($0.app) v\($0.version)" }.joined(separator: ", ")
                } ?? ""
                print("\(c.app)\tv\(v.version)\t\(v.date)\tnodes \(v.nodes.map(String.init).joined(separator: ","))\t\(size)\t\(v.description)\(with)")
            }
        }
    }
}

struct Kill: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Send a signal to a cluster application, from any node.",
                                                    discussion: "Its init passes TERM, INT, HUP, USR1, USR2, QUIT... on to the command; KILL ends every process of the application. e.g. ssi kill 10000001 --signal KILL")
    @Argument(help: "The application id.") var app: Int32
    @Option(help: "The signal, by name (TERM, KILL, HUP...) or number.") var signal = "TERM"
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        do {
            let sig = try parseSignal(signal)
            let r = try ClusterApps.call(.signal(app: app, signal: sig.rawValue), via: daemon).application()
            print("Sent \(sig) to application \(r.app) on node \(r.node)")
        } catch { appsFail(error) }
    }
}

/// This process's nice value, which `ssi run` and `ssi submit` pass on to what they start;
/// nil if it cannot be read. getpriority(2) returns the nice value itself for PRIO_PROCESS
/// through glibc, and may return -1 as a value: errno alone tells a failure.
func callerNice() -> Int32? {
    errno = 0
    let mine = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    return errno == 0 ? mine : nil
}
