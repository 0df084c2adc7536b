import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The three kinds of SysV IPC object (sysvipc(7)).
public enum IPCKind: String, Codable, Sendable, CaseIterable {
    case messageQueue = "msg"
    case semaphoreArray = "sem"
    case sharedMemory = "shm"

    /// What users read in messages.
    public var name: String {
        switch self {
        case .messageQueue: "message queue"
        case .semaphoreArray: "semaphore array"
        case .sharedMemory: "shared memory segment"
        }
    }

    /// The `ssi ipc` option that selects this kind.
    public var option: String {
        switch self {
        case .messageQueue: "-q"
        case .semaphoreArray: "-s"
        case .sharedMemory: "-m"
        }
    }

    /// The number stored in the file header.
    var code: UInt32 {
        switch self {
        case .messageQueue: 1
        case .semaphoreArray: 2
        case .sharedMemory: 3
        }
    }

    init?(code: UInt32) {
        guard let k = IPCKind.allCases.first(where: { $0.code == code }) else { return nil }
        self = k
    }

    /// The sysctl that chooses the id of the next object of this kind (Linux 3.8,
    /// CONFIG_CHECKPOINT_RESTORE; per IPC namespace; writing it needs CAP_CHECKPOINT_RESTORE
    /// or CAP_SYS_ADMIN in the namespace's user namespace).
    var nextIDPath: String { "/proc/sys/kernel/\(rawValue)_next_id" }
    /// The kernel's list of every object of this kind in the caller's IPC namespace,
    /// readable whatever the objects' permissions are.
    var procListPath: String { "/proc/sysvipc/\(rawValue)" }
    var ipcsOption: String { self == .messageQueue ? "-q" : self == .semaphoreArray ? "-s" : "-m" }
}

/// An object's key as ipcs(1) prints it.
func hexKey(_ key: Int32) -> String {
    "0x" + String(format: "%08x", UInt32(bitPattern: key))
}

/// What was saved by `SysVIPC.checkpoint`.
public struct IPCCheckpointResult: Sendable {
    public let info: IPCSnapshotInfo
    public let path: String
    /// Size of the snapshot file.
    public let fileBytes: UInt64
    /// Bytes of content: message texts, 2 per semaphore, or the saved pages.
    public let contentBytes: UInt64
}

/// What `SysVIPC.restore` did.
public struct IPCRestoreResult: Sendable {
    public let info: IPCSnapshotInfo
    /// Parts of the saved state that could not be given back, each a full sentence.
    public let warnings: [String]
}

/// Saving and restoring SysV IPC objects on their own, with their key and identifier
/// (docs/ipc.md). Every call works on the IPC namespace of the calling thread.
///
/// Checkpoint needs read permission on the object (its owner, or root). Restore needs root
/// (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the IPC namespace): it chooses the new
/// object's id by writing /proc/sys/kernel/{msg,sem,shm}_next_id.
public enum SysVIPC {
    /// Saves the object `id` of `kind` to a new file at `path` (created exclusively, mode
    /// 0600, removed if anything fails). Applications that use the object should be frozen
    /// first: a message queue or segment that changes while it is read is retried, then refused.
    @discardableResult
    public static func checkpoint(kind: IPCKind, id: Int32, to path: String) throws -> IPCCheckpointResult {
        guard id >= 0 else { throw SSIError(.invalidArgument, "\(id) is not an IPC identifier", hint: "identifiers are the numbers ipcs(1) prints in its id column") }
        switch kind {
        case .messageQueue: return try MessageQueueCheckpoint.save(id: id, to: path)
        case .semaphoreArray: return try SemaphoreCheckpoint.save(id: id, to: path)
        case .sharedMemory: return try SharedMemoryCheckpoint.save(id: id, to: path)
        }
    }

    /// Recreates the object saved in `path` with the same key, id, mode, owner, group and
    /// content. `kind`, when given, must be the kind of object the file holds. Nothing is
    /// created if the file is not a valid snapshot, or if its key or id is in use.
    @discardableResult
    public static func restore(from path: String, kind: IPCKind? = nil) throws -> IPCRestoreResult {
        let file = try IPCSnapshotReader(path: path, expecting: kind)
        switch file.info.kind {
        case .messageQueue: return try MessageQueueCheckpoint.restore(file)
        case .semaphoreArray: return try SemaphoreCheckpoint.restore(file)
        case .sharedMemory: return try SharedMemoryCheckpoint.restore(file)
        }
    }

    /// Reads and fully verifies a snapshot file (magic, version, size, CRC-32C) without
    /// touching any IPC object.
    public static func inspect(_ path: String, kind: IPCKind? = nil) throws -> IPCSnapshotInfo {
        try IPCSnapshotReader(path: path, expecting: kind).info
    }

    /// The ids of every object of `kind` in the calling thread's IPC namespace
    /// (/proc/sysvipc/KIND is the namespace of the task that opens it).
    public static func ids(_ kind: IPCKind) throws -> [Int32] { try IPCObjectList.read(kind).map(\.id) }

    /// Whether a shared memory segment with this id exists and, if `key` is not nil, has
    /// this key. A segment marked for removal (IPC_RMID while attached) reports key 0
    /// (IPC_PRIVATE). Read from /proc/sysvipc/shm, so permissions do not matter.
    public static func segmentExists(key: Int32?, id: Int32) -> Bool {
        guard let o = (try? IPCObjectList.read(.sharedMemory))?.first(where: { $0.id == id }) else { return false }
        return key == nil || o.key == key
    }

    /// The same for any kind of object.
    public static func objectExists(kind: IPCKind, key: Int32?, id: Int32) -> Bool {
        guard let o = (try? IPCObjectList.read(kind))?.first(where: { $0.id == id }) else { return false }
        return key == nil || o.key == key
    }

    /// For the restart of a process attached to a segment: throws a user-facing error that
    /// names the key and id and says to run `ssi ipc restart` first, if the segment is missing.
    public static func requireSegment(key: Int32, id: Int32, size: UInt64? = nil) throws {
        let list = try IPCObjectList.read(.sharedMemory)
        guard let o = list.first(where: { $0.id == id }) else {
            throw SSIError(.notFound, "shared memory segment id \(id) key \(hexKey(key)) does not exist in this IPC namespace",
                           hint: "restore it first with `ssi ipc restart -m FILE` (FILE saved by `ssi ipc checkpoint -m \(id) FILE`)")
        }
        if o.key != key && o.key != 0 {
            throw SSIError(.busy, "shared memory segment id \(id) now has key \(hexKey(o.key)), not \(hexKey(key))",
                           hint: "another segment took that id; remove it (ipcrm -m \(id)) and run `ssi ipc restart -m FILE`")
        }
        if let size, let s = o.size, s != size {
            throw SSIError(.state, "shared memory segment id \(id) key \(hexKey(key)) is \(s) bytes, not \(size)",
                           hint: "it is not the segment that was saved; remove it (ipcrm -m \(id)) and run `ssi ipc restart -m FILE`")
        }
    }

    /// SEM_UNDO adjustments (semadj) are per process and not observable from user space:
    /// nothing in /proc or in semctl(2) reports them (docs/ipc.md). This is the check the
    /// engine can make instead: whether the array a process used still exists.
    public static func requireSemaphoreArray(key: Int32, id: Int32) throws {
        guard objectExists(kind: .semaphoreArray, key: key, id: id) else {
            throw SSIError(.notFound, "semaphore array id \(id) key \(hexKey(key)) does not exist in this IPC namespace",
                           hint: "restore it first with `ssi ipc restart -s FILE`")
        }
    }
}

/// One line of /proc/sysvipc/{msg,sem,shm}.
struct IPCObjectEntry {
    var key: Int32
    var id: Int32
    var uid: UInt32
    /// Shared memory only: size, resident and swapped bytes.
    var size: UInt64?
    var rss: UInt64?
    var swap: UInt64?
}

enum IPCObjectList {
    /// Parses /proc/sysvipc/KIND: a header line naming the columns, then one object per line.
    static func read(_ kind: IPCKind) throws -> [IPCObjectEntry] {
        // Read to its end (ProcFS): Foundation's String(contentsOfFile:) stops after the
        // first 4 KiB of a /proc file (st_size 0), about 40 objects, and every object after
        // those was taken for one that does not exist.
        guard let text = try? ProcFS.read(kind.procListPath) else {
            throw SSIError(.unsupported, "cannot read \(kind.procListPath)", hint: "mount /proc; the kernel needs CONFIG_SYSVIPC and CONFIG_PROC_FS")
        }
        var lines = text.split(separator: "\n")
        guard !lines.isEmpty else { return [] }
        let header = lines.removeFirst().split(separator: " ").map(String.init)
        func col(_ name: String) -> Int? { header.firstIndex(of: name) }
        guard let ck = col("key"), let ci = col(kind == .messageQueue ? "msqid" : kind == .semaphoreArray ? "semid" : "shmid"), let cu = col("uid") else {
            throw SSIError(.unsupported, "unexpected format of \(kind.procListPath): \(header.joined(separator: " "))")
        }
        let cs = col("size"), cr = col("rss"), cw = col("swap")
        return lines.compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > max(ck, ci, cu), let key = Int64(f[ck]), let id = Int32(f[ci]), let uid = UInt32(f[cu]) else { return nil }
            func u(_ c: Int?) -> UInt64? { c.flatMap { $0 < f.count ? UInt64(f[$0]) : nil } }
            return IPCObjectEntry(key: Int32(truncatingIfNeeded: key), id: id, uid: uid, size: u(cs), rss: u(cr), swap: u(cw))
        }
    }
}
