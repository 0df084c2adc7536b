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
            out.append(DeletedFile(id: id, path: path, isMemfd: path.hasPrefix("/memfd:"), size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
                                   seals: FileSeals.get(fd), contentFile: name))
        }
        return out
    }
}

/// The unlinked files and memfds of an application being restarted.
final class DeletedFileRegistry {
    private var deleted: [String: Int32] = [:]

    /// Recreates each file, nameless, with its content (and seals).
    func create(from images: [ProcessImage], source: any ImageReader) throws {
        for image in images {
            for d in image.deletedFiles ?? [] where deleted[d.id] == nil {
                let fd = try DeletedFileRegistry.makeNameless(d)
                deleted[d.id] = fd
                let content = try source.open(d.contentFile)
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
                defer { buf.deallocate() }
                var off: UInt64 = 0
                while off < content.size {
                    let n = Int(min(UInt64(buf.count), content.size - off))
                    try content.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]), at: off)
                    if Glibc.write(fd, buf.baseAddress, n) != n { throw SSIError.sys("write the content of \(d.path)", errno: errno) }
                    off += UInt64(n)
                }
                if d.seals != 0 { FileSeals.add(fd, d.seals) }
            }
        }
    }

    /// A memfd of the same name, or an O_TMPFILE file (open(2), 3.11) in the same directory
    /// and so the same file system as before; /tmp if that directory is gone.
    private static func makeNameless(_ d: DeletedFile) throws -> Int32 {
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
