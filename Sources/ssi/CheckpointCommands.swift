import ArgumentParser
import Foundation
import SSICheckpoint
import SSIImage
import SSIObserve
import SSIProcessTable
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Parses a signal given as a number or a name (TERM, SIGTERM, 9).
func parseSignal(_ s: String) throws -> Signal {
    guard let sig = Signal(parsing: s) else { throw SSIError(.invalidArgument, "unknown signal '\(s)'", hint: "give a number (9) or a name (TERM, SIGKILL)") }
    return sig
}

func fail(_ error: Error) -> Never {
    FileHandle.standardError.write(Data("ssi: \(error)\n".utf8))
    exit(error is SSIError ? 1 : 2)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a command as a checkpointable application (Kerrighed: krgcr-run).",
        discussion: """
        Prints 'Running application <pid>'; the application id is the PID of the command, which \
        leads a new session and runs in its own cgroup (so it can be frozen as a whole). Without \
        -b, ssi waits for it and exits with its status. Options of ssi go before `--`; everything \
        after it belongs to the command.

        Examples:
          ssi run -- ./server --port 8080       start and wait
          ssi run -b -o app.id -- ./counter     start in the background, id in app.id
        """)

    @Flag(name: .short, help: "Run in the background: return at once.") var background = false
    @Option(name: .short, help: "Write the application id to this file.") var output: String?
    @Flag(help: "Pass file descriptors above 2 on to the application (by default only stdin, stdout and stderr are).") var keepFds = false
    @Option(help: "Start it on this node of the cluster (a cluster application: ids above 10,000,000), or auto: where the scheduler's placement policy says.") var node: String?
    @Flag(help: "Start it here, as a node-local application, even when a daemon runs.") var local = false
    @Flag(help: "Cluster mode: send its stdout and stderr to a log on its node (ssi logs APP).") var log = false
    @Option(name: .customLong("exclusive-port"), help: "Cluster mode: this application alone gets the cluster address's connections to port P (repeatable); refused if another application has P.") var exclusivePorts: [UInt16] = []
    @Option(help: "Cluster mode: app gives it a network namespace and an address of its own in the application network, which it keeps when it moves, with its connections to other applications (docs/streams.md); node (the default) runs it in its node's network.") var net: NetworkMode?
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.") var command: [String] = []

    /// `ssi run --help` (or -h) before the command: the arguments after `--`, or from the
    /// first that is not an option of ours, belong to the program and are never read here.
    static func asksForHelp(_ args: [String]) -> Bool {
        for a in args.dropFirst() {
            if a == "--" || !a.hasPrefix("-") { return false }
            if a == "--help" || a == "-h" { return true }
        }
        return false
    }

    func run() throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        guard !cmd.isEmpty else { throw ValidationError("give the command to run after --, e.g. ssi run -- ./myapp") }
        // The file for the id must be writable before anything starts: an application
        // started whose id cannot be written is one nobody knows of.
        // (Checked, not created: the file appears whole once the id is known, and a script
        // that waits for the application's output and then reads it must not find it empty.)
        if let output {
            let given = (output as NSString).deletingLastPathComponent
            let dir = given.isEmpty ? "." : given
            var st = stat()
            let problem: String?
            if stat(output, &st) == 0 {
                problem = st.st_mode & S_IFMT == S_IFDIR ? "it is a directory" : access(output, W_OK) != 0 ? "it cannot be written" : nil
            } else {
                problem = access(dir, F_OK) != 0 ? "its directory \(dir) does not exist" : access(dir, W_OK) != 0 ? "its directory \(dir) cannot be written" : nil
            }
            if let problem {
                fail(SSIError(.invalidArgument, "cannot write the application's id to \(output) (-o): \(problem); nothing was started",
                              hint: "give a file in a directory that exists and can be written"))
            }
        }
        if !local && (node != nil || log || ClusterApps.daemonReachable()) {
            do {
                let node = try ClusterApps.node(self.node)
                try ExclusivePorts.check(exclusivePorts, node: node)
                let r = try ClusterApps.launch(cmd, node: node, log: log, network: net)
                try ExclusivePorts.claim(exclusivePorts, app: r.app, node: node)
                // The daemon that launched it records the event (ProcessTableSubsystem).
                if let output { try "\(r.app)\n".write(toFile: output, atomically: true, encoding: .utf8) }
                print("Running application \(r.app)")
                fflush(nil)
                if background { return }
                throw ExitCode(try ClusterApps.wait(r.app, node: node))
            } catch let e as SSIError { fail(e) }
        }
        if net != nil {
            fail(SSIError(.invalidArgument, "--net needs a cluster (a daemon): application addresses are the cluster's", hint: "drop --local, or start ssid (ssi cluster up)"))
        }
        if !exclusivePorts.isEmpty {
            fail(SSIError(.invalidArgument, "--exclusive-port needs a cluster (a daemon): ports are claimed in the cluster's port table", hint: "drop --local, or start ssid (ssi cluster up)"))
        }
        do {
            var o = CheckpointEngine.LaunchOptions()
            o.keepFileDescriptors = keepFds
            let pid = try CheckpointEngine().launch(cmd, options: o)
            if let output {
                try "\(pid)\n".write(toFile: output, atomically: true, encoding: .utf8)
            }
            print("Running application \(pid)")
            fflush(nil)
            DaemonReport.send(ObserveEvent(kind: .applicationStarted, app: pid, message: "application \(pid) started: \(cmd.joined(separator: " "))"))
            if background { return }
            throw ExitCode(try Spawn.wait(pid).exitCode)
        } catch let e as SSIError { fail(e) }
    }
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Checkpoint an application: freeze it, write a snapshot, let it go on (Kerrighed: checkpoint).",
        discussion: """
        Snapshots go to $SSI_CHKPT_DIR (default /var/chkpt) as <appid>/v<N>/. Works on any \
        process given by PID. A failed checkpoint leaves the application running and older \
        snapshots intact. On a terminal, a checkpoint that takes more than a second shows its \
        phase, bytes and rate on one line; the local daemon, if one runs, records it (ssi events).

        Examples:
          ssi checkpoint 4242                   freeze, dump, let it go on
          ssi checkpoint -d "before upgrade" 4242
          ssi checkpoint --kill=9 4242          dump, then kill
          ssi checkpoint -f 4242; ssi checkpoint -c 4242; ssi checkpoint -u 4242
          ssi checkpoint 10000001 10000002      both frozen together, then dumped: their
                                                connections agree (ssi restart 10000001 10000002)
        """)

    @Flag(name: .shortAndLong, help: "Only freeze the application.") var freeze = false
    @Option(name: .shortAndLong, help: ArgumentHelp("Only unfreeze the application, sending SIG first if given.", valueName: "SIG"))
    var unfreeze: String?
    @Flag(name: [.short, .customLong("ckpt-only")], help: "Dump an application that is already frozen; it stays frozen.") var ckptOnly = false
    @Option(name: .shortAndLong, help: ArgumentHelp("Dump, then send SIG (default TERM).", valueName: "SIG")) var kill: String?
    @Option(name: .shortAndLong, help: "A description stored with the snapshot.") var description: String = ""
    @Flag(name: [.short, .customLong("ignore-unsupported-files")], help: "Restore unsupported fds as closed instead of failing.") var ignoreUnsupported = false
    @Flag(inversion: .prefixedNo, help: "Copy memory while the application runs, freeze it only for the last round (default: when it holds 64 MiB of anonymous memory or more).")
    var precopy: Bool? = nil
    @Flag(name: .customLong("tcp-established"), help: "Save TCP connections to peers outside the application (restart needs it too).") var tcpEstablished = false
    @Flag(help: "Print the result as JSON.") var json = false
    @Flag(help: "Show progress as plain lines even when stderr is not a terminal (on a terminal it is shown anyway).") var progress = false
    @Option(help: "Cluster application: also keep the snapshot on this many other nodes.") var replicas = 0
    @Option(name: .customLong("node"), help: "Cluster application: ask this node of the local cluster (any node will do).") var askNode: Int?
    @Argument(help: "The application id (PID of its root process); several are frozen together, then dumped.") var apps: [Int32]
    var app: Int32 { apps[0] }

    func validate() throws {
        if apps.isEmpty { throw ValidationError("give the application to checkpoint (its id, or the PID of its root process)") }
        if let a = Checkpoint.ambiguousKill {
            let opt = a.split(separator: " ")
            throw ValidationError("\(a): give the signal with '=' (\(opt[0])=\(opt[1])): a bare \(opt[0]) means \(opt[0].contains("u") ? "no signal" : "TERM"), and \(opt[1]) would be taken as another application to checkpoint")
        }
        // One action at a time: -f only freezes, -u only unfreezes, the others dump.
        let actions = [freeze ? "-f" : nil, unfreeze != nil ? "-u" : nil].compactMap { $0 }
        if actions.count > 1 { throw ValidationError("-f and -u cannot be given together: -f only freezes, -u only unfreezes") }
        if let only = actions.first {
            let dumping = [kill != nil ? "-k" : nil, ckptOnly ? "-c" : nil, !description.isEmpty ? "-d" : nil, json ? "--json" : nil,
                           ignoreUnsupported ? "-i" : nil, replicas > 0 ? "--replicas" : nil].compactMap { $0 }
            if let d = dumping.first {
                throw ValidationError("\(only) \(d): \(only) only \(only == "-f" ? "freezes" : "unfreezes") the application, it writes no snapshot; \(d) is for a checkpoint (drop \(only))")
            }
        }
        if apps.count > 1 && Set(apps.map(ApplicationID.isCluster)).count > 1 {
            throw ValidationError("\(apps.map(String.init).joined(separator: " ")): cluster applications (ids above 10,000,000) and node-local processes cannot be checkpointed together")
        }
    }

    /// What a bare --unfreeze becomes: unfreeze without sending a signal.
    static let noSignal = "none"

    /// A bare -k/--kill followed by a number a signal could be (`-k 9 4242`): that number
    /// would be read as a second application to checkpoint, and killed with TERM. Refused
    /// by validate().
    nonisolated(unsafe) static var ambiguousKill: String? = nil

    static func normalize(_ args: [String]) -> [String] {
        // --kill and --unfreeze take an optional value (--kill=9); bare forms mean the default.
        var out = [String]()
        var i = 0
        while i < args.count {
            let a = args[i]
            let next = i + 1 < args.count ? args[i + 1] : nil
            switch a {
            case "--kill", "-k", "--unfreeze", "-u":
                let kill = a == "--kill" || a == "-k"
                let option = kill ? "--kill=" : "--unfreeze="
                if let next, !next.hasPrefix("-"), next.first?.isLetter == true {
                    // A signal by name (`-k KILL`, `-u SIGCONT`): its value.
                    out.append(option + next)
                    i += 2
                    continue
                }
                if let next, next.hasPrefix("-"), next != "--", next.dropFirst().first.map({ $0.isLetter || $0.isNumber }) == true {
                    // kill(1)'s way (`-k -9`, `-k -KILL`): the argument parser would take
                    // it for an unknown option. A number of a signal or an upper-case
                    // name only: the lower-case letters are this command's own options.
                    let sig = next.dropFirst()
                    if (Int(sig).map { $0 >= 1 && $0 <= 64 } ?? false) || sig.allSatisfy({ $0.isUppercase || $0.isNumber || $0 == "+" || $0 == "-" }) {
                        out.append(option + sig)
                        i += 2
                        continue
                    }
                }
                if let next, let n = Int(next), n >= 1, n <= 64, i + 2 < args.count { ambiguousKill = "\(a) \(next)" }
                out.append(kill ? "--kill=TERM" : "--unfreeze=" + Checkpoint.noSignal)
            default:
                if a.hasPrefix("-u=") { out.append("--unfreeze=" + a.dropFirst(3)) }
                else if a == "--unfreeze=" { out.append("--unfreeze=" + Checkpoint.noSignal) }
                else if a.hasPrefix("-k=") { out.append("--kill=" + a.dropFirst(3)) }
                else { out.append(a) }
            }
            i += 1
        }
        return out
    }

    /// Several node-local processes: every one frozen before the first is dumped, let go
    /// after the last (-f, -u and -c apply to each).
    private func checkpointLocalTogether(_ engine: CheckpointEngine) throws {
        if freeze || unfreeze != nil {
            let sig = try unfreeze.flatMap { $0.isEmpty || $0 == Checkpoint.noSignal ? nil : try parseSignal($0) }
            for a in apps {
                if freeze { try engine.freeze(app: a); print("Application \(a) frozen") } else { try engine.unfreeze(app: a, signal: sig); print("Application \(a) unfrozen") }
            }
            return
        }
        var frozen: [Int32] = []
        defer { if !ckptOnly { for a in frozen { try? engine.unfreeze(app: a, signal: nil) } } }
        if !ckptOnly {
            for a in apps { try engine.freeze(app: a); frozen.append(a) }
        }
        for a in apps { try dump(a, engine, frozen: true) }
    }

    /// Checkpoints node-local application `a` with this command's options (`frozen`: it is
    /// frozen already, -c) and prints the result; the local daemon, if any, records it.
    private func dump(_ a: Int32, _ engine: CheckpointEngine, frozen: Bool) throws {
        var o = CheckpointEngine.CheckpointOptions()
        o.description = description
        o.alreadyFrozen = frozen
        o.ignoreUnsupported = ignoreUnsupported
        o.precopy = precopy
        o.tcpEstablished = tcpEstablished
        if let kill { o.killSignal = try parseSignal(kill) }
        let opts = o
        let r = try Self.reported(a, progress: OperationProgress("checkpoint \(a)", mode: OperationProgress.mode(json: json, forced: progress))) {
            try engine.checkpoint(app: a, options: opts)
        }
        if json {
            let d: [String: Any] = ["identifier": Int(r.app), "version": r.version, "description": r.description, "date": r.date,
                                    "directory": r.directory, "frozenSeconds": r.frozenSeconds, "pageBytes": Int(r.pageBytes),
                                    "precopyRounds": r.precopyRounds.map { Int($0) }]
            let data = try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("Identifier: \(r.app)")
            print("Version: \(r.version)")
            print("Description: \(r.description)")
            print("Date: \(r.date)")
        }
    }

    func run() throws {
        let engine = CheckpointEngine()
        do {
            if ApplicationID.isCluster(app) {
                guard !ignoreUnsupported else {
                    throw SSIError(.unsupported, "-i is not available for cluster application \(app) yet",
                                   hint: "ssi checkpoint \(app) [--kill] [-d TEXT] [--replicas K]")
                }
                if freeze || unfreeze != nil {
                    let sig = try unfreeze.flatMap { $0.isEmpty || $0 == Checkpoint.noSignal ? nil : try parseSignal($0) }
                    for a in apps { try ClusterCR.freeze(app: a, thaw: unfreeze != nil, signal: sig, via: askNode) }
                    return
                }
                // The node that does it records it (ProcessTableSubsystem): no report from here.
                if apps.count > 1 && !ckptOnly {
                    try ClusterCR.checkpoint(together: apps, description: description, kill: try kill.map(parseSignal), replicas: replicas, json: json, via: askNode)
                    return
                }
                for a in apps {
                    try ClusterCR.checkpoint(app: a, description: description, kill: try kill.map(parseSignal), replicas: replicas, frozen: ckptOnly, json: json, via: askNode)
                }
                return
            }
            // Ctrl-C, SIGTERM and SIGHUP stop the checkpoint where it can stop, never between
            // two injected calls (Interrupts.swift): the application goes on as it was.
            _ = try Interrupts.deferred { try checkpointLocal(engine) }
        } catch let e as SSIError { fail(e) }
    }

    private func checkpointLocal(_ engine: CheckpointEngine) throws {
        if apps.count > 1 {
            try checkpointLocalTogether(engine)
            return
        }
        if replicas > 0 {
            throw SSIError(.invalidArgument, "--replicas is for cluster applications (ids above 10,000,000); \(app) is a node-local one",
                           hint: "start it with ssi run --node N to make it a cluster application")
        }
        if freeze {
            try engine.freeze(app: app)
            print("Application \(app) frozen")
            return
        }
        if unfreeze != nil {
            let sig = try unfreeze.flatMap { $0.isEmpty || $0 == Checkpoint.noSignal ? nil : try parseSignal($0) }
            try engine.unfreeze(app: app, signal: sig)
            print("Application \(app) unfrozen")
            return
        }
        try dump(app, engine, frozen: ckptOnly)
    }
}

struct Restart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restart an application from a snapshot, with the same PID (Kerrighed: restart).",
        discussion: """
        By default the application is restarted detached, in the background, and running. Its \
        PID must be free. A failed restart leaves nothing half-built and the snapshot untouched.

        Examples:
          ssi restart 4242                      from the latest snapshot
          ssi restart 4242 2                    from v2
          ssi restart -f -t 4242                in the foreground, with this terminal
          ssi restart 10000001 10000002         from the latest snapshots taken together
                                                (ssi checkpoint 10000001 10000002), or else
                                                each from its latest; one after the other:
                                                connections between snapshots taken together
                                                come back, others are reset
        """)

    @Flag(name: .customShort("U"), help: "Leave it frozen; `ssi checkpoint -u APP` starts it.") var frozen = false
    @Flag(name: .short, help: "Give fds that were terminals this terminal.") var terminal = false
    @Flag(name: .short, help: "Foreground: wait for it, forward SIGINT/SIGTERM, return its exit status.") var foreground = false
    @Flag(name: .customLong("tcp-established"), help: "Rebuild TCP connections to peers outside the application (saved with checkpoint --tcp-established).") var tcpEstablished = false
    @Flag(help: "Print the result as JSON.") var json = false
    @Flag(help: "Show progress as plain lines even when stderr is not a terminal (on a terminal it is shown anyway).") var progress = false
    @Option(name: .customLong("inherit-fd"),
            help: "An fd that was a pipe to a process outside the application becomes this command's fd of the same number (0-2 always do; repeatable).")
    var inheritFD: [Int32] = []
    @Argument(help: ArgumentHelp("The application id, then the snapshot version (default: the latest); or several cluster applications, restarted together from the latest snapshots taken together.",
                                 valueName: "app [version | app...]"))
    var ids: [Int64] = []
    @Option(help: "Cluster application: restart it on this node (default: the node asked).") var node: Int?

    var app: Int32 { Int32(truncatingIfNeeded: ids.first ?? 0) }
    /// A second number that is no cluster application's id is the version.
    var version: Int? { ids.count == 2 && !ApplicationID.isCluster(Int32(truncatingIfNeeded: ids[1])) ? Int(ids[1]) : nil }
    var together: [Int32] { ids.count >= 2 && version == nil ? ids.map { Int32(truncatingIfNeeded: $0) } : [app] }

    func validate() throws {
        guard let first = ids.first else { throw ValidationError("give the application to restart") }
        guard ids.allSatisfy({ $0 > 0 && $0 <= Int64(Int32.max) }) else { throw ValidationError("\(ids.map(String.init).joined(separator: " ")): application ids and versions are positive numbers") }
        if ids.count > 2 || (ids.count == 2 && version == nil) {
            guard together.allSatisfy(ApplicationID.isCluster) else {
                throw ValidationError("only cluster applications (ids above 10,000,000) are restarted together; for \(first) give one application and, optionally, its version")
            }
        }
        for fd in inheritFD where { var st = stat(); return fd < 0 || fstat(fd, &st) != 0 }() {
            throw ValidationError("--inherit-fd \(fd): fd \(fd) of this command is not open; open it on what the application should use (e.g. `\(max(fd, 3))> file`)")
        }
    }

    func run() throws {
        do {
            if ApplicationID.isCluster(app) {
                guard !frozen, !terminal, !foreground else {
                    throw SSIError(.unsupported, "-U, -t and -f are not available for cluster application \(app) yet", hint: "ssi restart \(app) [VERSION] [--node N]")
                }
                if together.count > 1 {
                    // One after the other: each is checked against those restarted before it.
                    let versions = try ClusterCR.versions(together: together, json: json)
                    for a in together { try ClusterCR.restart(app: a, version: versions?[a], node: node, json: json) }
                    return
                }
                try ClusterCR.restart(app: app, version: version, node: node, json: json)
                return
            }
            var o = CheckpointEngine.RestartOptions()
            o.leaveFrozen = frozen
            o.useCallerTerminal = terminal
            o.inheritFDs = Set(inheritFD)
            o.tcpEstablished = tcpEstablished
            let r = try Self.reported(app, version: version, progress: OperationProgress("restart \(app)", mode: OperationProgress.mode(json: json, forced: progress))) {
                try CheckpointEngine().restart(app: app, version: version, options: o)
            }
            if json {
                print("{\"identifier\":\(r.app),\"version\":\(r.version),\"pid\":\(r.pid),\"restoreSeconds\":\(r.restoreSeconds)}")
            } else {
                print("Restarted application \(r.app) from version \(r.version)\(frozen ? " (frozen)" : "")")
            }
            fflush(nil)
            guard foreground else { return }
            try ForegroundWaiter.wait(pid: r.pid)
        } catch let e as SSIError { fail(e) }
    }
}

/// `restart -f`: ssi stays the parent, forwards SIGINT/SIGTERM and exits with the child's status.
enum ForegroundWaiter {
    nonisolated(unsafe) static var child: Int32 = 0  // written once before the handlers are installed

    static func wait(pid: Int32) throws -> Never {
        child = pid
        signal(SIGINT) { s in kill(ForegroundWaiter.child, s) }
        signal(SIGTERM) { s in kill(ForegroundWaiter.child, s) }
        exit(try Spawn.wait(pid).exitCode)
    }
}

struct Snapshots: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the snapshots of an application (or of all), or delete one version.",
        discussion: """
        One line per snapshot: application, version, date, what the version added on disk \
        and the size of the whole snapshot, description. Versions share their unchanged pages \
        (the application's page pool): a later version usually adds a small part of its size. \
        --delete APP V deletes version V; every other version still restores, and the pages \
        only V held are freed. Reads $SSI_CHKPT_DIR (default /var/chkpt).
        """)
    @Flag(name: .long, help: "Delete version VERSION of APP.") var delete = false
    @Argument(help: "The application id.") var app: Int32?
    @Argument(help: "With --delete: the version to delete.") var version: Int?

    func validate() throws {
        if delete && (app == nil || version == nil) { throw ValidationError("--delete needs the application and the version: ssi snapshots --delete APP VERSION") }
        if !delete && version != nil { throw ValidationError("a version is given only with --delete (ssi snapshots --delete APP VERSION)") }
    }

    func run() throws {
        if app.map(ApplicationID.isCluster) ?? ClusterApps.daemonReachable() {
            do { try ClusterCR.snapshots(app: app, delete: delete ? version : nil) } catch { appsFail(error) }
            return
        }
        let store = SnapshotStore()
        if delete, let app, let version {
            do {
                let freed = try store.delete(app: app, version: version)
                print("Deleted version \(version) of application \(app)" + (freed.map { ", \(Snapshots.size($0)) freed" } ?? "; the pages only it held are freed by the next delete (a checkpoint was running)"))
            } catch { fail(error) }
            return
        }
        if let app, store.versions(app).isEmpty {
            fail(SSIError(.notFound, "no snapshot of application \(app) in \(store.appDirectory(app))",
                          hint: "checkpoint it first (ssi checkpoint \(app)), or set SSI_CHKPT_DIR to where its snapshots are"))
        }
        for a in app.map({ [$0] }) ?? store.applications() {
            for v in store.versions(a) {
                guard let i = store.info(app: a, version: v) else { print("\(a)\tv\(v)\t?\t(unreadable manifest)"); continue }
                // One line per snapshot: a description's line breaks and tabs become spaces.
                let text = i.description.map { $0.isNewline || $0 == "\t" ? " " : $0 }
                print("\(a)\tv\(v)\t\(i.date)\t\(Snapshots.added(i.addedBytes, of: i.totalBytes))\t\(String(text))")
            }
        }
    }

    static func size(_ b: UInt64) -> String {
        b >= 10 << 20 ? "\(b >> 20) MiB" : b >= 10 << 10 ? "\(b >> 10) KiB" : "\(b) bytes"
    }

    /// "adds 2 MiB of 256 MiB".
    static func added(_ added: UInt64, of total: UInt64) -> String { "adds \(size(added)) of \(size(total))" }
}
