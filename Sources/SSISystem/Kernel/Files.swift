import CSSILinux
#if canImport(Glibc)
import Glibc
#endif

/// Pipes (pipe(7)): creation, capacity, and reading without consuming.
public enum Pipe {
    /// pipe2(2): (read end, write end).
    public static func create(flags: Int32) throws -> (read: Int32, write: Int32) {
        var p: [Int32] = [0, 0]
        try check(cssi_pipe2(&p, flags), "pipe2")
        return (p[0], p[1])
    }

    /// F_GETPIPE_SZ (fcntl(2), Linux 2.6.35).
    public static func capacity(_ fd: Int32) -> Int32 { Int32(cssi_fcntl_int(fd, Int32(CSSI_F_GETPIPE_SZ), 0)) }

    /// F_SETPIPE_SZ; the kernel rounds up, and refuses past /proc/sys/fs/pipe-max-size.
    @discardableResult
    public static func setCapacity(_ fd: Int32, _ bytes: Int32) -> Bool { cssi_fcntl_int(fd, Int32(CSSI_F_SETPIPE_SZ), bytes) >= 0 }

    /// tee(2) with SPLICE_F_NONBLOCK: copies up to `count` bytes of pipe `from` into pipe `to`
    /// without consuming them. Returns the bytes copied or -errno.
    public static func tee(from: Int32, to: Int32, count: Int) -> Int { cssi_tee(from, to, count, UInt32(CSSI_SPLICE_F_NONBLOCK)) }
}

/// Disk space of a file.
public enum FileSpace {
    /// Frees the blocks of [offset, offset + length) and keeps the file's size: the range
    /// then reads as zeros (fallocate(2) FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE). Returns
    /// 0 or the errno (EOPNOTSUPP on a file system that cannot punch holes).
    public static func punchHole(_ fd: Int32, offset: UInt64, length: UInt64) -> Int32 {
        let r = cssi_punch_hole(fd, Int64(offset), Int64(length))
        return r < 0 ? Int32(-r) : 0
    }
}

/// File seals (memfd_create(2), fcntl(2) F_ADD_SEALS/F_GET_SEALS).
public enum FileSeals {
    static let getSeals: Int32 = 1034, addSeals: Int32 = 1033   // F_GET_SEALS, F_ADD_SEALS (Linux 3.17)

    public static func get(_ fd: Int32) -> Int32 { max(Int32(truncatingIfNeeded: cssi_fcntl_int(fd, getSeals, 0)), 0) }
    /// F_ADD_SEALS; 0, or -errno.
    @discardableResult
    public static func add(_ fd: Int32, _ seals: Int32) -> Int32 {
        let r = cssi_fcntl_int(fd, addSeals, seals)   // -errno on failure
        return r < 0 ? Int32(truncatingIfNeeded: r) : 0
    }
}

/// Anonymous memory files (memfd_create(2), Linux 3.17).
public enum Memfd {
    public static let closeOnExec: UInt32 = 0x1, allowSealing: UInt32 = 0x2   // MFD_CLOEXEC, MFD_ALLOW_SEALING

    public static func create(name: String, flags: UInt32) throws -> Int32 {
        Int32(try check(name.withCString { cssi_memfd_create($0, flags) }, "memfd_create for /memfd:\(name)"))
    }
}

/// open(2) flags that glibc declares only under _GNU_SOURCE.
public enum OpenFlags {
    /// O_PATH.
    public static let path: Int32 = 0o10_000_000
    /// O_TMPFILE (Linux 3.11), with O_DIRECTORY as the kernel wants it.
    public static let tmpfile: Int32 = 0o20_200_000
    /// O_DIRECT, which differs between architectures (asm/fcntl.h); on a pipe, packet mode
    /// (pipe(2)).
    #if arch(arm64)
    public static let direct: Int32 = 0o200_000
    #else
    public static let direct: Int32 = 0o40_000
    #endif
}

/// File handles (name_to_handle_at(2), open_by_handle_at(2)).
public enum InodeHandle {
    /// Opens the inode named by `handle` (type and bytes, as fdinfo shows them) on the file
    /// system of `mountFD`. Returns the fd or -errno; needs CAP_DAC_READ_SEARCH.
    public static func open(mountFD: Int32, type: Int32, handle: [UInt8], flags: Int32) -> Int {
        // struct file_handle { unsigned int handle_bytes; int handle_type; unsigned char f_handle[]; }
        var buf = [UInt8](repeating: 0, count: 8 + handle.count)
        withUnsafeBytes(of: UInt32(handle.count)) { buf.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: type) { buf.replaceSubrange(4..<8, with: $0) }
        buf.replaceSubrange(8..., with: handle)
        return buf.withUnsafeBytes { cssi_open_by_handle_at(mountFD, $0.baseAddress, flags) }
    }
}

/// mmap(2) flags glibc declares only under _GNU_SOURCE.
public enum MapFlags {
    /// MAP_FIXED_NOREPLACE (Linux 4.17): like MAP_FIXED, but fails rather than replace a mapping.
    public static let fixedNoReplace: Int32 = 0x100000
}

/// The most one write(2) hands to the page cache. Since Linux 6.16 ext4 sizes the folio a
/// buffered write allocates after the write's length (generic_perform_write asks
/// write_begin for a folio of that order), up to 2 MiB: a high-order block of free memory.
/// On a VM with free page reporting (virtio-balloon) those are the blocks the guest gave
/// back to its host, and touching one again costs the host's faults first. Measured on this
/// project's 2-core VM, 1 GiB written with dd into a new file of an ext4 /run: 3.6-3.95 s
/// in 4 MiB writes, 2.3 s in 1 MiB, 0.69 s in 256 KiB, 0.33-0.39 s in 64-128 KiB (tmpfs:
/// 0.5 s whatever the size). A snapshot's pages and a migration's image are written in
/// pieces of this size: on a machine without the effect it costs a few more system calls.
public let largestFileWrite = 128 << 10

/// write(2) until every byte is written, retried on EINTR, at most `largestFileWrite` per
/// call. Throws naming `what`; `whenFull` is the hint when the file system is full (ENOSPC).
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String, whenFull: String) throws {
    var done = 0
    while done < bytes.count {
        let n = Glibc.write(fd, bytes.baseAddress! + done, min(bytes.count - done, largestFileWrite))
        if n < 0 {
            if errno == EINTR { continue }
            throw SSIError.sys(what(), errno: errno, hint: errno == ENOSPC ? whenFull : nil)
        }
        done += n
    }
}

/// pwrite(2) of `count` bytes at `offset` until every byte is written, as `writeAll`.
public func pwriteAll(_ fd: Int32, _ base: UnsafeRawPointer, count: Int, at offset: off_t, what: @autoclosure () -> String, whenFull: String) throws {
    var done = 0
    while done < count {
        let n = pwrite(fd, base + done, min(count - done, largestFileWrite), offset + off_t(done))
        if n < 0 {
            if errno == EINTR { continue }
            throw SSIError.sys(what(), errno: errno, hint: errno == ENOSPC ? whenFull : nil)
        }
        done += n
    }
}

/// Access and modification times of a path, as [atime s, ns, mtime s, ns].
public enum FileTimes {
    public static func get(_ path: String) -> [Int64]? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return [Int64(st.st_atim.tv_sec), Int64(st.st_atim.tv_nsec), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec)]
    }

    /// utimensat(2) without following a last symlink. It can set atime and mtime only: the
    /// ctime becomes now, which nothing in user space can set.
    public static func set(_ path: String, _ t: [Int64]?) {
        guard let t, t.count == 4 else { return }
        var ts = [timespec(tv_sec: Int(t[0]), tv_nsec: Int(t[1])), timespec(tv_sec: Int(t[2]), tv_nsec: Int(t[3]))]
        _ = utimensat(AT_FDCWD, path, &ts, AT_SYMLINK_NOFOLLOW)
    }
}

/// fanotify groups (fanotify_init(2), fanotify_mark(2), Linux 2.6.37).
public enum Fanotify {
    /// A new group; the fd or -errno.
    public static func initialize(flags: UInt32, eventFlags: UInt32) -> Int { cssi_fanotify_init(flags, eventFlags) }

    /// fanotify_mark on `path`; 0 or -errno.
    public static func mark(_ fd: Int32, flags: UInt32, mask: UInt64, path: String) -> Int {
        cssi_fanotify_mark(fd, flags, mask, AT_FDCWD, path)
    }
}
