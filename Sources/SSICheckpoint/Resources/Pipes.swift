import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Pipes whose ends are all inside the application, with the bytes in them: read without
// consuming them at checkpoint (tee(2)), created and refilled by ssi at restart.

extension ProcessDumper {
    /// Pipes are restored whole when both ends are inside the application (any of its
    /// processes); their bytes are read without consuming them: tee(2) duplicates a pipe's
    /// content into another pipe.
    static func completePipes(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool) throws {
        var ends = [UInt64: [(pid: Int32, fd: Int32, write: Bool)]]()
        for (pid, fds) in tables { for f in fds where f.kind == .pipe { ends[f.pipeID!, default: []].append((pid, f.fd, f.flags & O_ACCMODE == O_WRONLY)) } }
        for (ino, list) in ends {
            guard let reader = list.first(where: { !$0.write }), list.contains(where: { $0.write }) else {
                if ignoreUnsupported {
                    for pid in tables.keys { tables[pid]!.removeAll { $0.pipeID == ino } }
                    continue
                }
                let e = list[0]
                throw SSIError(.unsupported, "PID \(e.pid) fd \(e.fd): pipe whose other end is outside the application is not supported yet; nothing was written",
                               hint: "checkpoint the whole pipeline as one application (ssi run -- sh -c '...'), or use -i")
            }
            let (data, size) = try ProcessDumper(pid: reader.pid).peekPipe(fd: reader.fd)
            for pid in tables.keys {
                for i in tables[pid]!.indices where tables[pid]![i].pipeID == ino {
                    tables[pid]![i].pipeData = data
                    tables[pid]![i].pipeSize = size
                }
            }
        }
    }

    func peekPipe(fd: Int32) throws -> (Data, Int32) {
        // Opening /proc/PID/fd/N of a pipe opens the same pipe (fifo_open).
        let src = open("/proc/\(pid)/fd/\(fd)", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if src < 0 { throw SSIError.sys("open pipe fd \(fd) of PID \(pid)", errno: errno) }
        defer { close(src) }
        let size = Pipe.capacity(src)
        let p = try Pipe.create(flags: O_CLOEXEC | O_NONBLOCK)
        defer { close(p.read); close(p.write) }
        Pipe.setCapacity(p.write, max(size, 65536))
        var data = Data()
        let n = Pipe.tee(from: src, to: p.write, count: Int(size))
        if n > 0 {
            var buf = [UInt8](repeating: 0, count: Int(n))
            let r = read(p.read, &buf, Int(n))
            if r != n { throw SSIError(.system, "short read while copying the pipe of PID \(pid) fd \(fd)") }
            data = Data(buf)
        } else if n < 0 && n != -Int(EAGAIN) {
            throw SSIError.sys("tee from pipe fd \(fd) of PID \(pid)", errno: Int32(-n))
        }
        return (data, size)
    }
}

/// The pipes of an application being restarted: ssi creates each one, sets its capacity,
/// refills its bytes, and holds both ends while every process opens its own ends through
/// /proc/<ssi>/fd/N. Opening a pipe end blocks only while the other end has no opener
/// (fifo(7)), and ssi holds both, so no open can block.
final class PipeRegistry {
    private var ends: [UInt64: (r: Int32, w: Int32)] = [:]

    func create(from images: [ProcessImage]) throws {
        for image in images {
            for f in image.fds where f.kind == .pipe {
                guard let id = f.pipeID, ends[id] == nil else { continue }
                let p = try Pipe.create(flags: O_CLOEXEC | O_NONBLOCK)
                ends[id] = (p.read, p.write)
                if let size = f.pipeSize, size > 0 { Pipe.setCapacity(p.write, size) }
                if let data = f.pipeData, !data.isEmpty {
                    let n = data.withUnsafeBytes { Glibc.write(p.write, $0.baseAddress, $0.count) }
                    if n != data.count { throw SSIError(.system, "could not refill pipe \(id) of PID \(image.pid) (\(n) of \(data.count) bytes)") }
                }
            }
        }
    }

    func path(_ id: UInt64, write: Bool) -> String? {
        guard let e = ends[id] else { return nil }
        return "/proc/\(getpid())/fd/\(write ? e.w : e.r)"
    }

    func closeAll() {
        for (_, e) in ends { close(e.r); close(e.w) }
        ends = [:]
    }
}
