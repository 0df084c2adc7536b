import Foundation
import SSISystem
import SSITransport

/// One node as `/api/nodes` and the page show it. `reachable` false: the node is in the view
/// but did not answer within the per-node timeout (its other fields are then empty).
public struct NodeRow: Codable, Sendable, Equatable {
    public var id: NodeID
    /// Its membership state (online, present, failed), as the asking node's view has it.
    public var state: String
    /// Whether it answered the observe RPC in time.
    public var reachable: Bool
    /// Why not, when it did not.
    public var error: String?
    /// Its RPC address (host:port).
    public var address: String
    /// Where its dashboard listens (host:port), if it serves one.
    public var dashboard: String?
    public var pid: Int32?
    public var uptimeSeconds: Double?
    /// /proc/loadavg's first three fields (proc(5)).
    public var load: [Double]?
    /// /proc/meminfo's MemTotal and MemAvailable, in bytes (proc(5): MemAvailable is the
    /// kernel's estimate of what can be allocated without swapping).
    public var memoryTotalBytes: UInt64?
    public var memoryAvailableBytes: UInt64?
    /// Applications this node knows (see `ApplicationRow`).
    public var applications: Int?
    public var checkpoints: Int?
    public var restarts: Int?
    public var events: UInt64?

    public init(id: NodeID, state: String, reachable: Bool, address: String) {
        (self.id, self.state, self.reachable, self.address) = (id, state, reachable, address)
    }
}

/// One application, as `/api/applications` shows it. Until the cluster process table
/// (issue 17) plugs its own source in (`Observer.setApplicationSource`), a node lists the
/// applications it heard of: started by `ssi run`, checkpointed or restarted by `ssi`.
public struct ApplicationRow: Codable, Sendable, Equatable {
    /// The application id: its root's PID.
    public var app: Int32
    public var node: NodeID
    /// running, stopped (SIGSTOP or frozen), zombie, exited: from /proc/PID/stat when the
    /// node can see the process.
    public var state: String
    public var command: String
    /// VmRSS of its root, in bytes.
    public var memoryBytes: UInt64?
    /// The newest snapshot version this node saw made or restored.
    public var lastVersion: Int?
    public var checkpoints: Int
    public var restarts: Int

    public init(app: Int32, node: NodeID, state: String, command: String, memoryBytes: UInt64? = nil,
                lastVersion: Int? = nil, checkpoints: Int = 0, restarts: Int = 0) {
        (self.app, self.node, self.state, self.command, self.memoryBytes) = (app, node, state, command, memoryBytes)
        (self.lastVersion, self.checkpoints, self.restarts) = (lastVersion, checkpoints, restarts)
    }
}

/// The whole cluster as one node sees it: `/api/cluster`.
public struct ClusterView: Codable, Sendable {
    /// The node that answered.
    public var node: NodeID
    public var session: UInt64
    /// Seconds since the epoch when it was gathered.
    public var time: Double
    public var nodes: [NodeRow]
    public var applications: [ApplicationRow]
    public var events: [ObserveEvent]
    public init(node: NodeID, session: UInt64, time: Double, nodes: [NodeRow], applications: [ApplicationRow], events: [ObserveEvent]) {
        (self.node, self.session, self.time) = (node, session, time)
        (self.nodes, self.applications, self.events) = (nodes, applications, events)
    }
}

/// What this machine's kernel says about its load and memory (proc(5)).
public struct HostSample: Sendable, Equatable {
    public var load: [Double]
    public var memoryTotalBytes: UInt64
    public var memoryAvailableBytes: UInt64

    public init(load: [Double], memoryTotalBytes: UInt64, memoryAvailableBytes: UInt64) {
        (self.load, self.memoryTotalBytes, self.memoryAvailableBytes) = (load, memoryTotalBytes, memoryAvailableBytes)
    }

    public static func read() -> HostSample {
        let loadavg = (try? ProcFS.read("/proc/loadavg")) ?? ""
        let meminfo = (try? ProcFS.read("/proc/meminfo")) ?? ""
        return parse(loadavg: loadavg, meminfo: meminfo)
    }

    /// `loadavg` is "0.52 0.58 0.59 1/467 12345"; meminfo lines are "MemTotal:  16314388 kB".
    public static func parse(loadavg: String, meminfo: String) -> HostSample {
        let load = loadavg.split(separator: " ").prefix(3).compactMap { Double($0) }
        var total: UInt64 = 0, avail: UInt64 = 0
        for line in meminfo.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 2, let kb = UInt64(f[1]) else { continue }
            if f[0] == "MemTotal:" { total = kb * 1024 }
            if f[0] == "MemAvailable:" { avail = kb * 1024 }
        }
        return HostSample(load: load.count == 3 ? load : [0, 0, 0], memoryTotalBytes: total, memoryAvailableBytes: avail)
    }
}

/// What /proc says about one application's root process now.
struct ProcessLook {
    var state: String
    var command: String?
    var rssBytes: UInt64?

    static func look(_ pid: Int32) -> ProcessLook {
        guard let stat = try? ProcFS.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
            return ProcessLook(state: "exited")
        }
        // stat(5): the state letter follows the command name's closing parenthesis.
        let letter = stat[stat.index(close, offsetBy: 2)...].first ?? "?"
        let state: String
        switch letter {
        case "R", "S", "D", "I": state = "running"
        case "T", "t": state = "stopped"
        case "Z": state = "zombie"
        default: state = "exited"
        }
        let argv = (try? ProcFS.readBytes("/proc/\(pid)/cmdline")) ?? []
        let command = argv.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
        // VmRSS is in kB (proc(5)); a kernel thread or zombie has none.
        let rss = (try? ProcStatus.read(pid: pid))?.ints("VmRSS").first.map { UInt64($0) * 1024 }
        return ProcessLook(state: state, command: command.isEmpty ? nil : command, rssBytes: rss)
    }
}
