import ArgumentParser
import Foundation
import SSICheckpoint
import SSIImage
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
        discussion: "Prints 'Running application <pid>'; the application id is the PID of the command, which leads a new session.")

    @Flag(name: .short, help: "Run in the background: return at once.") var background = false
    @Option(name: .short, help: "Write the application id to this file.") var output: String?
    @Flag(help: "Pass file descriptors above 2 on to the application (by default only stdin, stdout and stderr are).") var keepFds = false
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.") var command: [String] = []

    func run() throws {
        var cmd = command
        if cmd.first == "--" { cmd.removeFirst() }
        guard !cmd.isEmpty else { throw ValidationError("give the command to run after --, e.g. ssi run -- ./myapp") }
        do {
            var o = CheckpointEngine.LaunchOptions()
            o.keepFileDescriptors = keepFds
            let pid = try CheckpointEngine().launch(cmd, options: o)
            if let output {
                try "\(pid)\n".write(toFile: output, atomically: true, encoding: .utf8)
            }
            print("Running application \(pid)")
            fflush(nil)
            if background { return }
            throw ExitCode(try Spawn.wait(pid).exitCode)
        } catch let e as SSIError { fail(e) }
    }
}

struct Checkpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Checkpoint an application: freeze it, write a snapshot, let it go on (Kerrighed: checkpoint).",
        discussion: "Snapshots go to $SSI_CHKPT_DIR (default /var/chkpt) as <appid>/v<N>/. Works on any process given by PID.")

    @Flag(name: .shortAndLong, help: "Only freeze the application.") var freeze = false
    @Option(name: .shortAndLong, help: ArgumentHelp("Only unfreeze the application, sending SIG first if given.", valueName: "SIG"))
    var unfreeze: String?
    @Flag(name: [.short, .customLong("ckpt-only")], help: "Dump an application that is already frozen; it stays frozen.") var ckptOnly = false
    @Option(name: .shortAndLong, help: ArgumentHelp("Dump, then send SIG (default TERM).", valueName: "SIG")) var kill: String?
    @Option(name: .shortAndLong, help: "A description stored with the snapshot.") var description: String = ""
    @Flag(name: [.short, .customLong("ignore-unsupported-files")], help: "Restore unsupported fds as closed instead of failing.") var ignoreUnsupported = false
    @Flag(name: .customLong("tcp-established"), help: "Save TCP connections to peers outside the application (restart needs it too).") var tcpEstablished = false
    @Flag(help: "Print the result as JSON.") var json = false
    @Argument(help: "The application id (PID of its root process).") var app: Int32

    /// What a bare --unfreeze becomes: unfreeze without sending a signal.
    static let noSignal = "none"

    static func normalize(_ args: [String]) -> [String] {
        // --kill and --unfreeze take an optional value (--kill=9); bare forms mean the default.
        args.map { a in
            switch a {
            case "--kill", "-k": return "--kill=TERM"
            case "--unfreeze", "-u": return "--unfreeze=" + Checkpoint.noSignal
            default:
                if a.hasPrefix("-u=") { return "--unfreeze=" + a.dropFirst(3) }
                if a == "--unfreeze=" { return "--unfreeze=" + Checkpoint.noSignal }
                if a.hasPrefix("-k=") { return "--kill=" + a.dropFirst(3) }
                return a
            }
        }
    }

    func run() throws {
        let engine = CheckpointEngine()
        do {
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
            var o = CheckpointEngine.CheckpointOptions()
            o.description = description
            o.alreadyFrozen = ckptOnly
            o.ignoreUnsupported = ignoreUnsupported
            o.tcpEstablished = tcpEstablished
            if let kill { o.killSignal = try parseSignal(kill) }
            let r = try engine.checkpoint(app: app, options: o)
            if json {
                let d: [String: Any] = ["identifier": Int(r.app), "version": r.version, "description": r.description, "date": r.date,
                                        "directory": r.directory, "frozenSeconds": r.frozenSeconds, "pageBytes": Int(r.pageBytes)]
                let data = try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print("Identifier: \(r.app)")
                print("Version: \(r.version)")
                print("Description: \(r.description)")
                print("Date: \(r.date)")
            }
        } catch let e as SSIError { fail(e) }
    }
}

struct Restart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restart an application from a snapshot, with the same PID (Kerrighed: restart).",
        discussion: "By default the application is restarted detached, in the background, and running.")

    @Flag(name: .customShort("U"), help: "Leave it frozen; `ssi checkpoint -u APP` starts it.") var frozen = false
    @Flag(name: .short, help: "Give fds that were terminals this terminal.") var terminal = false
    @Flag(name: .short, help: "Foreground: wait for it, forward SIGINT/SIGTERM, return its exit status.") var foreground = false
    @Flag(name: .customLong("tcp-established"), help: "Rebuild TCP connections to peers outside the application (saved with checkpoint --tcp-established).") var tcpEstablished = false
    @Flag(help: "Print the result as JSON.") var json = false
    @Option(name: .customLong("inherit-fd"),
            help: "An fd that was a pipe to a process outside the application becomes this command's fd of the same number (0-2 always do; repeatable).")
    var inheritFD: [Int32] = []
    @Argument(help: "The application id.") var app: Int32
    @Argument(help: "The snapshot version (default: the latest).") var version: Int?

    func validate() throws {
        for fd in inheritFD where { var st = stat(); return fd < 0 || fstat(fd, &st) != 0 }() {
            throw ValidationError("--inherit-fd \(fd): fd \(fd) of this command is not open; open it on what the application should use (e.g. `\(max(fd, 3))> file`)")
        }
    }

    func run() throws {
        do {
            var o = CheckpointEngine.RestartOptions()
            o.leaveFrozen = frozen
            o.useCallerTerminal = terminal
            o.inheritFDs = Set(inheritFD)
            o.tcpEstablished = tcpEstablished
            let r = try CheckpointEngine().restart(app: app, version: version, options: o)
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
    static let configuration = CommandConfiguration(abstract: "List the snapshots of an application (or of all).")
    @Argument(help: "The application id.") var app: Int32?

    func run() throws {
        let store = SnapshotStore()
        for a in app.map({ [$0] }) ?? store.applications() {
            for v in store.versions(a) {
                let dir = store.directory(a, version: v)
                let m = try? JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dir)/manifest.json")))
                print("\(a)\tv\(v)\t\(m?.date ?? "?")\t\(m?.description ?? "(unreadable manifest)")")
            }
        }
    }
}
