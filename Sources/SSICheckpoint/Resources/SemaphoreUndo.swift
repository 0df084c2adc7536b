import Foundation
import SSIImage
import SSIInject
import SSIIPC
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// SEM_UNDO adjustments (semadj, semop(2)): what a process's exit adds back to each semaphore
// it took or gave with SEM_UNDO. The kernel keeps them in the process's undo list, shared by
// the threads made with CLONE_SYSVSEM, and nothing shows them: no /proc file, no semctl
// command, no ptrace request (docs/ipc.md). One call applies them, though: unshare(2) with
// CLONE_SYSVSEM drops the calling thread's reference to its list, and the last reference's
// drop runs exit_sem(), as an exit would (ipc/sem.c): each adjusted semaphore gets its
// adjustment added and its sempid set to the process. So the dump reads every semaphore of
// the process's IPC namespace, has every thread of the process unshare, reads them again:
// what changed, and whose GETPID is the process, is its adjustment. It then gives it back at
// once, by a semop in the process with the opposite value and SEM_UNDO, which takes the
// semaphore again and registers the same adjustment: the application goes on holding what it
// held, and a kill after the checkpoint releases it as before. Restart registers it the same
// way in the restored process.
//
// Left as is: a multithreaded process's threads other than the one the semop ran in have no
// undo list after the checkpoint (a list cannot be shared again once dropped), so a later
// SEM_UNDO semop of such a thread gets a list of its own, applied when that thread exits. An
// adjustment clamped by exit_sem (a value that would go below 0) reads as less than it is.

enum SemaphoreUndo {
    static let cloneSysvsem: UInt64 = 0x0004_0000   // CLONE_SYSVSEM
    static let semUndo: Int16 = 0x1000               // SEM_UNDO
    static let ipcNoWait: Int16 = 0o4000             // IPC_NOWAIT

    /// The adjustments of each live process of `seized` (but those known to have no undo
    /// list: see `withoutList` below), measured and
    /// given back as the file's header says. Only processes whose IPC namespace has
    /// semaphore arrays are touched.
    static func measure(_ seized: SeizedApplication, withoutList: Int32? = nil) throws -> [Int32: [SemaphoreAdjustment]] {
        var byNamespace = [String: [Int32]]()
        for pid in seized.tree.pids {
            guard let tids = seized.threads[pid], !tids.isEmpty else { continue }
            // A process none of whose threads has an undo list has no adjustment to measure:
            // kcmp(2) KCMP_SYSVSEM finds each thread's list equal to that of `withoutList`
            // (NULL: a process that never made a semop with SEM_UNDO and made no thread, since
            // clone with CLONE_SYSVSEM, as pthread_create does, gives its threads a shared list
            // at once). Every thread, not the leader alone: after a checkpoint without kill
            // the threads' lists are their own (above), and one may have made a list since.
            // Measuring anyway injects calls into the process inside the freeze (2-3 ms each)
            // whenever its IPC namespace holds any semaphore array, as a machine's shared
            // namespace often does. Any other answer (a list, an error) measures.
            if let withoutList, tids.allSatisfy({ Kcmp.compare(ProcessID($0), ProcessID(withoutList), .sysvsem) == 0 }) { continue }
            guard let ns = try? ProcFS.readLink("/proc/\(seized.exitedLeaders[pid] ?? pid)/ns/ipc") else { continue }
            byNamespace[ns, default: []].append(pid)
        }
        let mine = try? ProcFS.readLink("/proc/self/ns/ipc")
        var out = [Int32: [SemaphoreAdjustment]]()
        for (ns, pids) in byNamespace.sorted(by: { $0.key < $1.key }) {
            // The SysV calls and /proc/sysvipc act on the calling thread's IPC namespace: one
            // of ssi's threads enters the application's.
            var fd: Int32 = -1
            if ns != mine {
                fd = open("/proc/\(seized.exitedLeaders[pids[0]] ?? pids[0])/ns/ipc", O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw SSIError.sys("open /proc/\(pids[0])/ns/ipc", errno: errno) }
            }
            defer { if fd >= 0 { close(fd) } }
            let namespaceFD = fd
            func inNamespace<T>(_ body: @escaping () -> T) -> T? {
                namespaceFD < 0 ? body() : AppNamespaces.inside(namespaceFD, type: AppNamespaces.newIPC, body)
            }
            guard var before = inNamespace({ SysVIPC.semaphoreArrays() }), !before.isEmpty else { continue }
            for pid in pids {
                let found = try measure(pid: pid, handle: seized.exitedLeaders[pid] ?? pid, threads: seized.threads[pid] ?? [pid],
                                        before: before, inNamespace: inNamespace)
                if !found.isEmpty { out[pid] = found }
                if let now = inNamespace({ SysVIPC.semaphoreArrays() }) { before = now }
            }
        }
        return out
    }

    private static func measure(pid: Int32, handle: Int32, threads tids: [Int32], before: [Int32: SemaphoreArrayValues],
                                inNamespace: (@escaping () -> [SemaphoreAdjustment]) -> [SemaphoreAdjustment]?) throws -> [SemaphoreAdjustment] {
        var found = [SemaphoreAdjustment]()
        try FileLockCalls.inProcess(handle, threads: tids) { inj, mem, scratch in
            // Every thread: the list goes (and its adjustments apply) with the last reference.
            for tid in tids {
                if tid == handle {
                    try inj.call("unshare(CLONE_SYSVSEM) in PID \(pid)", .unshare, cloneSysvsem)
                    continue
                }
                let t = Tracee.adoptTraceMe(ProcessID(tid))
                let regs = try t.registers()
                let g = try SignalMaskGuard(tracee: t, saved: regs)
                defer { g.restore() }
                try Injector(pid: ProcessID(tid), base: regs, gadget: inj.gadget).call("unshare(CLONE_SYSVSEM) in thread \(tid) of PID \(pid)", .unshare, cloneSysvsem)
            }
            // What changed and was last changed by this process (GETPID names the thread
            // group, in ssi's PID namespace): a process outside the application changing a
            // semaphore meanwhile is not taken for an adjustment.
            found = inNamespace {
                var out = [SemaphoreAdjustment]()
                for (id, now) in SysVIPC.semaphoreArrays().sorted(by: { $0.key < $1.key }) {
                    guard let was = before[id], was.values.count == now.values.count else { continue }
                    for i in now.values.indices where now.values[i] != was.values[i] && SysVIPC.semaphorePID(id: id, num: i) == pid {
                        out.append(SemaphoreAdjustment(id: id, key: now.key, num: UInt16(i), adjustment: Int32(now.values[i]) - Int32(was.values[i])))
                    }
                }
                return out
            } ?? []
            // Given back: the semaphores taken again, the same adjustments registered.
            var kept = [SemaphoreAdjustment]()
            for (id, list) in Dictionary(grouping: found, by: \.id).sorted(by: { $0.key < $1.key }) {
                let ops = list.map { (num: $0.num, op: Int16(-$0.adjustment), flags: semUndo | ipcNoWait) }
                let r = try semop(id: id, ops, inj: inj, mem: mem, scratch: scratch)
                if r < 0 {
                    warn("PID \(pid): could not take back its SEM_UNDO hold of SysV semaphore array id \(id) (semop: \(String(cString: strerror(Int32(-r))))); another process changed it during the checkpoint, and the application goes on without that hold")
                } else {
                    kept += list
                }
            }
            found = kept
        }
        return found
    }

    /// semop(2) injected in a process: `ops` as struct sembuf (sem_num, sem_op, sem_flg) in
    /// the scratch memory. The syscall's result (-errno on failure).
    static func semop(id: Int32, _ ops: [(num: UInt16, op: Int16, flags: Int16)], inj: Injector, mem: RemoteMemory, scratch: UInt64) throws -> Int64 {
        var bytes = [UInt8]()
        for o in ops {
            withUnsafeBytes(of: o.num.littleEndian) { bytes += $0 }
            withUnsafeBytes(of: o.op.littleEndian) { bytes += $0 }
            withUnsafeBytes(of: o.flags.littleEndian) { bytes += $0 }
        }
        try mem.write(bytes, to: scratch)
        return try inj.raw(.semop, UInt64(UInt32(bitPattern: id)), scratch, UInt64(ops.count))
    }
}

extension ProcessRestorer {
    /// Registers the process's SEM_UNDO adjustments again (SemaphoreUndo). In an IPC
    /// namespace made again from the snapshot, the values are the saved ones, the
    /// semaphores already held: each is changed by the adjustment and back with SEM_UNDO,
    /// which leaves the value and registers the adjustment (the rise first, so nothing
    /// waits). In ssi's own namespace, whose arrays went on living (and the killed copy's
    /// exit gave its holds back), the process takes them again, and a hold another process
    /// has taken since is refused by name.
    func restoreSemaphoreUndo() throws {
        guard let list = image.semaphoreUndo, !list.isEmpty else { return }
        let madeAgain = image.namespaces?.ipc != nil
        for (id, adjustments) in Dictionary(grouping: list, by: \.id).sorted(by: { $0.key < $1.key }) {
            var ops = [(num: UInt16, op: Int16, flags: Int16)]()
            for a in adjustments {
                let undo = (num: a.num, op: Int16(-a.adjustment), flags: SemaphoreUndo.semUndo | SemaphoreUndo.ipcNoWait)
                guard madeAgain else { ops.append(undo); continue }
                let back = (num: a.num, op: Int16(a.adjustment), flags: SemaphoreUndo.ipcNoWait)
                ops += a.adjustment > 0 ? [back, undo] : [undo, back]
            }
            let r = try SemaphoreUndo.semop(id: id, ops, inj: inj, mem: mem, scratch: scratch)
            guard r < 0 else { continue }
            let key = adjustments[0].key
            let nums = adjustments.map { String($0.num) }.joined(separator: ", ")
            let what = "PID \(image.pid) held semaphore\(adjustments.count == 1 ? "" : "s") \(nums) of SysV semaphore array id \(id) (key 0x\(String(UInt32(bitPattern: key), radix: 16))) with SEM_UNDO"
            switch Int32(-r) {
            case EAGAIN:
                throw SSIError(.busy, "\(what) when it was checkpointed, and another process holds \(adjustments.count == 1 ? "it" : "them") now; nothing was restarted",
                               hint: "restart once it is free (ipcs -s -i \(id) shows its values)")
            case EINVAL, EIDRM:
                throw SSIError(.notFound, "\(what) when it was checkpointed; that array does not exist here now", hint: "restore it first with `ssi ipc restart -s FILE`")
            default:
                throw SSIError.sys("semop with SEM_UNDO in PID \(image.pid) on SysV semaphore array id \(id)", errno: Int32(-r))
            }
        }
    }
}
