import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Files without a name (unlinked files, memfds) that the application uses through an fd or a
// mapping: their content goes into the image, and restart recreates them nameless, held by
// ssi, for the processes to open through /proc/<ssi>/fd/N.

extension ProcessDumper {
    /// Saves the content of every unlinked file or memfd the process uses (through an fd or
    /// a mapping), once per file; returns their descriptions.
    func dumpDeletedFiles(fds: [FileDescriptorImage], vmas: [VMA], writer: any ImageWriter, done: inout Set<String>) throws -> [DeletedFile] {
        var out = [DeletedFile]()
        var sources = [(id: String, path: String, source: String)]()
        for f in fds { if let id = f.deletedFileID { sources.append((id, f.path, "/proc/\(pid)/fd/\(f.fd)")) } }
        for v in vmas {
            if let id = v.deletedFileID {
                sources.append((id, v.path ?? v.name, "/proc/\(pid)/map_files/\(String(v.start, radix: 16))-\(String(v.end, radix: 16))"))
            }
        }
        for (id, path, source) in sources where !done.contains(id) {
            done.insert(id)
            let fd = open(source, O_RDONLY | O_CLOEXEC)
            if fd < 0 { throw SSIError.sys("PID \(pid): open the unlinked file \(path) through \(source)", errno: errno) }
            defer { close(fd) }
            var st = stat()
            fstat(fd, &st)
            let name = "file-\(id.replacingOccurrences(of: ":", with: "-")).img"
            let stream = try writer.createFile(name)
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buf.deallocate() }
            while true {
                let n = read(fd, buf.baseAddress, buf.count)
                if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("read \(source)", errno: errno) }
                if n == 0 { break }
                try stream.append(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            }
            try stream.finish(sync: false)
            var d = DeletedFile(id: id, path: path, isMemfd: path.hasPrefix("/memfd:"), size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
                                seals: FileSeals.get(fd), contentFile: name)
            d.owner = [st.st_uid, st.st_gid]
            d.times = [Int64(st.st_atim.tv_sec), Int64(st.st_atim.tv_nsec), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec)]
            out.append(d)
        }
        return out
    }
}

/// The unlinked files and memfds of an application being restarted.
final class DeletedFileRegistry {
    private var deleted: [String: Int32] = [:]
    /// Seals added once every process has its mappings (sealLate), by file id.
    private var lateSeals: [String: Int32] = [:]

    /// Adds the seals that had to wait for the processes' mappings, through a writable open
    /// of each file (F_ADD_SEALS wants write access; ssi holds them read-only).
    func sealLate() throws {
        for (id, seals) in lateSeals.sorted(by: { $0.key < $1.key }) {
            guard let fd = deleted[id] else { continue }
            let w = open("/proc/self/fd/\(fd)", O_RDWR | O_CLOEXEC)
            if w < 0 { throw SSIError.sys("seal the memfd \(id) again (open for writing)", errno: errno) }
            defer { close(w) }
            let r = FileSeals.add(w, seals)
            if r < 0 { throw SSIError.sys("seal the memfd \(id) again (F_ADD_SEALS 0x\(String(seals, radix: 16)))", errno: -r) }
        }
        lateSeals = [:]
    }

    /// Recreates each file, nameless, with its content (and seals). `mountNamespaceOf`: a
    /// process already in the application's own mount namespace (a cluster application's
    /// root), where the files are made.
    func create(from images: [ProcessImage], source: any ImageReader, mountNamespaceOf holder: Int32? = nil) throws {
        for image in images {
            for d in image.deletedFiles ?? [] where deleted[d.id] == nil {
                let fd = try DeletedFileRegistry.makeNameless(d, mountNamespaceOf: holder)
                deleted[d.id] = fd
                let content = try source.open(d.contentFile)
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
                defer { buf.deallocate() }
                var off: UInt64 = 0
                while off < content.size {
                    let n = Int(min(UInt64(buf.count), content.size - off))
                    try content.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]), at: off)
                    try DeletedFileRegistry.writeSparse(fd, UnsafeRawBufferPointer(rebasing: buf[0..<n]), at: off, what: d.path)
                    off += UInt64(n)
                }
                // The size (a hole at the end is never written), then owner, mode (after the
                // owner: fchown(2) clears set-group-ID), seals (after the content: F_SEAL_WRITE
                // forbids writes) and the times last (every write above moved them).
                if ftruncate(fd, off_t(d.size)) != 0 { throw SSIError.sys("set the size of \(d.path)", errno: errno) }
                if let o = d.owner, o.count == 2 { _ = fchown(fd, o[0], o[1]) }
                _ = fchmod(fd, mode_t(d.mode))
                // F_SEAL_FUTURE_WRITE (0x10) refuses a writable shared mapping made from now
                // on (memfd_create(2)), which the restored processes must make again: added
                // once they have (sealLate), with F_SEAL_SEAL (0x1), which would refuse it.
                let late = d.seals & 0x10 != 0 ? d.seals & (0x10 | 0x1) : 0
                if d.seals & ~late != 0 { FileSeals.add(fd, d.seals & ~late) }
                if late != 0 { lateSeals[d.id] = late }
                if let t = d.times, t.count == 4 {
                    var ts = [timespec(tv_sec: Int(t[0]), tv_nsec: Int(t[1])), timespec(tv_sec: Int(t[2]), tv_nsec: Int(t[3]))]
                    _ = futimens(fd, &ts)
                }
                // Held read-only from now on: a file open for writing anywhere cannot become a
                // process's exe (PR_SET_MM_MAP's exe_fd: deny_write_access, EACCES), which a
                // program whose binary was replaced while it ran needs. The processes open it
                // through /proc/<ssi>/fd/N, a new open of the inode, in whatever mode they had.
                let readOnly = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC)
                if readOnly >= 0 { close(fd); deleted[d.id] = readOnly }
            }
        }
    }

    /// Writes `chunk` at `offset`, leaving every all-zero 4 KiB block unwritten: a sparse
    /// file keeps its holes (st_blocks), and a hole reads as zeros anyway.
    static func writeSparse(_ fd: Int32, _ chunk: UnsafeRawBufferPointer, at offset: UInt64, what: String) throws {
        var i = 0
        while i < chunk.count {
            let n = min(4096, chunk.count - i)
            let block = UnsafeRawBufferPointer(rebasing: chunk[i..<(i + n)])
            if block.contains(where: { $0 != 0 }) {
                if pwrite(fd, block.baseAddress, n, off_t(offset) + off_t(i)) != n { throw SSIError.sys("write the content of \(what)", errno: errno) }
            }
            i += n
        }
    }

    /// A memfd of the same name, or an O_TMPFILE file (open(2), 3.11) in the same directory
    /// and so the same file system as before; /tmp if that directory is gone.
    ///
    /// An O_TMPFILE file belongs to the mount it was made on, and linkat(2) gives it a name
    /// only on that same mount (EXDEV otherwise, even on the same file system): an
    /// application in a mount namespace of its own (a copy of ssi's, with mounts of its own)
    /// that names a file it made with O_TMPFILE needs it made on its mount, so it is made
    /// from a thread of ssi inside that namespace (setns(2) CLONE_NEWNS, which wants the
    /// thread's cwd and root its own first: unshare CLONE_FS).
    private static func makeNameless(_ d: DeletedFile, mountNamespaceOf holder: Int32?) throws -> Int32 {
        if !d.isMemfd, let holder {
            let made: (fd: Int32, errno: Int32) = ThreadFS.onThread {
                let ns = open("/proc/\(holder)/ns/mnt", O_RDONLY | O_CLOEXEC)
                guard ns >= 0 else { return (-1, errno) }
                defer { close(ns) }
                if ThreadFS.unshareCwd() != 0 || ThreadFS.enter(ns, type: 0x20000 /* CLONE_NEWNS */) != 0 { return (-1, EPERM) }
                return ((try? makeNameless(d, mountNamespaceOf: nil)) ?? -1, errno)
            }
            if made.fd >= 0 { return made.fd }
        }
        if d.isMemfd {
            return try Memfd.create(name: String(d.path.dropFirst("/memfd:".count)), flags: Memfd.closeOnExec | Memfd.allowSealing)
        }
        let dir = (d.path as NSString).deletingLastPathComponent
        var fd = open(dir.isEmpty ? "/tmp" : dir, OpenFlags.tmpfile | O_RDWR | O_CLOEXEC, mode_t(d.mode))
        if fd < 0 { fd = open("/tmp", OpenFlags.tmpfile | O_RDWR | O_CLOEXEC, mode_t(d.mode)) }
        if fd < 0 { throw SSIError.sys("recreate the unlinked file \(d.path)", errno: errno) }
        return fd
    }

    /// The path through which a process opens the file `id`.
    func path(_ id: String) -> String? {
        deleted[id].map { "/proc/\(getpid())/fd/\($0)" }
    }

    func closeAll() {
        for (_, fd) in deleted { close(fd) }
        deleted = [:]
    }
}
