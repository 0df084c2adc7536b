import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Creates an IPC object with a chosen key and id.
///
/// Linux allocates ids itself; /proc/sys/kernel/{msg,sem,shm}_next_id (Linux 3.8,
/// CONFIG_CHECKPOINT_RESTORE) makes the next creation in the namespace take the written id
/// (ipc/util.c ipc_idr_alloc; the kernel resets it to -1 once used). IPC_CREAT|IPC_EXCL on
/// the key makes the key part atomic; the id is checked after creation, because any process
/// of the namespace may create an object between our write and our get. `ssi` processes
/// serialize with flock(2) on the sysctl file.
enum Reservation {
    /// The id slot index: the low 15 bits (IPCMNI 32768; ipcmni_extend makes it 24 bits,
    /// and ids below 32768 then have the same index either way).
    static func slot(_ id: Int32) -> Int32 { id & 0x7fff }

    /// Throws naming the object that holds `key` or `id`'s slot; changes nothing.
    static func checkFree(kind: IPCKind, key: Int32, id: Int32) throws {
        for o in try IPCObjectList.read(kind) {
            if key != 0 && o.key == key {
                throw SSIError(.busy, "cannot restore \(kind.name) id \(id) key \(hexKey(key)): key \(hexKey(key)) is in use by \(kind.name) id \(o.id) (owner uid \(o.uid))",
                               hint: "remove that object first (ipcrm \(kind.ipcsOption) \(o.id)) if it is a leftover, or restore in another IPC namespace; nothing was changed")
            }
            if o.id == id || slot(o.id) == slot(id) {
                throw SSIError(.busy, "cannot restore \(kind.name) id \(id) key \(hexKey(key)): id \(id) is in use by \(kind.name) id \(o.id) key \(hexKey(o.key)) (owner uid \(o.uid))",
                               hint: "remove that object first (ipcrm \(kind.ipcsOption) \(o.id)) if it is a leftover, or restore in another IPC namespace; nothing was changed")
            }
        }
    }

    /// Runs `create` (which returns the new id or -errno) with `*_next_id` set to `id`.
    /// Returns the new object's id, which is `id`.
    static func create(kind: IPCKind, key: Int32, id: Int32, _ create: () -> Int32) throws -> Int32 {
        try checkFree(kind: kind, key: key, id: id)
        let path = kind.nextIDPath
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == EACCES || e == EPERM {
                throw SSIError(.permission, "restoring a \(kind.name) with its identifier needs root: it writes \(path)",
                               hint: "run `ssi ipc restart` with sudo or as root (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the IPC namespace); checkpoint works for the object's owner without root", errno: e)
            }
            if e == ENOENT {
                throw SSIError(.unsupported, "\(path) does not exist: this kernel cannot create an IPC object with a chosen id",
                               hint: "use a kernel built with CONFIG_CHECKPOINT_RESTORE (Linux 3.8 or later)", errno: e)
            }
            throw SSIError.sys("cannot open \(path)", errno: e)
        }
        defer { close(fd) }
        while flock(fd, LOCK_EX) < 0 && errno == EINTR {}
        func setNext(_ v: Int32) -> Int32 {
            let s = Array("\(v)\n".utf8)
            let n = pwrite(fd, s, s.count, 0)
            return n < 0 ? errno : 0
        }
        let e = setNext(id)
        if e != 0 {
            if e == EPERM || e == EACCES {
                throw SSIError(.permission, "restoring a \(kind.name) with its identifier needs root: writing \(path) was refused",
                               hint: "run `ssi ipc restart` as root in the IPC namespace's owning user namespace (CAP_CHECKPOINT_RESTORE)", errno: e)
            }
            throw SSIError.sys("cannot write \(id) to \(path)", errno: e, hint: e == EINVAL ? "the id is outside what this kernel allows" : nil)
        }
        let got = create()
        // Whatever happened, leave the sysctl as the kernel keeps it between restores.
        _ = setNext(-1)
        if got < 0 {
            let err = -got
            if err == EEXIST {
                throw SSIError(.busy, "cannot restore \(kind.name) id \(id): key \(hexKey(key)) was taken by another process just now",
                               hint: "find it with ipcs \(kind.ipcsOption) and remove it if it is a leftover; nothing was changed", errno: err)
            }
            throw SSIError.sys("cannot create \(kind.name) key \(hexKey(key))", errno: err, hint: limitHint(kind, err))
        }
        if got != id {
            _ = remove(kind: kind, id: got)
            throw SSIError(.busy, "cannot restore \(kind.name) id \(id) key \(hexKey(key)): the kernel gave id \(got) (another process created an IPC object at the same moment, or the id is out of range)",
                           hint: "run `ssi ipc restart` again; nothing was changed")
        }
        return got
    }

    static func limitHint(_ kind: IPCKind, _ err: Int32) -> String? {
        guard err == EINVAL || err == ENOSPC || err == ENOMEM else { return nil }
        switch kind {
        case .messageQueue: return "check /proc/sys/kernel/msgmni (number of queues)"
        case .semaphoreArray: return "check /proc/sys/kernel/sem (SEMMSL SEMMNS SEMOPM SEMMNI): the array may exceed SEMMSL or SEMMNS"
        case .sharedMemory: return "check /proc/sys/kernel/shmmax, shmall and shmmni: the segment may exceed them"
        }
    }

    @discardableResult
    static func remove(kind: IPCKind, id: Int32) -> Int32 {
        switch kind {
        case .messageQueue: cssi_ipc_msq_rmid(id)
        case .semaphoreArray: cssi_ipc_sem_rmid(id)
        case .sharedMemory: cssi_ipc_shm_rmid(id)
        }
    }

    /// The error for a failed IPC_STAT on the object being checkpointed.
    static func statError(kind: IPCKind, id: Int32, errno e: Int32) -> SSIError {
        switch e {
        case EINVAL, EIDRM:
            var hint = "list them with ipcs \(kind.ipcsOption)"
            for other in IPCKind.allCases where other != kind && SysVIPC.objectExists(kind: other, key: nil, id: id) {
                hint += "; there is a \(other.name) with id \(id): use \(other.option)"
                if other == .messageQueue && kind == .sharedMemory { hint += " (Kerrighed's manual wrote -m for message queues; SwiftSSI uses -q)" }
            }
            return SSIError(.notFound, "there is no \(kind.name) with id \(id) in this IPC namespace", hint: hint, errno: e)
        case EACCES, EPERM:
            return SSIError(.permission, "no read permission on \(kind.name) id \(id)", hint: "run as its owner or as root", errno: e)
        default:
            return SSIError.sys("cannot read \(kind.name) id \(id) (IPC_STAT)", errno: e)
        }
    }
}
