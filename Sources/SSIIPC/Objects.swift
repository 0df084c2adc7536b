import CSSILinux
import Foundation
import SSISystem

/// Plain SysV IPC calls for tools and tests, typed and throwing: making objects, filling and
/// reading them, removing them. The benchmark builds its objects with these.
public enum IPCObjects {
    /// A private IPC namespace for the calling process (unshare(2) CLONE_NEWIPC; root).
    public static func unshareNamespace() throws {
        let r = cssi_ipc_unshare_namespace()
        if r < 0 { throw SSIError.sys("unshare(CLONE_NEWIPC)", errno: -r, hint: "run it as root") }
    }

    /// A new object of `kind` with `key` (IPC_CREAT|IPC_EXCL, mode 0600). `count` is the
    /// number of semaphores, or the size in bytes of a segment; ignored for a queue.
    public static func create(_ kind: IPCKind, key: Int32, count: UInt64 = 0) throws -> Int32 {
        let flags = Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600)
        let id: Int32
        switch kind {
        case .messageQueue: id = cssi_ipc_msgget(key, flags)
        case .semaphoreArray: id = cssi_ipc_semget(key, Int32(count), flags)
        case .sharedMemory: id = cssi_ipc_shmget(key, count, flags)
        }
        if id < 0 { throw SSIError.sys("create a \(kind.name) with key \(hexKey(key))", errno: -id) }
        return id
    }

    /// IPC_RMID.
    public static func remove(_ kind: IPCKind, id: Int32) throws {
        let r = Reservation.remove(kind: kind, id: id)
        if r < 0 { throw SSIError.sys("remove \(kind.name) id \(id) (IPC_RMID)", errno: -r) }
    }

    /// msgsnd(IPC_NOWAIT) of a message of type `type` with `text`.
    public static func send(queue id: Int32, type: Int, text: UnsafeRawBufferPointer) throws {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + text.count, alignment: 8)
        defer { buf.deallocate() }
        buf.storeBytes(of: type, as: Int.self)
        if let base = text.baseAddress { (buf + 8).copyMemory(from: base, byteCount: text.count) }
        let r = cssi_ipc_msgsnd(id, buf, text.count)
        if r < 0 { throw SSIError.sys("msgsnd to message queue id \(id)", errno: -r) }
    }

    /// The number of messages in a queue (IPC_STAT msg_qnum).
    public static func messageCount(queue id: Int32) throws -> UInt64 { try MessageQueueCheckpoint.stat(id).qnum }

    public static func setValues(semaphores id: Int32, _ values: [UInt16]) throws {
        let r = values.withUnsafeBufferPointer { cssi_ipc_sem_setall(id, $0.baseAddress!) }
        if r < 0 { throw SSIError.sys("semctl SETALL on semaphore array id \(id)", errno: -r) }
    }

    public static func values(semaphores id: Int32, count: Int) throws -> [UInt16] {
        var out = [UInt16](repeating: 0, count: count)
        let r = out.withUnsafeMutableBufferPointer { cssi_ipc_sem_getall(id, $0.baseAddress!) }
        if r < 0 { throw SSIError.sys("semctl GETALL on semaphore array id \(id)", errno: -r) }
        return out
    }

    /// shmat(2); `detach` undoes it.
    public static func attach(segment id: Int32, readOnly: Bool) throws -> UnsafeMutableRawPointer {
        try SharedMemoryCheckpoint.attach(id, readOnly: readOnly, what: "shared memory segment id \(id)")
    }

    public static func detach(_ address: UnsafeMutableRawPointer) { _ = cssi_ipc_shmdt(address) }
}
