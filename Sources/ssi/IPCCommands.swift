import ArgumentParser

// `ssi ipc`: SysV IPC checkpoint/restart (issue "SysV IPC checkpoint/restart").
struct IPC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipc", abstract: "Save and restore SysV IPC objects with their key and id.",
        subcommands: [])
}
