import Foundation
import SSICheckpoint
import SSIImage
import SSISystem
import SSITransport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What `ssi migrate APP NODE` asks.
public struct MigrateSpec: Codable, Sendable, Equatable {
    public var app: Int32
    public var node: NodeID
    public init(app: Int32, node: NodeID) { (self.app, self.node) = (app, node) }
}

extension ProcessTableService {
    /// Asks the target of a migration to pull a version and restore it (a MigrateIn).
    public static let migrateIn = ServiceBlock.processTable.number(5)
    /// Tells the target of a migration that its source gave it up (a MigrateAbort).
    public static let migrateAbort = ServiceBlock.processTable.number(7)
    /// Asks the source of a migration to give it up (its `ssi migrate` client went away on
    /// another node); the payload is the application id, JSON.
    public static let migrateCancel = ServiceBlock.processTable.number(8)
}

struct MigrateAbort: Codable {
    var app: Int32
    var token: UInt64
}

struct MigrateIn: Codable {
    var app: Int32
    var version: Int
    var from: NodeID
    /// TCP connections to peers outside the application were saved (they follow it).
    var tcpEstablished: Bool? = nil
    /// The application's own address, as its record says (`addressSent`: the source said,
    /// so the target need not read the record while the application is frozen).
    var address: String? = nil
    var addressSent: Bool? = nil
    /// The migration's token, as the record's `migration` says (nil from an older source:
    /// the target then takes the record over without the check).
    var token: UInt64? = nil
    /// The last acknowledgement each peer sent to the frozen copy, by flow
    /// (MigrationPlan.peerAcknowledgements).
    var peerAcks: [String: UInt32]? = nil
    /// MigrationPlan.keepSentTCP.
    var keepSent: Bool? = nil
}

/// Stop-and-copy migration, built on checkpoint and restart anywhere (docs/migration.md,
/// "Stop-and-copy"): the live, pre-copy protocol comes later in SSIMigration.
extension NodeApplications {
    /// Runs on the application's node S. Checks everything first (the application never
    /// stops for a refused migration); then dumps it and leaves every process stopped by a
    /// SIGSTOP queued while they are still seized (the engine's kill signal, so none runs
    /// past the snapshot); T pulls the snapshot and restores it; only once T's copy runs is
    /// S's killed. Any failure before that: S's copy gets SIGCONT and goes on, unchanged.
    public func migrate(_ spec: MigrateSpec) async throws -> AppRecord {
        // In a task of its own: the caller's cancellation (its client went away) must not cut
        // a step short, leaving a record half settled; it gives the migration up through
        // `cancelMigration` instead, at the steps where that is safe.
        try await Task { try await self.migrateHere(spec) }.value
    }

    private func migrateHere(_ spec: MigrateSpec) async throws -> AppRecord {
        let app = spec.app, target = spec.node
        let rec = try await table.record(app)
        guard rec.caps.contains("CAN_MIGRATE") else {
            throw SSIError(.permission, "application \(app) does not have the CAN_MIGRATE capability; nothing was changed",
                           hint: "ssi caps \(app) +CAN_MIGRATE")
        }
        guard target != me else {
            throw SSIError(.invalidArgument, "application \(app) already runs on node \(me); nothing was changed", hint: "give another node")
        }
        guard table.online.contains(target) else {
            throw SSIError(.unreachable, "node \(target) is not online; application \(app) stays on node \(me)", hint: "ssi nodes status shows the online nodes")
        }
        let root = try await localRoot(app)
        // What follows it besides its processes (its connections): refused here, before
        // anything stops, if it cannot.
        let plan = try await planMigration(app: app, root: root, address: rec.address, to: target)
        // One migration at a time: the record's state is set under the grab, so a second one
        // (a user's `ssi migrate` while the scheduler moves it, or the other way round) is
        // refused here instead of dumping the application twice at once.
        let me = self.me
        let token = UInt64.random(in: 1...UInt64.max)
        try await table.update(app) { r in
            guard r.state == .running || r.state == .frozen else {
                throw SSIError(.state, "application \(app) is \(r.state.rawValue) (on node \(r.node)); nothing was changed",
                               hint: r.state == .migrating ? "wait for the migration under way to end (ssi ps), then try again" : "ssi ps shows its state")
            }
            guard r.node == me else {
                throw SSIError(.state, "application \(app) now runs on node \(r.node), not on node \(me); nothing was changed", hint: "ssi ps shows where it runs")
            }
            r.state = .migrating
            r.migration = MigrationMark(token: token, to: target)
        }
        // Where a daemon restarted after dying mid-migration finds what to settle.
        let marker = markMigration(app: app, root: root, token: token, target: target)
        migrationsHere.withLock { $0[app] = ActiveMigration(token: token, target: target) }
        defer {
            unlink(marker)
            migrationsHere.withLock { _ = $0.removeValue(forKey: app) }
        }
        let apps = self
        let givenUp: @Sendable () -> Bool = { apps.migrationsHere.withLock { $0[app]?.cancelled == true } }
        var o = CheckpointEngine.CheckpointOptions()
        o.description = "migration from node \(me) to node \(target)"
        o.applicationID = app
        o.killSignal = .stop
        // Its file locks go to the target with it (taken back below if it stays here).
        o.handOverLocks = true
        o.tcpEstablished = plan.tcpEstablished
        let atFreeze = plan.whenFrozen
        if !atFreeze.isEmpty { o.whenFrozen = { for f in atFreeze { try f() } } }
        let beforeFreeze = plan.beforeFreeze
        // From just before the freeze to the hand-over of what was held for it, this daemon's
        // threads go first (RealtimeBoost): the application and its peers wait for them. Not
        // earlier: while its packets are held, the application still reads what it has
        // (Connections.drain), and boosted threads took the CPUs it needed for that (6 MB
        // of a bulk receiver's queue left unread, and saved, in a profiled run).
        let boost = Mutex<RealtimeBoost?>(nil)
        defer { boost.withLock { $0?.end() } }
        o.beforeFreeze = {
            for f in beforeFreeze { try f() }
            boost.withLock { $0 = RealtimeBoost() }
        }
        // The image becomes a version on the target, numbered after every version the
        // cluster (and this node) holds: the target may never have held one.
        let firstVersion = max(await nextVersion(app) ?? 1, (store.versions(app).last ?? 0) + 1)
        let engine = CheckpointEngine(store: store), rpc = self.rpc, logger = self.logger
        let address = rec.address
        let request: @Sendable (Int) -> MigrateIn = { version in
            var m = MigrateIn(app: app, version: version, from: me, tcpEstablished: plan.tcpEstablished,
                              address: address, addressSent: true, token: token)
            m.peerAcks = plan.peerAcknowledgements?()
            m.keepSent = plan.keepSentTCP
            return m
        }
        // With no file lock to hand over, the engine queues the copy's SIGSTOP before its
        // commit, and the commit carries the request to restore: the target starts as soon
        // as the image is committed there (IncomingSnapshots.restoreOnCommit), while the
        // answer comes back and this node lets its stopped copy go (profiled: the restore
        // starts 1.5-2 ms earlier). The `freeze` test phase is then here, before the commit.
        let early = Mutex<String?>(nil), earlySent = Mutex(false)
        o.beforeCommit = { stopQueued in
            guard stopQueued else { return }
            try MigrationFaults.at("freeze", app: app, node: me, logger: logger)
            if givenUp() { throw Self.givenUpError(app) }
            // Its version is the target's to fill in: the commit there numbers the image.
            let text = String(decoding: try JSONEncoder().encode(request(0)), as: UTF8.self)
            early.withLock { $0 = text }
        }
        let opts = o
        // The image goes to the target's store as it is produced (RemoteImage.swift); a dump
        // that fails leaves nothing there and the application running here (the engine lets
        // it go without the signal), unless its commit carried the request to restore (below).
        var done: CheckpointEngine.CheckpointResult? = nil
        var failure: Error? = nil
        do {
            done = try await Self.onThread {
                let w = try RemoteImageWriter(rpc: rpc, node: target, app: app, firstVersion: firstVersion)
                w.afterFirstData = { try MigrationFaults.at("transfer", app: app, node: me, logger: logger) }
                w.givenUp = givenUp
                w.restoreRequest = { early.withLock { $0 } }
                do { return try engine.checkpoint(app: root, options: opts, to: w) } catch {
                    if w.restoreSent { earlySent.withLock { $0 = true } }
                    throw error
                }
            }
        } catch {
            // The commit left with the request to restore, and its answer did not come (or
            // said it failed): the target may have taken the application over; the copy
            // here is stopped (its SIGSTOP was queued first). The record decides, below.
            guard earlySent.withLock({ $0 }) else {
                // Its SIGSTOP was queued for a commit that never left (a step before it
                // failed, or the migration was given up): nothing was asked of the target,
                // and the copy here, let go by the engine, is stopped. It goes on.
                if early.withLock({ $0 }) != nil { for p in Self.tree(root) { kill(p, SIGCONT) } }
                await settle(app)
                await eachHook { await $0.sourceDidFinish(app: app, committed: false) }
                throw Self.refusal(error, app: app, target: target, me: me)
            }
            failure = error
        }
        var clock = PhaseClock()
        clock.mark("migrate: source dump sent")
        // The locks it let go of, where this daemon finds them if it dies before the end.
        if let locks = done?.locks { try? "\(root) \(token) \(target)\n\(locks.encoded())\n".write(toFile: marker, atomically: true, encoding: .utf8) }
        let stopped = Self.tree(root)
        // The catalog entry of the version the target now holds is written once the move is
        // over, either way: a KDDM write (a grab and a put at the object's owner) while the
        // application is frozen competed with the restore for the RPC loop and the CPUs
        // (profiled: the request to the target left up to a millisecond later); the target
        // needs only its own store to restore.
        let entry = done.map { SnapshotCatalog.Version(version: $0.version, date: $0.date, description: $0.description, size: $0.pageBytes, nodes: [target]) }
        let table = self.table
        do {
            if let failure { throw failure }
            if early.withLock({ $0 }) == nil {
                try await MigrationFaults.atAsync("freeze", app: app, node: me, logger: logger)
                if givenUp() { throw Self.givenUpError(app) }
            }
            // Sent with the commit or not, asked (again) here: the target answers once its copy
            // runs, from the restore the commit started if it did (by the migration's token).
            let req = Array(try JSONEncoder().encode(request(done?.version ?? 0)))
            _ = try await rpc.call(target, service: ProcessTableService.migrateIn, req, timeout: .seconds(600))
            clock.mark("migrate: target restored")
        } catch {
            // The call failed (or the migration was given up), but the target may have taken
            // the record over before: the record decides, never the error. Until it does, the
            // copy here stays stopped. The target, if it can be told, gives up a restore under
            // way instead of taking the record over.
            _ = try? await rpc.call(target, service: ProcessTableService.migrateAbort,
                                    Array(try JSONEncoder().encode(MigrateAbort(app: app, token: token))), timeout: .seconds(2))
            let settled = await settleMigration(app: app, token: token, target: target)
            if settled.map({ $0.node == me }) ?? true {
                done?.tracking?.stop()
                // The locks it let go of for the target, taken back before it runs (ptrace, on
                // a thread of its own: seize, injection and release from one thread).
                let back = await takeLocksBack(done?.locks, app: app)
                for p in stopped { kill(p, SIGCONT) }
                if let entry { try? await table.addSnapshot(app, entry, holder: target) }
                await eachHook { await $0.sourceDidFinish(app: app, committed: false) }
                if !back.isEmpty {
                    throw SSIError(.system, "migration of application \(app) to node \(target) failed: \(error); it goes on on node \(me), \(back)",
                                   hint: "see node \(target)'s log for the failure, and node \(me)'s for the locks")
                }
                throw SSIError(.system, "migration of application \(app) to node \(target) failed: \(error); it goes on on node \(me), unchanged",
                               hint: "see node \(target)'s log")
            }
            logger.warning("process table: migration of application \(app) to node \(target): the call failed (\(error)) after node \(target) had taken it over; its copy here goes")
        }
        // T's copy runs and the record names T: ours goes (SIGKILL to the namespace's init
        // kills every process of the namespace, pid_namespaces(7)).
        await eachHook { await $0.sourceWillKill(app: app, root: root) }
        boost.withLock { $0?.end() }
        // Seized first (its robust mutex lists forgotten): ptrace on one thread of its own.
        try? await Self.onThread { MigrationSourceCopy.kill(root: root) }
        // Its write tracking goes after it (its pages are being freed: nothing left to walk).
        done?.tracking?.stop()
        await eachHook { await $0.sourceDidFinish(app: app, committed: true) }
        if let entry { try? await table.addSnapshot(app, entry, holder: target) }
        return try await table.record(app)
    }

    /// The error of a migration whose dump failed before the application stopped. What the
    /// engine cannot save (an fd of a kind it does not support, a TCP connection to a peer
    /// outside the cluster's applications) is said as a refusal, with advice of its own: the
    /// engine's (`-i`, `--tcp-established`) is `ssi checkpoint`'s, not `ssi migrate`'s.
    static func refusal(_ error: Error, app: Int32, target: NodeID, me: NodeID) -> SSIError {
        guard let e = error as? SSIError else {
            return SSIError(.system, "migration of application \(app) to node \(target) failed before it stopped: \(error); it goes on on node \(me)", hint: "see node \(target)'s log")
        }
        guard e.kind == .unsupported else {
            return SSIError(e.kind, "migration of application \(app) to node \(target) failed before it stopped: \(e.message); it goes on on node \(me)", hint: e.hint ?? "see node \(target)'s log")
        }
        // The engine's closing words say the same as ours, for a checkpoint.
        let ending = "; nothing was written and the application goes on"
        let what = e.message.hasSuffix(ending) ? String(e.message.dropLast(ending.count)) : e.message
        return SSIError(.unsupported, "migration of application \(app) to node \(target) refused: \(what); it goes on on node \(me), untouched",
                        hint: "end that in the application first; or checkpoint it with `ssi checkpoint -i \(app)` (such fds come back closed) and `ssi restart \(app) --node \(target)`")
    }

    /// Settles a migration whose target did not answer: gives it up on the record (`state`,
    /// no migration mark) unless the target has taken the record over already. One write
    /// under the record's grab decides, which the target also needs to take it over (it
    /// holds the grab while it restores), so exactly one of the two happens. Tried again
    /// while KDDM cannot be reached (a node cut off, a grab not yet revoked), `attempts`
    /// times (nil: until it can): until the record says, the copy here stays stopped rather
    /// than run beside the target's. Returns the record as settled; nil when it is gone, or
    /// still unknown after `attempts`.
    func settleMigration(app: Int32, token: UInt64, target: NodeID, state: AppState = .running, attempts: Int? = nil) async -> AppRecord? {
        let me = self.me
        var attempt = 0
        while attempts.map({ attempt < $0 }) ?? true {
            do {
                return try await table.update(app) { r in
                    if r.node == me && (r.migration == nil || r.migration?.token == token) {
                        r.state = state
                        r.migration = nil
                    }
                }
            } catch let e as SSIError where e.kind == .notFound {
                // No record at all (removed meanwhile): nobody took it over.
                return nil
            } catch {
                attempt += 1
                if attempt % 20 == 1 {
                    logger.warning("process table: migration of application \(app) to node \(target) not settled yet (\(error)); its copy here stays stopped until the record can be read")
                }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        return nil
    }

    /// A file in this node's snapshot directory naming the application's local root and the
    /// migration's token and target while it is under way: a daemon that died mid-migration
    /// finds there, once restarted, the copy it must let go on or kill (`reconcileMigrations`).
    func markMigration(app: Int32, root: Int32, token: UInt64, target: NodeID) -> String {
        let dir = "\(store.root)/.migrating"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = "\(dir)/\(app)"
        try? "\(root) \(token) \(target)\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// After this daemon restarted: the migrations it was the source of when it died,
    /// settled on the record as `settleMigration` does (for a minute at most: the daemon
    /// must get on with its other applications): an application the target took over has
    /// its copy here killed; any other one is let go on here (its processes may have been
    /// left stopped for the final dump) and adopted by `reconcile`.
    public func reconcileMigrations() async {
        let dir = "\(store.root)/.migrating"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            defer { unlink("\(dir)/\(name)") }
            let lines = ((try? String(contentsOfFile: "\(dir)/\(name)", encoding: .utf8)) ?? "").split(separator: "\n")
            let words = (lines.first ?? "").split(separator: " ")
            guard let app = Int32(name), words.count == 3, let root = Int32(words[0]), let token = UInt64(words[1]),
                  let target = NodeID(words[2]) else { continue }
            // The second line: the file locks the copy let go of for the target.
            let locks = lines.count > 1 ? HandedOverLocks.decoded(root: root, String(lines[1])) : nil
            let cmd = String(decoding: ((try? ProcFS.readBytes("/proc/\(root)/cmdline")) ?? []).prefix { $0 != 0 }, as: UTF8.self)
            let alive = cmd.hasSuffix("ssi-init") && PIDNamespaceIDs.innermost(root) == 1
            guard let record = await settleMigration(app: app, token: token, target: target, state: alive ? .running : .stopped, attempts: 240),
                  alive else { continue }
            if record.node != me {
                logger.warning("process table: application \(app) was taken over by node \(record.node) while this daemon was down: its copy here (pid \(root)) goes")
                try? await Self.onThread { MigrationSourceCopy.kill(root: root) }
                var st: Int32 = 0
                _ = waitpid(root, &st, WNOHANG)
            } else {
                logger.warning("process table: a migration of application \(app) ended with this daemon: it goes on here (pid \(root))")
                _ = await takeLocksBack(locks, app: app)
                for p in Self.tree(root) { kill(p, SIGCONT) }
            }
        }
    }

    /// Takes back, in the stopped source copy of a failed migration, the file locks it let
    /// go of for the target (ptrace on a thread of its own: seize, injection and release from
    /// one thread). Those another process still holds (the copy the target was restoring, not
    /// yet removed) are taken back once it lets them go, the application running meanwhile.
    /// Returns "" when every lock is back, else what the user is told.
    func takeLocksBack(_ locks: HandedOverLocks?, app: Int32) async -> String {
        guard let locks else { return "" }
        guard let r = try? await Self.onThread({ locks.takeBack() }) else { return "" }
        let logger = self.logger
        if !r.failed.isEmpty {
            logger.error("process table: application \(app) goes on without these file locks after its failed migration: \(r.failed.joined(separator: "; "))")
        }
        if let held = r.stillHeld {
            logger.warning("process table: application \(app) goes on; \(held.count) of its file locks are still held by another process (the copy its target was restoring, being removed): taken back as soon as they are free")
            held.keepTakingBack { left in
                if left.isEmpty { logger.notice("process table: application \(app) has every file lock back") }
                else { logger.error("process table: application \(app) could not take these file locks back: \(left.joined(separator: "; "))") }
            }
        }
        var told: [String] = []
        if !r.failed.isEmpty { told.append("but without \(r.failed.count) of its file locks: \(r.failed.joined(separator: "; "))") }
        if let held = r.stillHeld { told.append("\(held.count) of its file locks are taken back once the copy its target was restoring lets them go (node \(me)'s log says when)") }
        return told.joined(separator: "; ")
    }

    /// After a failed migration: the record says the application runs here again. Retried
    /// for a while: a node that held a copy of the record and died with the migration (its
    /// target) holds the write back until KDDM has revoked it (seconds), and `ssi ps` must
    /// not go on saying `migrating`.
    func settle(_ app: Int32) async {
        let me = self.me
        for attempt in 0..<40 {
            do {
                _ = try await table.update(app) { r in if r.node == me { r.state = .running; r.migration = nil } }
                return
            } catch {
                if attempt == 39 { logger.warning("process table: application \(app) runs on node \(me) again, but its record could not say so: \(error)") }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    static func givenUpError(_ app: Int32) -> SSIError {
        SSIError(.state, "migration of application \(app) given up: the ssi migrate that asked for it went away", hint: "ssi migrate again to move it")
    }

    /// Gives up the migration of `app` under way on this node, if any, as long as its target
    /// has not taken it over: its `ssi migrate` client went away (killed, or interrupted).
    /// The dump stops at its next 4 MiB, or the target is told not to take the record over.
    public func cancelMigration(_ app: Int32) async {
        guard let m = migrationsHere.withLock({ (all: inout [Int32: ActiveMigration]) -> ActiveMigration? in
            all[app]?.cancelled = true
            return all[app]
        }) else { return }
        logger.warning("process table: migration of application \(app) to node \(m.target) given up: the ssi migrate that asked for it went away")
        let abort = try? JSONEncoder().encode(MigrateAbort(app: app, token: m.token))
        if let abort { _ = try? await rpc.call(m.target, service: ProcessTableService.migrateAbort, Array(abort), timeout: .seconds(2)) }
    }

    /// Runs on the target when the source gave a migration up (its call failed or its client
    /// went away): a restore under way does not take the record over (the source will not
    /// wait for it) and its processes go. Remembered for a while, in case it came first.
    func migrateAbort(_ a: MigrateAbort) {
        logger.warning("process table: the source of migration \(a.token) gave it up: application \(a.app) is not taken over here")
        abandonedMigrations.withLock { $0.insert(a.token) }
        Task { [self] in
            try? await Task.sleep(for: .seconds(600))
            _ = abandonedMigrations.withLock { $0.remove(a.token) }
        }
    }

    /// Runs on the target when a migration's image is committed here with its request to
    /// restore (`IncomingStep.restore`): the restore starts at once, and the source's own
    /// request, which comes once it has heard of the commit, waits for its outcome. Kept
    /// for a while only: a source that never asks (its daemon died) has it dropped.
    func restoreOnCommit(_ request: String, version: Int) {
        guard var m = try? JSONDecoder().decode(MigrateIn.self, from: Data(request.utf8)), let token = m.token else {
            logger.warning("process table: a snapshot committed here came with a request to restore that does not parse; the source's own request will do")
            return
        }
        m.version = version
        // Given up already (MigrateAbort came first): the source's own request, if any, will
        // find no restore and run one that stops at the same check.
        guard !abandonedMigrations.withLock({ $0.contains(token) }) else { return }
        let numbered = m
        let started = Task { [self] in try await migrateIn(numbered) }
        restoresOnCommit.withLock { $0[token] = started }
        logger.info("process table: application \(numbered.app)'s image from node \(numbered.from) committed here as v\(version): restoring it at once (migration \(token))")
        Task { [self] in
            try? await Task.sleep(for: .seconds(900))
            _ = restoresOnCommit.withLock { $0.removeValue(forKey: token) }
        }
    }

    /// Runs on the target: pull, restore, take the record.
    func migrateIn(_ m: MigrateIn) async throws {
        // The application is frozen at its source until this restore lets it go: this
        // daemon's threads go first meanwhile (RealtimeBoost), and the restore's own thread,
        // made below (a thread created by a boosted one starts as SCHED_OTHER), from its start.
        let boost = RealtimeBoost()
        defer { boost.end() }
        var clock = PhaseClock()
        try await pull(m.app, m.version, from: m.from)
        clock.mark("migrate in: pull")
        try await eachHook { try await $0.targetWillRestore(app: m.app, from: m.from) }
        clock.mark("migrate in: hooks before restore")
        let engine = CheckpointEngine(store: store)
        let app = m.app, v = m.version
        // The source copy, frozen, still holds the application's names until it is killed.
        var o = CheckpointEngine.RestartOptions()
        o.takeOver = true
        // Every file's CRC-32C matched the source's as it arrived (RemoteImage.swift).
        o.checkedOnArrival = true
        // Its pages are copied in after it runs (LazyMemory): the daemon lives on.
        o.lazyMemory = true
        o.tcpEstablished = m.tcpEstablished ?? false
        o.tcpPeerAcks = m.peerAcks ?? [:]
        o.tcpKeepSent = m.keepSent ?? false
        // An application with an address gets its namespace here, address and link, before
        // its processes and sockets are rebuilt inside it.
        let address = m.addressSent == true ? m.address : try await table.record(app).address
        let netFD = try attachNetwork(app: app, address: address, routed: false)
        defer { if let netFD { close(netFD) } }
        o.rootNetwork = netFD
        let route = routeWhenRebuilt(app: app, address: address, namespace: netFD), hooks = migrationHooks.withLock({ $0 }), from = m.from
        // The record's grab, taken while the processes are rebuilt (off the frozen time): the
        // source cannot give the migration up meanwhile, and the record is taken over with
        // one write just before anything runs. That write is the migration's point of no
        // return: before it, the source's copy is the application; after it, this one.
        let me = self.me, table = self.table, logger = self.logger, token = m.token, apps = self
        let holding = Task { try await table.hold(app) }
        let taken = Mutex(false)
        o.beforeResume = { root in
            try route?()
            for h in hooks { h.targetRebuilt(app: app, from: from) }
            try MigrationFaults.at("restore", app: app, node: me, logger: logger)
            var rec = try blockingCall { try await holding.value }
            guard rec.node == from, token.map({ rec.migration?.token == $0 }) ?? (rec.state == .migrating),
                  !(token.map { t in apps.abandonedMigrations.withLock { $0.contains(t) } } ?? false) else {
                throw SSIError(.state, "migration of application \(app) from node \(from) was given up there (its record says \(rec.state.rawValue) on node \(rec.node)); the copy rebuilt on node \(me) goes",
                               hint: "ssi ps shows where it runs")
            }
            // Its root's PID here goes with it, and its processes and memory as they are here
            // (a /proc read of its few processes, 0.1-0.3 ms): the source, answered once this
            // copy runs, then reads a record that says where it runs, as which process, and
            // how big it is (`ssi ps` right after `ssi migrate`, before the first refresh).
            // Pages still to come in (LazyMemory) are not resident yet: the source's figure
            // stands for them until that refresh (`watch`, 250 ms).
            let usage = NodeApplications.usage(root)
            (rec.node, rec.state, rec.exit_status, rec.migration, rec.pid) = (me, .running, nil, nil, root)
            (rec.processes, rec.rss_bytes) = (usage.processes, max(rec.rss_bytes, usage.rss))
            rec.migrations += 1
            let written = rec
            var clock = PhaseClock()
            defer { clock.mark("migrate in: record taken over") }
            do {
                try blockingCall { try await table.put(written) }
            } catch {
                // A write whose answer was lost may have been made: the record says.
                let now = try? blockingCall { try await table.raw(app) }
                guard now?.node == me, now?.migration == nil else { throw error }
            }
            taken.withLock { $0 = true }
        }
        clock.mark("migrate in: network")
        let opts = o
        let r: CheckpointEngine.RestartResult
        do {
            r = try await Self.onThread {
                let mine = RealtimeBoost()
                defer { mine.end() }
                return try engine.restart(app: app, version: v, options: opts)
            }
        } catch {
            if !taken.withLock({ $0 }), (try? await holding.value) != nil { await table.release(app) }
            throw error
        }
        clock.mark("migrate in: restart")
        boost.end()
        joinCPUGroups(root: r.pid)
        // Taken over before it ran, with its pid, processes and memory here (beforeResume):
        // the source is answered at once, so that it kills its copy and hands on what it held
        // for it (packets of its connections) without waiting for another write of the
        // record (2-4 ms of every peer's stall).
        watch(app: app, pid: r.pid)
        await eachHook { await $0.targetDidResume(app: app, root: r.pid, from: m.from) }
        // The image came in without fsync (IncomingSnapshots): on disk now, off the freeze,
        // once its pages are in the processes (LazyMemory). Written back during the fill, its
        // GiB of disk writes made the restored application wait longer for its pages.
        let store = self.store
        Thread.detachNewThread {
            LazyMemory.waitForAll(seconds: 120)
            do { try store.sync(app: app) } catch { logger.warning("process table: snapshot v\(v) of application \(app) not synced: \(error)") }
        }
    }
}
