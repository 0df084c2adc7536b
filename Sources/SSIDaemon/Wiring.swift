import Foundation
import SSIKDDM
import SSIObserve
import SSIProcessTable
import SSIScheduler
import SSISystem
import SSITransport
import Synchronization

/// The few places where one subsystem uses another, in one file: the scheduler reads the
/// process table's applications and migrates through it; jobs launch through it.
/// Subsystems do not know each other; the daemon connects them once they are all made.
extension NodeDaemon {
    static func connect(_ parts: [any Subsystem]) {
        guard let table = parts.lazy.compactMap({ $0 as? ProcessTableSubsystem }).first else { return }
        let (me, apps) = (table.core.config.node, table.apps)
        // Each node reports the records naming it, and the lowest online node also those of
        // nodes not online (lost), so the cluster view lists every application once.
        table.core.observe.setApplicationSource {
            guard let all = try? await apps.table.list() else { return [] }
            let online = apps.table.onlineNodes
            let reportsLost = online.min() == me
            let catalogs = (try? await apps.table.catalogs()) ?? []
            let versions = Dictionary(catalogs.map { ($0.app, $0.versions.last?.version) }, uniquingKeysWith: { a, _ in a })
            return all.filter { $0.node == me || (reportsLost && !online.contains($0.node)) }.map { r in
                var row = ApplicationRow(record: r)
                row.lastVersion = versions[r.app] ?? nil
                return row
            }
        }
        let records = apps.table
        if let net = parts.lazy.compactMap({ $0 as? NetworkSubsystem }).first {
            // The port table scans this node's running applications; a claim lasts as long
            // as its application has not stopped.
            // The processes that are here, not the records: a migration's source copy keeps
            // publishing its ports until it is killed, so that the port is never without a
            // server while the target's copy starts (its record wins once it publishes).
            net.localApps.set {
                let here = apps.localApplications
                let nodes = Dictionary(((try? await records.list()) ?? []).map { ($0.app, $0.node) }, uniquingKeysWith: { a, _ in a })
                return here.map { app, root in (app, root, nodes[app].map { $0 != me } ?? false) }
            }
            net.appAlive.set { app in ((try? await records.record(app)).map { $0.state != .stopped }) ?? false }
            net.appAddresses.set {
                ((try? await records.list()) ?? []).compactMap { r in
                    r.state == .stopped ? nil : r.address.map { ($0, r.node) }
                }
            }
            net.appAddress.set { app in (try? await records.record(app))?.address }
            net.appPlaces.set { ((try? await records.list()) ?? []).map { ($0.app, $0.node) } }
            if let side = net.apps { apps.appNetwork.withLock { $0 = side } }
            // Connections through the cluster address follow their server when it moves,
            // and those of an application's own address follow it.
            apps.migrationHooks.withLock { $0.append(NetworkMigrationHooks(net: net)) }
        }
        let sched = parts.lazy.compactMap({ $0 as? SchedulerSubsystem }).first
        if let jobs = parts.lazy.compactMap({ $0 as? JobsSubsystem }).first {
            jobs.hooks.withLock { h in
                h.launch = { spec in try await table.answer(.launch(spec), fds: []).application() }
                h.application = { app in try await records.record(app) }
                h.place = { await sched?.engine.place().flatMap { d in if case .place(let n) = d.action { return n } else { return nil } } }
            }
        }
        if let sched {
            table.cpuUse.set { await sched.engine.applicationCPU() }
            let sampler = AppCPUSampler(me: table.core.config.node)
            let apps = table.apps
            Task {
                await sched.engine.connect(applications: {
                    let records = (try? await apps.table.list()) ?? []
                    return sampler.views(records)
                }, migrator: { app, to in
                    _ = try await apps.migrate(MigrateSpec(app: Int32(app), node: NodeID(to)))
                })
            }
        }
    }
}

extension ApplicationRow {
    /// A process table record as the dashboard lists it.
    init(record r: AppRecord) {
        self.init(app: r.app, node: r.node, state: r.state.rawValue, command: r.command.joined(separator: " "),
                  memoryBytes: r.rss_bytes)
        migrations = r.migrations
    }
}

/// Where `ssi ps` finds each application's CPU use: every online node's published view, as
/// this node's scheduler last read it (at most a second old).
final class CPUUse: Sendable {
    private let source = ClosureCell<(@Sendable () async -> [Int32: Double])?>(nil)
    func set(_ f: @escaping @Sendable () async -> [Int32: Double]) { source.set(f) }
    func now() async -> [Int32: Double] {
        guard let f = source.value else { return [:] }
        return await f()
    }
}

/// What the scheduler knows of this node's applications: CPU used since the last look (the
/// utime + stime of every process under the application's init, proc(5)), memory, since
/// when it has been here, and its CAN_MIGRATE capability.
final class AppCPUSampler: Sendable {
    let me: NodeID
    private struct Seen { var since: Date; var ticks: UInt64; var at: Date; var cpu: Double }
    private let seen = Mutex<[Int32: Seen]>([:])
    private let hz = Double(max(1, sysconf(Int32(_SC_CLK_TCK))))

    init(me: NodeID) { self.me = me }

    func views(_ records: [AppRecord]) -> [AppView] {
        let now = Date()
        let mine = records.filter { $0.node == me && $0.state == .running }
        let iso = ISO8601DateFormatter()   // AppRecord.started's form (Launch.swift)
        return seen.withLock { seen in
            seen = seen.filter { k, _ in mine.contains { $0.app == k } }
            return mine.map { r in
                let (ticks, runnable) = Self.cpuTicks(under: r.pid)
                var s = seen[r.app] ?? Seen(since: now, ticks: ticks, at: now, cpu: 0)
                let dt = now.timeIntervalSince(s.at)
                if dt >= 0.5 {
                    // Fewer ticks than last time: processes went with theirs before a parent
                    // waited for them (cutime counts only children waited for), or the
                    // application was restored (its counts start again at 0). That interval
                    // is not known, not a wrap-around to 10^17 %.
                    s.cpu = ticks >= s.ticks ? Double(ticks - s.ticks) / hz / dt : s.cpu
                    s.ticks = ticks
                    s.at = now
                }
                seen[r.app] = s
                // Demand, not only use: on a busy node each runnable thread wants a CPU it
                // does not get, and moving it elsewhere gives it one.
                var v = AppView(app: Int(r.app), node: Int(r.node), cpu: max(0, s.cpu, Double(runnable)), rssBytes: r.rss_bytes,
                                arrived: s.since, canMigrate: r.caps.contains("CAN_MIGRATE"))
                (v.started, v.used) = (iso.date(from: r.started), max(0, s.cpu))
                return v
            }
        }
    }

    /// utime + stime + cutime + cstime (proc(5) fields 14 to 17) of `pid` and all its
    /// descendants, found through /proc/PID/task/TID/children, and how many of them are
    /// runnable now. The children's times count the processes that exited and were waited
    /// for (a build's compilers), which leave the tree between two looks.
    static func cpuTicks(under pid: Int32) -> (UInt64, Int) {
        var total: UInt64 = 0
        var runnable = 0
        for p in processTree(pid, limit: 10_000) {
            guard let stat = try? ProcFS.read("/proc/\(p)/stat"), let close = stat.lastIndex(of: ")") else { continue }
            let f = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if f.count > 14 { total += [11, 12, 13, 14].reduce(UInt64(0)) { $0 + (UInt64(f[$1]) ?? 0) } }
            if f.first == "R" { runnable += 1 }
        }
        return (total, runnable)
    }
}
