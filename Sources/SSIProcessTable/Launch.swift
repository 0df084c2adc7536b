import Foundation
import SSICheckpoint
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// What `ssi run` asks a node to start.
public struct LaunchSpec: Codable, Sendable, Equatable {
    public var command: [String]
    public var environment: [String: String]
    public var directory: String
    /// Target node; nil: the node asked.
    public var node: NodeID?
    /// Send stdout/stderr to a log on the node even when the caller's fds came along.
    public var log: Bool
    public var caps: [String]
    /// `--net`: nil is the node's network.
    public var network: NetworkMode?
    /// The nice value it starts with: the caller's (`nice -n 5 ssi run ...`, as a program
    /// started from the shell gets), not the daemon's; nil (an older client, a job): 0.
    public var nice: Int32?
    public init(command: [String], environment: [String: String], directory: String, node: NodeID?, log: Bool, caps: [String] = [], network: NetworkMode? = nil) {
        (self.command, self.environment, self.directory, self.node, self.log, self.caps) = (command, environment, directory, node, log, caps)
        self.network = network
    }
}

extension NodeApplications {
    /// Starts a cluster application on this node: ssi-init as process 1 of a new PID
    /// namespace (pid_namespaces(7)) with a mount namespace of its own where it mounts the
    /// namespace's /proc (`--proc`), the command as process 2; a child of this daemon (which
    /// reaps it and learns its status), in this node's network namespace or (`--net app`)
    /// one of its own with its address, born in the cgroup
    /// `ssi/app-<id>` (clone3 CLONE_INTO_CGROUP, so no fork escapes the freezer). `stdio`:
    /// the caller's fds 0-2 passed over the control socket; nil: a log on this node.
    public func launch(_ spec: LaunchSpec, stdio: [Int32]?) async throws -> AppRecord {
        defer { stdio?.forEach { close($0) } }
        guard let program = spec.command.first else {
            throw SSIError(.invalidArgument, "ssi run: no command given", hint: "ssi run [--node N] -- CMD ARGS")
        }
        try checkProgram(program, spec)
        guard FileManager.default.isExecutableFile(atPath: initPath) else {
            throw SSIError(.notFound, "node \(me): ssi-init is not at \(initPath)", hint: "install ssi-init beside ssid (swift build builds it)")
        }
        var clock = PhaseClock()
        let id = try await freshID()
        clock.mark("launch: id")
        // Its own network namespace and address (`--net app`), made before the init, which
        // is born in it: nothing of the application ever runs in the node's network.
        var address: String? = nil
        if spec.network == .app {
            guard let net = appNetwork.withLock({ $0 }) else {
                throw SSIError(.unsupported, "node \(me) gives applications no address of their own: network.app-subnet is not set",
                               hint: "set network.app-subnet in ssid's configuration (the local cluster sets it), or run with --net node")
            }
            address = try net.address(for: id)
        }
        let netFD = try attachNetwork(app: id, address: address)
        defer { if let netFD { close(netFD) } }
        var o = SpawnOptions()
        var logNode: NodeID? = nil
        if let stdio, stdio.count == 3, !spec.log {
            (o.standardInput, o.standardOutput, o.standardError) = (.descriptor(stdio[0]), .descriptor(stdio[1]), .descriptor(stdio[2]))
        } else {
            try FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true)
            o = SpawnOptions.logging(to: logPath(id))
            logNode = me
        }
        o.environment = spec.environment
        o.directory = spec.directory
        // setsid(2): the init leads its own session and group, so every session and group id
        // of the application is one of its namespace (the checkpoint saves them as such).
        o.newSession = true
        o.namespaces = [.pid, .mount]
        let freezer = geteuid() == 0 ? CgroupFreezer.find() : nil
        let group = try freezer.map { try $0.openGroup(id) }
        o.cgroup = group
        // The caller's nice value, not the daemon's (which its threads would pass on).
        o.nice = spec.nice ?? 0
        // An application with an address starts once every node routes it (ssi-init
        // --wait-fd): its first packets would otherwise meet nodes that do not know it, and
        // a lost SYN is sent again only a second later.
        var gate: [Int32] = [-1, -1]
        if address != nil {
            let p = try Pipe.create(flags: O_CLOEXEC)
            gate = [p.read, p.write]
            o.passDescriptor = p.read
        }
        defer { for fd in gate where fd >= 0 { close(fd) } }
        let pid: Int32
        do {
            defer { if let group { close(group) } }
            let argv = [initPath, "--proc"] + joinArguments() + (address != nil ? ["--wait-fd", "3"] : []) + ["--"] + spec.command, opts = o
            // clone(2) gives the child the network namespace of the thread that calls it.
            pid = try netFD.map { fd in try Spawn.inNetwork(fd) { try Spawn.start(argv, opts) } } ?? Spawn.start(argv, opts)
        } catch {
            if let freezer { rmdir(freezer.path(id)) }
            throw SSIError(.system, "node \(me): cannot start \(program) as application \(id): \(error)",
                           hint: "cluster applications need root (PID and mount namespaces); see the node's log")
        }
        clock.mark("launch: spawned")
        var r = AppRecord(app: id, node: me, pid: pid, command: spec.command, started: Self.now())
        r.log_node = logNode
        r.caps = spec.caps
        r.address = address
        do { try await table.insert(r) } catch {
            kill(pid, SIGKILL)
            throw error
        }
        clock.mark("launch: inserted")
        watch(app: id, pid: pid)
        if address != nil {
            await appNetwork.withLock({ $0 })?.placed(app: id)
            close(gate[1])
            gate[1] = -1
        }
        return r
    }

    /// A new id whose cgroup `ssi/app-<id>` holds no process: a local cluster brought up
    /// again starts its counter again, and processes of an earlier one may still sit in a
    /// group of the same name (the engine freezes a whole group).
    private func freshID() async throws -> Int32 {
        for _ in 0..<100 {
            let id = try await table.newID()
            guard let f = CgroupFreezer.find(), let procs = try? ProcFS.read("\(f.path(id))/cgroup.procs"),
                  !procs.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return id }
            logger.warning("process table: id \(id) skipped: \(f.path(id)) still holds processes \(procs.split(separator: "\n").joined(separator: ","))")
        }
        throw SSIError(.busy, "node \(me): 100 application ids in a row have a cgroup still holding processes", hint: "look at \(CgroupFreezer.find()?.base ?? "ssi")/app-*")
    }

    /// The command must exist here: ssi-init would only say so in the application's stderr.
    private func checkProgram(_ program: String, _ spec: LaunchSpec) throws {
        if program.contains("/") {
            let path = program.hasPrefix("/") ? program : spec.directory + "/" + program
            guard access(path, X_OK) == 0 else {
                throw SSIError(.notFound, "node \(me): cannot run \(program): \(String(cString: strerror(errno))) (looked at \(path))",
                               hint: "the program must exist at the same path on node \(me)")
            }
            return
        }
        let dirs = (spec.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        guard dirs.contains(where: { access("\($0)/\(program)", X_OK) == 0 }) else {
            throw SSIError(.notFound, "node \(me): cannot run \(program): not found in PATH (\(dirs.joined(separator: ":")))",
                           hint: "give its full path, or install it on node \(me)")
        }
    }

    /// The record's `started` (ISO 8601, UTC; read back by ISO8601DateFormatter).
    static func now() -> String { ISOTime.now() }

    func logPath(_ app: Int32) -> String { "\(logDir)/\(app).log" }

    /// Waits for the application's root on a thread of its own, then records its end: only
    /// if the record still names this node and this root, since a restart elsewhere after
    /// `checkpoint --kill` owns the record by then.
    ///
    /// It must not sit in waitpid(2): while the engine traces the application (a
    /// checkpoint), a waitpid from any thread of ssid reports, and so consumes, the ptrace
    /// stops the engine's thread waits for (wait(2): traced children are reported whether or
    /// not WUNTRACED is given). A pidfd becomes readable once the process has exited
    /// (pidfd_open(2)), and only then is it reaped, with WNOHANG.
    func watch(app: Int32, pid: Int32) {
        local.withLock { $0[app] = pid }
        written.withLock { $0[app] = nil }
        // Its count and resident memory again a moment after it starts (or lands, or comes
        // back), not at the next 2 s refresh: a program just exec'd has not forked or
        // touched its memory yet (`ssi ps` right after `ssi run` said 1 process and 0 KiB).
        Task { [self] in
            try? await Task.sleep(for: .milliseconds(250))
            if local.withLock({ $0[app] }) == pid { await refresh(app, root: pid) }
        }
        let link = appNetwork.withLock({ $0 })?.link(of: app)
        let t = Thread { [self] in
            let pidfd = (try? PidFD.open(ProcessID(pid))) ?? -1
            var st: Int32 = 0
            // Nil when it is not our child (adopted after this daemon restarted): its status
            // went to whoever inherited it.
            var status: Int32? = nil
            while true {
                if pidfd >= 0 {
                    var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
                    if poll(&p, 1, 1000) <= 0 { continue }
                }
                let r = waitpid(pid, &st, WNOHANG)
                if r == pid { status = WaitStatus(raw: st).exitCode; break }
                if r < 0 && errno == ECHILD && (pidfd >= 0 || !ProcFS.exists("/proc/\(pid)")) { break }
                usleep(pidfd >= 0 ? 20_000 : 200_000)
            }
            if pidfd >= 0 { close(pidfd) }
            let exitStatus = status
            if let link { appNetwork.withLock({ $0 })?.ended(app: app, link: link) }
            local.withLock { if $0[app] == pid { $0[app] = nil } }
            Task {
                if let f = CgroupFreezer.find() { rmdir(f.path(app)) }
                // Retried: a write can wait for a node that held a copy of the record and was
                // just cut off (KDDM revokes it after a few seconds); the end must be recorded.
                let me = self.me
                for attempt in 0..<60 {
                    do {
                        _ = try await table.update(app) { r in
                            guard r.node == me, r.pid == pid else { return }
                            r.state = .stopped
                            r.exit_status = exitStatus
                            r.processes = 0
                            r.rss_bytes = 0
                        }
                        break
                    } catch {
                        if attempt == 59 { self.logger.warning("process table: the end of application \(app) could not be recorded: \(error)") }
                        try? await Task.sleep(for: .milliseconds(250))
                    }
                }
            }
        }
        t.start()
    }

    /// After this daemon restarted: the records that still say an application runs here.
    /// An init still alive is adopted (watched, no longer our child: its status is lost);
    /// otherwise the application stopped while no daemon watched it.
    public func reconcile() async {
        guard let all = try? await table.list() else { return }
        for r in all where r.node == me && [.running, .frozen, .migrating].contains(r.state) && local.withLock({ $0[r.app] == nil }) {
            let bytes: [UInt8] = (try? ProcFS.readBytes("/proc/\(r.pid)/cmdline")) ?? []
            let cmd = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            if cmd.hasSuffix("ssi-init") && PIDNamespaceIDs.innermost(r.pid) == 1 {
                logger.info("process table: adopting application \(r.app) (pid \(r.pid)), started by an earlier ssid")
                watch(app: r.app, pid: r.pid)
            } else {
                _ = try? await table.update(r.app) { rec in
                    guard rec.node == self.me, rec.pid == r.pid else { return }
                    (rec.state, rec.processes, rec.rss_bytes) = (.stopped, 0, 0)
                }
            }
        }
    }
}

enum PIDNamespaceIDs {
    /// The last NSpid entry of /proc/PID/status: its id in its innermost PID namespace.
    static func innermost(_ pid: Int32) -> Int32? {
        guard let s = try? ProcFS.read("/proc/\(pid)/status") else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix("NSpid:") {
            return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.flatMap { Int32($0) }
        }
        return nil
    }
}
