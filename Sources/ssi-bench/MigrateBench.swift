import Foundation
import SSILocalCluster
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench migrate`: what a migration costs the application, measured by the application
/// (issue 17). On `ssi cluster up --nodes 3`, frozenmeter (Tests/Fixtures/frozenmeter.c) runs
/// as a cluster application on node 1 with SIZE MiB of self-checking random pages, rewriting
/// about DIRTY MB/s of them, and keeps in a shared stats file the longest gap its own
/// CLOCK_MONOTONIC loop saw. It is migrated 1 -> 2 -> 3 -> 1; each move reports that gap (the
/// frozen time as the application saw it, from before the move until its pages are all in
/// place on the target: a fault the lazy fill serves late counts too), the total time
/// `ssi migrate` took, the time the fill took after the resume, the bytes
/// node T's interface received, and the time the same bytes take raw over the same link
/// (a TCP stream from node S to node T), for the "total <= 1.5 x raw" target. After the
/// moves the application checks every page (CHECK PASS).
struct MigrateBenchmark: RunsSSI {
    static let usage = "migrate [--sizes 0,256,1024] [--dirty MB_PER_S] [--moves N] [--sleep-us N]"
    var sizes: [Int], dirtyMBps: Int, moves: Int
    /// The meter's sleep between clock readings (0: it spins, one CPU busy all along; with
    /// N, a gap is what exceeds N microseconds, as `ssi-bench checkpoint` measures).
    var sleepMicroseconds: Int

    init(args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        sizes = try o.sizes("--sizes", default: [0, 256, 1024])
        dirtyMBps = try o.int("--dirty", default: 20, in: 0...100_000)
        moves = try o.int("--moves", default: 3, in: 1...1000)
        sleepMicroseconds = try o.int("--sleep-us", default: 0, in: 0...10_000_000)
        try o.finish()
    }

    struct Move { var size: Int; var from: Int; var to: Int; var frozen: Double; var after: Double; var total: Double; var fill: Double; var bytes: UInt64; var raw: Double; var write: Double }

    func run() throws {
        let dir = "/tmp/ssi-bench-migrate"
        try BenchArgs.prepare("ssi-bench migrate", directory: dir)
        let meter = try BenchProcess.compile("frozenmeter", into: dir)
        let lc = LocalCluster()
        try ssi(["cluster", "up", "--nodes", "3"])
        // SSI_BENCH_KEEP=1 leaves the cluster up afterwards, to look at its logs.
        defer { if ProcessInfo.processInfo.environment["SSI_BENCH_KEEP"] == nil { _ = try? ssi(["cluster", "down"]); Proc.reapAll() } }
        // The bench moves the application itself: load balancing would move the busy meter
        // too (and a migration of it under way refuses the bench's own).
        let none = try noScheduling(in: dir)
        for k in 1...3 { try ssi(["sched", "load", none, "--node", "\(k)"]) }
        // 4 KiB pages per millisecond for DIRTY MB/s.
        let pagesPerMs = max(0, dirtyMBps * 1_000_000 / 4096 / 1000)
        print("frozenmeter as a cluster application, dirtying \(dirtyMBps) MB/s (\(pagesPerMs) pages/ms), "
              + (sleepMicroseconds == 0 ? "spinning on its clock" : "sleeping \(sleepMicroseconds) µs between clock readings")
              + "; \(moves) moves per size; load \(loadAverage())")
        var all: [Move] = []
        for size in sizes {
            let stats = "\(dir)/stats-\(size)"
            unlink(stats)
            let out = try ssi(["run", "--node", "1", "-b", "--log", "--", meter, "\(size)", stats, "\(pagesPerMs)"] + (sleepMicroseconds > 0 ? ["\(sleepMicroseconds)"] : []))
            guard let app = out.split(separator: " ").last.map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }) else { throw SSIError(.system, "no application id in '\(out)'") }
            for _ in 0..<1200 where !((try? ssi(["logs", app])) ?? "").contains("READY") { usleep(100_000) }
            try ssi(["caps", app, "+CAN_MIGRATE"])
            usleep(300_000)
            var node = 1
            for _ in 0..<moves {
                let target = node % 3 + 1
                writeGap(stats, 0)
                let rx0 = rxBytes(lc, target)
                let t0 = Date()
                try ssi(["migrate", app, "\(target)"])
                let total = Date().timeIntervalSince(t0)
                let resumed = monotonicNanoseconds()
                // Until every page is in place on the target (its lazy fill), from the resume.
                let fill = fillSeconds(app: app)
                let bytes = rxBytes(lc, target) &- rx0
                usleep(100_000)
                let frozen = Double(readGap(stats)) / 1e9
                // Of it, the longest stretch of a gap after `ssi migrate` returned: the
                // application waiting, on the target, for pages still to come in (a gap that
                // began in the freeze counts from the return on).
                let after = Double(longGaps(stats).filter { $0.end > resumed }.map { min($0.gap, $0.end - resumed) }.max() ?? 0) / 1e9
                let raw = try rawTransfer(lc, from: node, to: target, bytes: bytes, dir: dir)
                let write = freshWrite(bytes: bytes, into: "\(lc.dir)/node\(target)/chkpt")
                all.append(Move(size: size, from: node, to: target, frozen: frozen, after: after, total: total, fill: fill, bytes: bytes, raw: raw, write: write))
                node = target
            }
            try ssi(["kill", app, "--signal", "USR2"])
            usleep(UInt32(min(60, 2 + size / 64)) * 1_000_000)
            let log = (try? ssi(["logs", app])) ?? ""
            print("size \(size) MiB: memory after \(moves) moves: \(log.contains("CHECK PASS") ? "CHECK PASS" : "NOT CHECKED: \(log.suffix(200))")")
            _ = try? ssi(["kill", app, "--signal", "KILL"])
        }
        print("")
        print("size MiB  move    frozen (app) ms  after resume ms  total s   fill s   MiB received   raw s   total/raw   write s")
        for m in all {
            print(String(format: "%8d  %d -> %d  %15.1f  %15.1f  %7.2f  %6.2f  %13.1f  %6.2f  %9.2f  %8.2f", m.size, m.from, m.to, m.frozen * 1000, m.after * 1000, m.total,
                         m.fill, Double(m.bytes) / 1048576, m.raw, m.raw > 0 ? m.total / m.raw : 0, m.write))
        }
        print("frozen: the application's longest gap from before `ssi migrate` until its pages are all in place; after resume: "
              + "the longest stretch of those gaps after `ssi migrate` returned (waiting for pages still coming in); ")
        print("total: `ssi migrate`, to the resume on T; fill: after the resume, until every page is in place on T (no area "
              + "of its processes still marked `um` in /proc/PID/smaps: LazyMemory); raw: the same bytes over one TCP connection "
              + "from S to T; write: the same bytes written into a new file of T's snapshot directory (what T must do to keep "
              + "the image; on a VM, pages the host has not backed yet make it slow)")
    }

    func loadAverage() -> String { ((try? ProcFS.read("/proc/loadavg")) ?? "").split(separator: " ").prefix(3).joined(separator: " ") }

    func readGap(_ path: String) -> UInt64 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var v: UInt64 = 0
        _ = pread(fd, &v, 8, 0)
        return v
    }

    /// frozenmeter's last 128 gaps of 5 ms or more: where each ended (CLOCK_MONOTONIC ns)
    /// and how long it was.
    func longGaps(_ path: String) -> [(end: UInt64, gap: UInt64)] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var page = [UInt64](repeating: 0, count: 512)
        guard pread(fd, &page, 4096, 0) == 4096 else { return [] }
        let n = Int(page[4])
        return (max(0, n - 128)..<n).map { k in (page[5 + 2 * (k % 128)], page[6 + 2 * (k % 128)]) }
    }

    func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    func writeGap(_ path: String, _ value: UInt64) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var v = value
        _ = pwrite(fd, &v, 8, 0)
    }

    /// Bytes received by node k's interface, from /proc/net/dev as node k's namespace shows
    /// it (/sys would show this namespace's, since nsenter does not remount it).
    func rxBytes(_ lc: LocalCluster, _ k: Int) -> UInt64 {
        let r = try? Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(k))", "--", "cat", "/proc/net/dev"], check: false)
        for line in (r?.1 ?? "").split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("eth0:") {
            return line.split(separator: ":")[1].split(separator: " ").first.flatMap { UInt64($0) } ?? 0
        }
        return 0
    }

    /// Seconds from now until no process of `app` on its node has an area its node's daemon
    /// is still filling (userfaultfd-registered: `um` in VmFlags, /proc/PID/smaps); 0 when
    /// none was lazy. Read here: the local cluster's nodes share this machine's /proc.
    func fillSeconds(app: String) -> Double {
        let t0 = Date()
        guard let out = try? ssi(["ps", "--json"]),
              let rows = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]],
              let row = rows.first(where: { "\($0["app"] ?? "")" == app }), let root = (row["pid"] as? NSNumber)?.int32Value else { return 0 }
        func filling() -> Bool {
            processTree(root).contains { pid in
                ((try? ProcFS.read("/proc/\(pid)/smaps")) ?? "").split(separator: "\n").contains { $0.hasPrefix("VmFlags:") && $0.split(separator: " ").contains("um") }
            }
        }
        guard filling() else { return 0 }
        // smaps walks the page tables of every area (25 ms of CPU for 1 GiB): not too often
        // while the fill runs, or the bench's own reads make the gaps it measures.
        while filling() && Date().timeIntervalSince(t0) < 120 { usleep(200_000) }
        return Date().timeIntervalSince(t0)
    }

    /// Seconds to write `bytes` into a new file of `dir` (no fsync, as a migration's image
    /// is written), then removed: the floor the target's side of a migration has here.
    func freshWrite(bytes: UInt64, into dir: String) -> Double {
        guard bytes > 0 else { return 0 }
        let path = "\(dir)/.ssi-bench-write"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return 0 }
        defer { close(fd); unlink(path) }
        let chunk = 4 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        // Not zeros: bytes like the pages of an image.
        for i in 0..<chunk { buf[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        let t0 = Date()
        var left = bytes
        while left > 0 {
            let n = Int(min(UInt64(chunk), left))
            // In the engine's pieces (largestFileWrite), as the target writes its image.
            guard (try? writeAll(fd, UnsafeRawBufferPointer(start: buf.baseAddress, count: n), what: path, whenFull: "")) != nil else { return 0 }
            left -= UInt64(n)
        }
        return Date().timeIntervalSince(t0)
    }

    /// Seconds to send `bytes` over one TCP connection from node `from` to node `to`.
    func rawTransfer(_ lc: LocalCluster, from: Int, to: Int, bytes: UInt64, dir: String) throws -> Double {
        guard bytes > 0 else { return 0 }
        let sink = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('0.0.0.0',7600));s.listen(1)\nc,_=s.accept()\nwhile c.recv(1<<20): pass\n"
        let send = "import socket,sys,time\nn=int(sys.argv[2]);b=b'x'*(1<<20);c=socket.create_connection((sys.argv[1],7600))\nt=time.monotonic()\nwhile n>0:\n  k=min(n,len(b));c.sendall(b[:k]);n-=k\nc.shutdown(socket.SHUT_WR);c.recv(1)\nprint(time.monotonic()-t)\n"
        try sink.write(toFile: "\(dir)/sink.py", atomically: true, encoding: .utf8)
        try send.write(toFile: "\(dir)/send.py", atomically: true, encoding: .utf8)
        let server = try Proc.spawn(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(to))", "--", "python3", "\(dir)/sink.py"], log: "\(dir)/sink.log")
        defer { kill(server, SIGKILL); var st: Int32 = 0; waitpid(server, &st, 0) }
        usleep(300_000)
        let r = try Proc.run(["nsenter", "--net=/run/netns/\(lc.nodeNamespace(from))", "--", "python3", "\(dir)/send.py", lc.nodeHost(to, netns: true), "\(bytes)"], check: false)
        return Double(r.1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

}
