import CSSILinux
import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Shared memory segments: size, flags and only the pages that were touched.
///
/// Which pages exist: we attach the segment read-only and ask mincore(2), which for a shmem
/// mapping reports the pages present in the segment's page cache (mm/mincore.c
/// mincore_page), not only those in our page table. Swapped-out pages would be missed, so
/// MADV_WILLNEED first brings them into the swap cache, where mincore sees them
/// (mm/madvise.c madvise_willneed -> shmem_swapin_range). The count is checked against the
/// rss + swap the kernel reports in /proc/sysvipc/shm; reading only present pages never
/// allocates new ones. Payload: the present pages, in order, pageSize bytes each.
enum SharedMemoryCheckpoint {
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    static func stat(_ id: Int32) throws -> cssi_ipc_shm_stat {
        var st = cssi_ipc_shm_stat()
        let r = cssi_ipc_shm_stat(id, &st)
        if r < 0 { throw Reservation.statError(kind: .sharedMemory, id: id, errno: -r) }
        return st
    }

    static func attach(_ id: Int32, readOnly: Bool, what: String) throws -> UnsafeMutableRawPointer {
        var addr: UnsafeMutableRawPointer? = nil
        let r = cssi_ipc_shmat(id, readOnly ? Int32(CSSI_IPC_SHM_RDONLY) : 0, &addr)
        if r < 0 { throw r == -EACCES ? Reservation.statError(kind: .sharedMemory, id: id, errno: EACCES) : SSIError.sys("cannot attach \(what) (shmat)", errno: -r) }
        return addr!
    }

    /// The kernel page size of our mapping at `addr` (smaps KernelPageSize): 4 KiB unless
    /// the segment was made with SHM_HUGETLB.
    static func kernelPageSize(at addr: UnsafeMutableRawPointer) -> Int {
        // ProcFS reads to the end (String(contentsOfFile:) stops after 4 KiB of a /proc file).
        guard let smaps = try? ProcFS.read("/proc/self/smaps") else { return pageSize }
        let start = String(UInt(bitPattern: addr), radix: 16) + "-"
        var inside = false
        for line in smaps.split(separator: "\n") {
            if line.first?.isHexDigit == true && line.contains("-") && !line.hasSuffix(":") && line.split(separator: " ").count >= 5 {
                inside = line.hasPrefix(start)
            } else if inside, line.hasPrefix("KernelPageSize:") {
                let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 4
                return kb * 1024
            }
        }
        return pageSize
    }

    static func save(id: Int32, to path: String) throws -> IPCCheckpointResult {
        let st0 = try stat(id)
        let what = "shared memory segment id \(id)"
        let addr = try attach(id, readOnly: true, what: what)
        defer { _ = cssi_ipc_shmdt(addr) }
        guard kernelPageSize(at: addr) == pageSize else {
            throw SSIError(.unsupported, "\(what) uses huge pages (SHM_HUGETLB), which ssi ipc does not save yet", hint: "nothing was written")
        }
        let pages = Int((st0.segsz + UInt64(pageSize) - 1) / UInt64(pageSize))
        let length = pages * pageSize
        var vec = [UInt8](repeating: 0, count: pages)
        var runs: [[UInt64]] = []
        var present: UInt64 = 0
        var consistent = false
        for _ in 0..<5 {
            _ = cssi_ipc_willneed(addr, length)
            let r = vec.withUnsafeMutableBufferPointer { cssi_ipc_mincore(addr, length, $0.baseAddress!) }
            if r < 0 { throw SSIError.sys("cannot list the pages of \(what) (mincore)", errno: -r) }
            runs = []
            present = 0
            var i = 0
            while i < pages {
                if vec[i] & 1 == 0 { i += 1; continue }
                let start = i
                while i < pages && vec[i] & 1 != 0 { i += 1 }
                runs.append([UInt64(start), UInt64(i - start)])
                present += UInt64(i - start)
            }
            // rss and swap of /proc/sysvipc/shm are nrpages and info->swapped, in bytes
            // (ipc/shm.c shm_add_rss_swap): every page the segment has, wherever it is.
            guard let entry = try IPCObjectList.read(.sharedMemory).first(where: { $0.id == id }), let rss = entry.rss else {
                consistent = true   // no rss column: trust mincore
                break
            }
            let expected = (rss + (entry.swap ?? 0)) / UInt64(pageSize)
            if expected == present { consistent = true; break }
            usleep(10_000)
        }
        guard consistent else {
            throw SSIError(.state, "the pages of \(what) kept changing while they were listed",
                           hint: "freeze the applications that use it (ssi checkpoint --freeze APP) and checkpoint it again")
        }
        let st = try stat(id)
        var info = IPCSnapshotInfo(kind: .sharedMemory, perm: st.perm, id: id)
        info.segment = .init(size: st.segsz, pageSize: pageSize, runs: runs, pages: present,
                             locked: st.perm.mode & UInt32(CSSI_IPC_SHM_LOCKED) != 0,
                             markedForRemoval: st.perm.mode & UInt32(CSSI_IPC_SHM_DEST) != 0,
                             attached: st.nattch > 0 ? st.nattch - 1 : 0)
        let w = try IPCSnapshotWriter(path: path, info: info, payloadLength: present * UInt64(pageSize))
        for run in runs {
            try w.writePayload(raw: UnsafeRawBufferPointer(start: addr + Int(run[0]) * pageSize, count: Int(run[1]) * pageSize))
        }
        let size = try w.finish()
        return IPCCheckpointResult(info: info, path: path, fileBytes: size, contentBytes: present * UInt64(pageSize))
    }

    static func restore(_ file: IPCSnapshotReader) throws -> IPCRestoreResult {
        let info = file.info
        let seg = info.segment!
        guard seg.pageSize == pageSize else {
            throw SSIError(.unsupported, "\(file.path) was saved with \(seg.pageSize)-byte pages; this machine has \(pageSize)-byte pages")
        }
        let id = try Reservation.create(kind: .sharedMemory, key: info.key, id: info.id) {
            cssi_ipc_shmget(info.key, seg.size, Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600))
        }
        var warnings: [String] = []
        do {
            let addr = try attach(id, readOnly: false, what: info.objectDescription)
            defer { _ = cssi_ipc_shmdt(addr) }
            var off: UInt64 = 0
            for run in seg.runs {
                let n = Int(run[1]) * pageSize
                try file.readPayload(into: addr + Int(run[0]) * pageSize, count: n, at: off)
                off += UInt64(n)
            }
            var r = cssi_ipc_shm_set(id, info.uid, info.gid, info.mode)
            if r < 0 { throw SSIError.sys("cannot set owner \(info.uid), group \(info.gid), mode \(String(info.mode, radix: 8)) of \(info.objectDescription)", errno: -r, hint: "run as root") }
            if seg.locked {
                r = cssi_ipc_shm_lock(id, 1)
                if r < 0 { warnings.append("\(info.objectDescription) was locked in memory (SHM_LOCK) and could not be locked again: \(String(cString: strerror(-r)))") }
            }
        } catch {
            Reservation.remove(kind: .sharedMemory, id: id)
            throw error
        }
        if seg.markedForRemoval {
            warnings.append("\(info.objectDescription) had been removed (IPC_RMID) while still attached; it is restored without that mark so that restarted processes can attach it: remove it with `ipcrm -m \(info.id)` once they have")
        }
        return IPCRestoreResult(info: info, warnings: warnings)
    }
}

extension SysVIPC {
    /// Whether shared memory segment `id` of the calling thread's IPC namespace is marked for
    /// removal (IPC_RMID while attached: SHM_DEST in its mode).
    public static func segmentMarkedForRemoval(_ id: Int32) -> Bool {
        guard let st = try? SharedMemoryCheckpoint.stat(id) else { return false }
        return st.perm.mode & UInt32(CSSI_IPC_SHM_DEST) != 0
    }

    /// IPC_RMID of segment `id`: it goes once its last process detaches. 0 or -errno.
    @discardableResult
    public static func removeSegment(_ id: Int32) -> Int32 { cssi_ipc_shm_rmid(id) }
}
