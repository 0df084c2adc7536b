import ArgumentParser
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi`: the one command-line tool. Thin: it parses, calls a library, prints.
/// Kerrighed's command names are installed as links to it (see scripts/install.sh) and
/// mapped to subcommands here, so that Kerrighed's manuals still read right.
@main
struct SSI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ssi",
        abstract: "SwiftSSI: checkpoint, restart and migrate unmodified Linux applications across a cluster.",
        subcommands: [Run.self, Checkpoint.self, Restart.self, Snapshots.self, IPC.self] + appCommands + clusterCommands + [Sched.self] + jobCommands + observeCommands + networkCommands)

    /// Kerrighed aliases: argv[0] name -> the subcommand words it stands for.
    static let aliases: [String: [String]] = [
        "krgcr-run": ["run"], "checkpoint": ["checkpoint"], "restart": ["restart"],
        "ipccheckpoint": ["ipc", "checkpoint"], "ipcrestart": ["ipc", "restart"], "krgadm": [],
        "krgcapset": ["caps"], "migrate": ["migrate"],
    ]

    static func main() async {
        // A daemon that dies while we write to it must give an error that names it, not kill
        // us silently with SIGPIPE (exit 141): writes then fail with EPIPE (write(2)).
        signal(SIGPIPE, SIG_IGN)
        // A checkpoint or restart run here (not through ssid) allocates the same buffers.
        Heap.keepFreedMemory()
        var args = Array(CommandLine.arguments.dropFirst())
        let invokedAs = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? "ssi"
        if let prefix = aliases[invokedAs] { args = prefix + args }
        if args.first == "checkpoint" { args = Checkpoint.normalize(args) }
        // `run` and `submit` capture the program's arguments: their own --help comes before them.
        if let first = args.first, ["run", "submit"].contains(first), Run.asksForHelp(args) { args = ["help", first] }
        do {
            var command = try parseAsRoot(args)
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
