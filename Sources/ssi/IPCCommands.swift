import ArgumentParser
import Foundation
import SSIIPC
import SSISystem

/// `ssi ipc`: save and restore SysV IPC objects on their own (Kerrighed: ipccheckpoint,
/// ipcrestart). docs/ipc.md.
struct IPC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipc", abstract: "Save and restore SysV IPC objects with their key and id.",
        discussion: "Freeze the applications that use an object before saving it. Restore needs root (it writes /proc/sys/kernel/*_next_id).",
        subcommands: [IPCCheckpoint.self, IPCRestart.self, IPCInfo.self])
}

/// -q / -s / -m, exactly one (checkpoint) or at most one (restart).
struct IPCKindOptions: ParsableArguments {
    @Flag(name: .customShort("q"), help: "A message queue.") var queue = false
    @Flag(name: .customShort("s"), help: "A semaphore array.") var semaphores = false
    @Flag(name: .customShort("m"), help: "A shared memory segment.") var memory = false

    var kind: IPCKind? {
        get throws {
            let chosen = [(queue, IPCKind.messageQueue), (semaphores, .semaphoreArray), (memory, .sharedMemory)].filter(\.0).map(\.1)
            if chosen.count > 1 { throw ValidationError("give only one of -q (message queue), -s (semaphore array), -m (shared memory)") }
            return chosen.first
        }
    }
}

struct IPCCheckpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Save one IPC object to FILE (Kerrighed: ipccheckpoint).",
        discussion: "FILE is created (never overwritten) with mode 0600 and removed if anything fails.")

    @OptionGroup var kindOptions: IPCKindOptions
    @Argument(help: "The object's identifier, as ipcs prints it.") var id: Int32
    @Argument(help: "The snapshot file to create.") var file: String

    func run() throws {
        guard let kind = try kindOptions.kind else {
            throw ValidationError("say which kind of object \(id) is: -q (message queue), -s (semaphore array) or -m (shared memory)")
        }
        do {
            let r = try SysVIPC.checkpoint(kind: kind, id: id, to: file)
            print("Saved: \(r.info.objectDescription)")
            print("Content: \(IPCInfo.content(r.info))")
            print("File: \(file) (\(r.fileBytes) bytes)")
        } catch let e as SSIError { fail(e) }
    }
}

struct IPCRestart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart",
        abstract: "Recreate an IPC object from FILE with the same key, id, mode, owner and content (Kerrighed: ipcrestart).",
        discussion: "Needs root. -q/-s/-m, if given, must match what FILE holds. If the key or id is in use, nothing is changed.")

    @OptionGroup var kindOptions: IPCKindOptions
    @Argument(help: "A file written by `ssi ipc checkpoint`.") var file: String

    func run() throws {
        let kind = try kindOptions.kind
        do {
            let r = try SysVIPC.restore(from: file, kind: kind)
            print("Restored: \(r.info.objectDescription)")
            print("Content: \(IPCInfo.content(r.info))")
            for w in r.warnings { FileHandle.standardError.write(Data("ssi: warning: \(w)\n".utf8)) }
        } catch let e as SSIError { fail(e) }
    }
}

struct IPCInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Verify an IPC snapshot file and print what it holds.")

    @Argument(help: "A file written by `ssi ipc checkpoint`.") var file: String

    static func content(_ i: IPCSnapshotInfo) -> String {
        if let q = i.queue { return "\(q.messages) messages, \(q.bytes) bytes, qbytes \(q.qbytes)" }
        if let s = i.semaphores { return "\(s.values.count) semaphores: \(s.values.prefix(16).map(String.init).joined(separator: " "))\(s.values.count > 16 ? " ..." : "")" }
        if let g = i.segment { return "\(g.size) bytes, \(g.pages) pages saved (\(g.pages * UInt64(g.pageSize)) bytes)\(g.locked ? ", locked" : "")\(g.markedForRemoval ? ", marked for removal" : "")" }
        return ""
    }

    func run() throws {
        do {
            let i = try SysVIPC.inspect(file)
            print("Object: \(i.objectDescription)")
            print("Owner: uid \(i.uid) gid \(i.gid), mode \(String(i.mode, radix: 8)), creator uid \(i.cuid) gid \(i.cgid)")
            print("Content: \(IPCInfo.content(i))")
            print("Date: \(i.date)")
            print("Kernel: \(i.kernel)")
            print("Format: \(i.format) \(i.formatVersion)")
        } catch let e as SSIError { fail(e) }
    }
}
