import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Semaphore arrays: every value, read at once with semctl(2) GETALL and written back with
/// SETALL. Waiters are not saved (they redo their semop); SEM_UNDO adjustments belong to
/// processes and cannot be read from user space (docs/ipc.md).
enum SemaphoreCheckpoint {
    static func stat(_ id: Int32) throws -> cssi_ipc_sem_stat {
        var st = cssi_ipc_sem_stat()
        let r = cssi_ipc_sem_stat(id, &st)
        if r < 0 { throw Reservation.statError(kind: .semaphoreArray, id: id, errno: -r) }
        return st
    }

    static func save(id: Int32, to path: String) throws -> IPCCheckpointResult {
        let st = try stat(id)
        var values = [UInt16](repeating: 0, count: Int(st.nsems))
        let r = values.withUnsafeMutableBufferPointer { cssi_ipc_sem_getall(id, $0.baseAddress!) }
        if r < 0 {
            if r == -EACCES { throw Reservation.statError(kind: .semaphoreArray, id: id, errno: EACCES) }
            throw SSIError.sys("cannot read the values of semaphore array id \(id) (semctl GETALL)", errno: -r)
        }
        var info = IPCSnapshotInfo(kind: .semaphoreArray, perm: st.perm, id: id)
        info.semaphores = .init(values: values)
        let w = try IPCSnapshotWriter(path: path, info: info, payloadLength: 0)
        let size = try w.finish()
        return IPCCheckpointResult(info: info, path: path, fileBytes: size, contentBytes: UInt64(values.count * 2))
    }

    static func restore(_ file: IPCSnapshotReader) throws -> IPCRestoreResult {
        let info = file.info
        let values = info.semaphores!.values
        let id = try Reservation.create(kind: .semaphoreArray, key: info.key, id: info.id) {
            cssi_ipc_semget(info.key, Int32(values.count), Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600))
        }
        do {
            var r = values.withUnsafeBufferPointer { cssi_ipc_sem_setall(id, $0.baseAddress!) }
            if r < 0 { throw SSIError.sys("cannot set the values of \(info.objectDescription) (semctl SETALL)", errno: -r, hint: r == -ERANGE ? "a value is above SEMVMX (32767)" : nil) }
            r = cssi_ipc_sem_set(id, info.uid, info.gid, info.mode)
            if r < 0 { throw SSIError.sys("cannot set owner \(info.uid), group \(info.gid), mode \(String(info.mode, radix: 8)) of \(info.objectDescription)", errno: -r, hint: "run as root") }
        } catch {
            Reservation.remove(kind: .semaphoreArray, id: id)
            throw error
        }
        return IPCRestoreResult(info: info, warnings: [])
    }
}

/// The values of one semaphore array of the calling thread's IPC namespace.
public struct SemaphoreArrayValues: Sendable, Equatable {
    public var id: Int32
    public var key: Int32
    public var values: [UInt16]
}

extension SysVIPC {
    /// Every semaphore array of the calling thread's IPC namespace with its values (semctl
    /// GETALL), by id. An array removed meanwhile, or one that cannot be read, is left out.
    public static func semaphoreArrays() -> [Int32: SemaphoreArrayValues] {
        var out = [Int32: SemaphoreArrayValues]()
        for entry in (try? IPCObjectList.read(.semaphoreArray)) ?? [] {
            guard let st = try? SemaphoreCheckpoint.stat(entry.id), st.nsems > 0 else { continue }
            var values = [UInt16](repeating: 0, count: Int(st.nsems))
            let r = values.withUnsafeMutableBufferPointer { cssi_ipc_sem_getall(entry.id, $0.baseAddress!) }
            if r >= 0 { out[entry.id] = SemaphoreArrayValues(id: entry.id, key: entry.key, values: values) }
        }
        return out
    }

    /// The process that last changed semaphore `num` of array `id` (semctl GETPID), in the
    /// calling thread's PID namespace; nil on error.
    public static func semaphorePID(id: Int32, num: Int) -> Int32? {
        let r = cssi_ipc_sem_getpid(id, Int32(num))
        return r < 0 ? nil : r
    }
}
