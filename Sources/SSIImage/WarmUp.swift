import Foundation

/// A daemon's first migration took 5-12 ms longer than the next ones, inside the
/// application's freeze (`ssi-bench migrate --sizes 0`: 34.7, 25.1, 27.0 ms for each node's
/// first move, then 18.4-22.3): the first JSON encoding of a process image on the source and
/// its first decoding on the target pay the Swift runtime's one-time costs for every type
/// they meet (protocol conformance lookups scan the binary's conformance records, generic
/// metadata is instantiated; perf showed swift_conformsToProtocol...). `warmUp` pays them at
/// the daemon's start instead: a process image with one of each part a snapshot has (areas
/// with page runs, threads with registers and scheduling, signal actions, fds of the common
/// kinds, a TCP socket's state) encoded as a core file is, with its blobs, and decoded again.
public enum SnapshotWarmUp {
    /// True when the image came back as it went (the round trip is checked, so that the
    /// warm-up cannot silently stop exercising the decoder).
    @discardableResult
    public static func run() -> Bool {
        var image = ProcessImage(pid: 2)
        image.pagesFile = "pages-2.img"
        var anon = VMA(start: 0x10000, end: 0x12000, read: true, write: true, exec: false, shared: false,
                       kind: .anonymous, name: "[heap]", path: nil, fileOffset: 0, vmFlags: ["rd", "wr", "mr"])
        anon.pages = [PageRun(address: 0x10000, count: 2, fileOffset: 0)]
        let file = VMA(start: 0x20000, end: 0x21000, read: true, write: false, exec: true, shared: false,
                       kind: .file, name: "/bin/true", path: "/bin/true", fileOffset: 0, vmFlags: ["rd", "ex"])
        // Enough runs to be packed into the blob file (PageRuns, format 12), as a pre-copied
        // process's are.
        var packed = VMA(start: 0x100000, end: 0x200000, read: true, write: true, exec: false, shared: false,
                         kind: .anonymous, name: "", path: nil, fileOffset: 0, vmFlags: ["rd", "wr", "mr"])
        packed.pages = (0..<UInt64(PageRuns.packedFrom)).map { PageRun(address: 0x100000 + $0 * 0x2000, count: 1, fileOffset: 0x2000 + $0 * 0x1000) }
        image.vmas = [anon, file, packed]
        var thread = ThreadImage(tid: 2)
        thread.registers = ["rip": 1, "rsp": 2]
        thread.xstate = Data(repeating: 0, count: 64)
        thread.pending = [Data(repeating: 1, count: 128)]
        thread.scheduling = ThreadScheduling(nice: 0, policy: 0, priority: 0, cpus: [3], timerSlackNs: 50_000, ioPriority: 0)
        thread.name = "warm"
        image.threads = [thread]
        image.sigactions = [SigAction(signal: 10, handler: 1, flags: 0, restorer: 0, mask: 0)]
        image.rlimits = [RLimit(resource: 7, cur: 1024, max: 4096)]
        var pipe = FileDescriptorImage(fd: 3, kind: .pipe, path: "pipe:[1]", flags: 0, closeOnExec: false, position: 0)
        pipe.pipeID = 1
        pipe.pipeData = Data(repeating: 2, count: 16)
        var tcp = FileDescriptorImage(fd: 4, kind: .tcpSocket, path: "socket:[2]", flags: 2, closeOnExec: true, position: 0)
        tcp.socketID = 2
        tcp.socket = SocketImage(family: 2, type: 1, state: .connected)
        image.fds = [FileDescriptorImage(fd: 0, kind: .regular, path: "/dev/null", flags: 0, closeOnExec: false, position: 0),
                     FileDescriptorImage(fd: 1, kind: .tty, path: "/dev/pts/0", flags: 2, closeOnExec: false, position: 0),
                     pipe, tcp,
                     FileDescriptorImage(fd: 5, kind: .eventfd, path: "anon_inode:[eventfd]", flags: 2, closeOnExec: true, position: 0),
                     FileDescriptorImage(fd: 6, kind: .epoll, path: "anon_inode:[eventpoll]", flags: 2, closeOnExec: true, position: 0)]
        let sink = BlobSink()
        let enc = SnapshotFormat.encoder(compact: true)
        enc.userInfo[Blobs.key] = sink
        guard let json = try? enc.encode(image) else { return false }
        let dec = JSONDecoder()
        dec.userInfo[Blobs.key] = BlobSource(bytes: sink.bytes, name: "blobs-2.img")
        guard let back = try? dec.decode(ProcessImage.self, from: json) else { return false }
        let entry = FileEntry(name: "core-2.json", size: UInt64(json.count), crc32c: 0)
        guard let manifest = try? enc.encode(entry), (try? dec.decode(FileEntry.self, from: manifest)) == entry else { return false }
        return back.pid == image.pid && back.vmas.count == 3 && back.vmas[0].pages.count == 1 && back.vmas[2] == packed && back.threads.first?.registers == thread.registers
            && back.fds.count == image.fds.count && back.fds[2].pipeData == pipe.pipeData && back.fds[3].socket?.state == .connected
    }
}
