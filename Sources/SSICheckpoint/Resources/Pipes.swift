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
        // Where each pipe's ends are in the tables, found in one pass: looking them up again
        // per pipe cost O(pipes x fds), 28 s of frozen time for 5,000 pipes.
        var places = [UInt64: [(pid: Int32, index: Int)]]()
        var packetMode = Set<UInt64>()
        for (pid, fds) in tables {
            for (i, f) in fds.enumerated() where f.kind == .pipe {
                ends[f.pipeID!, default: []].append((pid, f.fd, f.flags & O_ACCMODE == O_WRONLY))
                places[f.pipeID!, default: []].append((pid, i))
                // Packet mode (O_DIRECT) is each end's own flag.
                if f.flags & OpenFlags.direct != 0 { packetMode.insert(f.pipeID!) }
            }
        }
        // Ends in flight in a queued message (SCM_RIGHTS) are inside the application too
        // (pid 0 here); their bytes were peeked when they were described.
        var inFlightData = [UInt64: (Data, Int32)]()
        for f in tables.values.joined() {
            for g in (f.socket?.datagrams ?? []).flatMap({ $0.files ?? [] }) where g.kind == .pipe {
                ends[g.pipeID!, default: []].append((0, g.fd, g.flags & O_ACCMODE == O_WRONLY))
                inFlightData[g.pipeID!] = (g.pipeData ?? Data(), g.pipeSize ?? 0)
            }
        }
        let app = Set(tables.keys)
        var outside: [String: [Int32]]? = nil
        for (ino, list) in ends {
            let reader = list.first(where: { !$0.write })
            var external = false
            if reader == nil || !list.contains(where: { $0.write }) {
                // One end only. Either the other end is closed everywhere (its holders closed
                // it or exited: a zombie holds no fd), and the pipe is rebuilt with that end
                // closed (EOF after the bytes, or EPIPE); or a process outside the application
                // holds it (`feeder | ssi run -- app | tee log`): saved as external, and the
                // restart connects it to what the caller gives (RestartOptions.inheritFDs).
                // The machine's pipe holders are listed once, at the first such pipe.
                if outside == nil { outside = ProcessDumper.pipeHoldersOutside(app: app) }
                external = !(outside?["pipe:[\(ino)]"] ?? []).isEmpty
            }
            // Opening any end through /proc opens the pipe itself (fifo_open), so the bytes can
            // be peeked from either end. Bytes queued for an outside reader are that reader's.
            let peekFrom = list.first { $0.pid != 0 && !$0.write } ?? list.first { $0.pid != 0 }
            var (data, size, segments) = try peekFrom.map { try ProcessDumper(pid: $0.pid).peekPipeSegments(fd: $0.fd) }
                ?? inFlightData[ino].map { ($0.0, $0.1, [$0.0.count]) } ?? (Data(), 0, [])
            if external && reader == nil { data = Data(); segments = [] }
            // The packets already queued read one at a time (several reads to drain them).
            let packets = !data.isEmpty && (segments.count > 1 || packetMode.contains(ino)) ? segments : nil
            for (pid, i) in places[ino] ?? [] {
                tables[pid]![i].pipeData = data
                tables[pid]![i].pipePackets = packets
                tables[pid]![i].pipeSize = size
                if external { tables[pid]![i].external = true }
            }
        }
        _ = ignoreUnsupported
    }

    /// The processes outside `app` (and other than ssi) holding each pipe, by /proc link
    /// ("pipe:[123]"): one walk over the machine's fds.
    static func pipeHoldersOutside(app: Set<Int32>) -> [String: [Int32]] {
        var out = [String: [Int32]]()
        let me = getpid()
        for p in numericEntries(of: "/proc") ?? [] where !app.contains(p) && p != me {
            var seen = Set<String>()
            for fd in numericEntries(of: "/proc/\(p)/fd") ?? [] {
                guard let link = try? ProcFS.readLink("/proc/\(p)/fd/\(fd)"), link.hasPrefix("pipe:["), seen.insert(link).inserted else { continue }
                out[link, default: []].append(p)
            }
        }
        return out
    }

    func peekPipe(fd: Int32) throws -> (Data, Int32) {
        let (data, size, _) = try peekPipeSegments(fd: fd)
        return (data, size)
    }

    /// The bytes queued in the pipe of fd `fd`, its capacity, and the lengths of the reads
    /// that drained the copy: one for a byte stream, one per packet for packets written in
    /// packet mode (pipe(7): a packet's buffer ends a read; tee(2) keeps that mark).
    func peekPipeSegments(fd: Int32) throws -> (Data, Int32, [Int]) {
        // Opening /proc/PID/fd/N of a pipe opens the same pipe (fifo_open).
        let src = open("/proc/\(pid)/fd/\(fd)", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if src < 0 { throw SSIError.sys("open pipe fd \(fd) of PID \(pid)", errno: errno) }
        defer { close(src) }
        let size = Pipe.capacity(src)
        let p = try Pipe.create(flags: O_CLOEXEC | O_NONBLOCK)
        defer { close(p.read); close(p.write) }
        Pipe.setCapacity(p.write, max(size, 65536))
        var data = Data()
        var segments = [Int]()
        let n = Pipe.tee(from: src, to: p.write, count: Int(size))
        if n > 0 {
            var buf = [UInt8](repeating: 0, count: Int(n))
            var got = 0
            while got < n {
                let r = buf.withUnsafeMutableBytes { read(p.read, $0.baseAddress! + got, Int(n) - got) }
                if r <= 0 { throw SSIError(.system, "short read while copying the pipe of PID \(pid) fd \(fd) (\(got) of \(n) bytes)") }
                segments.append(r)
                got += r
            }
            data = Data(buf)
        } else if n < 0 && n != -Int(EAGAIN) {
            throw SSIError.sys("tee from pipe fd \(fd) of PID \(pid)", errno: Int32(-n))
        }
        return (data, size, segments)
    }
}

/// The pipes of an application being restarted: ssi creates each one, sets its capacity,
/// refills its bytes, and holds both ends while every process opens its own ends through
/// /proc/<ssi>/fd/N. Opening a pipe end blocks only while the other end has no opener
/// (fifo(7)), and ssi holds both, so no open can block.
final class PipeRegistry {
    private var ends: [UInt64: (r: Int32, w: Int32)] = [:]

    /// `inherited`: the application's fds that the caller replaces (external pipes); an
    /// external pipe of any other fd is made here, with no outside end.
    func create(from images: [ProcessImage], inherited: Set<Int32>) throws {
        for image in images {
            // Pipe ends in flight in queued messages are made with the others.
            let inFlight = image.fds.flatMap { ($0.socket?.datagrams ?? []).flatMap { $0.files ?? [] } }.filter { $0.kind == .pipe }
            for f in image.fds + inFlight where f.kind == .pipe && !(f.external == true && inherited.contains(f.fd)) {
                guard let id = f.pipeID, ends[id] == nil else { continue }
                let p = try Pipe.create(flags: O_CLOEXEC | O_NONBLOCK)
                ends[id] = (p.read, p.write)
                if let size = f.pipeSize, size > 0 { Pipe.setCapacity(p.write, size) }
                if let data = f.pipeData, !data.isEmpty {
                    // Packets go back one write each through an end in packet mode.
                    let packets = f.pipePackets ?? [data.count]
                    if f.pipePackets != nil { _ = fcntl(p.write, F_SETFL, O_NONBLOCK | OpenFlags.direct) }
                    guard packets.reduce(0, +) == data.count, packets.allSatisfy({ $0 > 0 }) else {
                        throw SSIError(.corrupt, "pipe \(id) of PID \(image.pid): its packets (\(packets.count)) do not add up to its \(data.count) bytes")
                    }
                    var at = 0
                    for len in packets {
                        let n = data.withUnsafeBytes { Glibc.write(p.write, $0.baseAddress! + at, len) }
                        if n != len { throw SSIError(.system, "could not refill pipe \(id) of PID \(image.pid) (\(at + max(n, 0)) of \(data.count) bytes)") }
                        at += len
                    }
                }
            }
        }
    }

    /// An fd of a pipe to a process outside the application becomes the caller's own fd
    /// `callerFD` (its stdin/stdout/stderr, or one given with --inherit-fd). The bytes the
    /// application had not read yet are put into the caller's pipe first, so they come
    /// before anything written to it later (the caller's pipe is expected empty: bytes in it
    /// already would come first). Done once per pipe.
    func external(_ f: FileDescriptorImage, callerFD: Int32, pid: Int32) throws -> String {
        let path = "/proc/\(getpid())/fd/\(callerFD)"
        var st = stat()
        if fstat(callerFD, &st) != 0 {
            throw SSIError(.notFound, "PID \(pid) fd \(f.fd) was connected to a process outside the application (\(f.path)), and fd \(callerFD) of ssi restart, which should replace it, is not open; nothing was restarted",
                           hint: "run ssi restart with fd \(callerFD) open (e.g. `\(callerFD)> file`), or without --inherit-fd \(f.fd)")
        }
        if let data = f.pipeData, !data.isEmpty, (f.flags & O_ACCMODE) != O_WRONLY, let id = f.pipeID, !refilledExternal.contains(id) {
            refilledExternal.insert(id)
            if st.st_mode & S_IFMT != S_IFIFO {
                warn("PID \(pid) fd \(f.fd): \(data.count) bytes it had not read from its pipe are lost: fd \(callerFD) of ssi restart is not a pipe")
            } else {
                // Opening a pipe for writing through /proc gives a write end of the same pipe
                // (fifo_open); O_NONBLOCK: ENXIO rather than a wait if it had no reader.
                let w = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
                let n = w < 0 ? -1 : data.withUnsafeBytes { Glibc.write(w, $0.baseAddress, $0.count) }
                if w >= 0 { close(w) }
                if n != data.count { warn("PID \(pid) fd \(f.fd): \(data.count) unread bytes could not be put back into fd \(callerFD) of ssi restart") }
            }
        }
        return path
    }
    private var refilledExternal = Set<UInt64>()

    /// ssi's own end of pipe `id`.
    func fd(_ id: UInt64, write: Bool) -> Int32? {
        guard let e = ends[id] else { return nil }
        return write ? e.w : e.r
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
