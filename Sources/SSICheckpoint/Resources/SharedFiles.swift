import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Open file descriptions shared by several fds (after dup() or fork(): one offset, one set
// of flags), found with kcmp(2) at checkpoint; restart opens each one once, in the root
// before it forks, at a reserved fd number every process then inherits.

extension ProcessDumper {
    /// Marks fds that share one open file description, within a process (dup) or across
    /// processes (fork), by comparing them with kcmp(2) KCMP_FILE among fds of the same inode.
    static func markSharedDescriptions(_ tables: inout [Int32: [FileDescriptorImage]]) {
        struct Member { var pid: Int32; var index: Int; var fd: Int32 }
        var byInode = [String: [Member]]()
        for (pid, fds) in tables {
            // A pipe's end is one open file description in every process that inherited it
            // (its O_NONBLOCK, its owner for SIGIO, the key of epoll entries are the
            // description's): restored once, as any shared description. Not one whose pipe
            // leads outside the application: each fd becomes the restarting caller's own.
            for (i, f) in fds.enumerated() where !(f.kind == .pipe && f.external == true) && !f.kind.isSocket && f.kind != .pidfd {
                var st = stat()
                guard stat("/proc/\(pid)/fd/\(f.fd)", &st) == 0 else { continue }
                // The status flags and the offset belong to the description (open(2)): fds
                // that differ in them cannot share one, and need no kcmp.
                byInode["\(st.st_dev):\(st.st_ino):\(f.flags & ~O_CLOEXEC):\(f.position)", default: []].append(Member(pid: pid, index: i, fd: f.fd))
            }
        }
        for (_, members) in byInode where members.count > 1 {
            for group in sameDescriptions(members.map { ($0.pid, $0.fd) }) where group.count > 1 {
                // Named after its first fd in (pid, fd) order, whatever order kcmp gave.
                let ids = group.map { members[$0] }
                let rep = ids.min { ($0.pid, $0.fd) < ($1.pid, $1.fd) }!
                for m in ids { tables[m.pid]![m.index].sharedID = "\(rep.pid):\(rep.fd)" }
            }
        }
    }

    /// The fds (pid, fd) of one inode grouped by open file description, as positions in
    /// `fds`. kcmp(2) KCMP_FILE orders descriptions (1 or 2: before or after, by their
    /// obfuscated addresses), so a sort by it puts each description's fds side by side:
    /// O(k log k) calls for k fds. Comparing each fd with every description found so far
    /// was O(k^2): every eventfd, timerfd, signalfd and epoll fd of a process shares the one
    /// anonymous inode, and 10,000 eventfds took 92 s of frozen time. An fd kcmp cannot
    /// compare (an error: a process gone) stays alone.
    static func sameDescriptions(_ fds: [(pid: Int32, fd: Int32)]) -> [[Int]] {
        func cmp(_ a: Int, _ b: Int) -> Int {
            Kcmp.compare(ProcessID(fds[a].pid), ProcessID(fds[b].pid), .file, UInt(fds[a].fd), UInt(fds[b].fd))
        }
        var comparable = [Int](), alone = [[Int]]()
        for i in fds.indices {
            if cmp(i, i) == 0 { comparable.append(i) } else { alone.append([i]) }
        }
        comparable.sort { cmp($0, $1) == 1 }
        var groups = [[Int]]()
        for i in comparable {
            if let last = groups.last?.last, cmp(last, i) == 0 { groups[groups.count - 1].append(i) } else { groups.append([i]) }
        }
        return groups + alone
    }
}

/// The open file descriptions that several fds share (after dup() or fork()), restored once.
final class SharedDescriptions {
    /// One representative fd image per shared description.
    let list: [FileDescriptorImage]
    /// sharedID -> position in `list`.
    let index: [String: Int]
    /// The fd number of the first one in every process; above every fd the restore uses.
    let base: Int32
    /// The first of the numbers each process keeps for the restore's own files (FDLayout),
    /// below `base`: no fd of the image uses them, in any process.
    let high: Int32

    /// Socketpairs (both ends in the application): created in the root too, each end at
    /// its own slot after the shared descriptions.
    let socketEnds: [FileDescriptorImage]
    let socketSlot: [UInt32: Int32]
    /// How many fd numbers from `base` are used.
    var count: Int { list.count + socketEnds.count }

    /// Numbers kept below `base` for each process's own files during its restore.
    static let restoreFiles: Int32 = 54

    /// `limit`: the hard RLIMIT_NOFILE the restored processes start with (ours).
    init(images: [ProcessImage], limit: Int32 = SharedDescriptions.fileLimit) {
        var list = [FileDescriptorImage]()
        var index = [String: Int]()
        var socketEnds = [FileDescriptorImage]()
        var socketSlot = [UInt32: Int32]()
        for image in images {
            for f in image.fds {
                if f.kind.isSocket, let id = f.socketID, socketSlot[id] == nil {
                    socketSlot[id] = -1
                    socketEnds.append(f)
                }
                // A shared epoll instance is built by one of its holders once every
                // process exists (ProcessRestorer.restoreLateEpolls), not in the root.
                guard let id = f.sharedID, f.kind != .epoll, index[id] == nil else { continue }
                index[id] = list.count
                list.append(f)
            }
        }
        self.list = list
        self.index = index
        high = Self.region(used: Set(images.flatMap { $0.fds.map(\.fd) }), need: Self.restoreFiles + Int32(list.count + socketEnds.count), limit: limit)
        base = high + Self.restoreFiles
        for (k, f) in socketEnds.enumerated() { socketSlot[f.socketID!] = base + Int32(list.count + k) }
        self.socketEnds = socketEnds
        self.socketSlot = socketSlot
    }
}

extension SharedDescriptions {
    /// Our hard RLIMIT_NOFILE, which the restore's processes inherit.
    static var fileLimit: Int32 {
        var r = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &r) == 0 else { return Int32.max }
        return r.rlim_max >= UInt64(Int32.max) ? Int32.max : Int32(r.rlim_max)
    }

    /// Where the restore's own fd numbers start: above every fd of the image (ten above its
    /// highest) when `need` numbers fit there under the hard limit; else, for a program whose
    /// fds reach up to its RLIMIT_NOFILE (dup2 to the top, as some servers do), the highest
    /// run of `need` numbers no fd of the image uses, below the limit (dup3(2) and F_DUPFD
    /// fail with EBADF/EINVAL at or past it).
    static func region(used: Set<Int32>, need: Int32, limit: Int32) -> Int32 {
        let preferred = max(used.max() ?? 2, 2) + 10
        if Int64(preferred) + Int64(need) <= Int64(limit) { return preferred }
        var end = limit
        for fd in used.sorted(by: >) where fd < end {
            if end - (fd + 1) >= need { return end - need }
            end = fd
        }
        if end - 3 >= need { return end - need }
        // No room: the restore fails at the first number past the limit, naming it.
        return preferred
    }
}

extension ProcessRestorer {
    /// Opens each shared description once, at `shared.base + index`, before any fork.
    func openShared(useCallerTerminal: Bool) throws {
        guard let shared, shared.count > 0 else { return }
        // Its slots lie above every fd of the image: past the fresh soft RLIMIT_NOFILE when
        // the program had raised it (rebuild raises it too, but after this).
        raiseFileLimitForRestore()
        // Sockets are built in ssi, where they can be bound, connected and filled with plain
        // calls; this process takes each one and keeps it at its slot.
        if !shared.socketEnds.isEmpty { try takeSockets(shared) }
        guard !shared.list.isEmpty else { return }
        for (i, f) in shared.list.enumerated() {
            let target = UInt64(shared.base + Int32(i))
            var fd: UInt64
            if f.kind == .tty, f.ptyIndex == nil, useCallerTerminal, let t = ProcessRestorer.callerTerminalFD() {
                fd = UInt64(t)
            } else if f.kind == .ptyMaster {
                fd = try takePTYMaster(f)
            } else if f.kind == .inotify, let fsObjects {
                fd = try fsObjects.receiveInotify(f, pid: pid, inj: inj, ssiPidFD: ssiPidFD)
            } else if f.kind == .pipe {
                guard let end = try openPipeEnd(f) else {
                    throw SSIError(.corrupt, "fd \(f.fd) shared by several processes is an end of pipe \(f.pipeID.map(String.init) ?? "with no id"), which the snapshot does not hold",
                                   hint: "restart another version")
                }
                fd = end
            } else if f.kind == .eventfd || f.kind == .timerfd || f.kind == .signalfd { // no path to open
                fd = try createAnonInode(f)
            } else if f.kind == .mqueue {
                // A message queue kept across fork (its name is in the queue's file system,
                // not a path to open).
                fd = try openMessageQueue(f)
            } else if f.kind == .namespace {
                fd = try openNamespace(f)
            } else if f.kind == .tty && f.ttyHungUp == true && !useCallerTerminal {
                fd = try hungUpTerminal(f)
            } else if f.kind == .directory && f.removedDirectoryMode != nil {
                fd = try reopenRemovedDirectory(f, who: "PID \(f.sharedID?.split(separator: ":").first.map(String.init) ?? "?") fd \(f.fd)")
            } else if f.kind == .fanotify {
                // A group shared by dup or fork: made by ssi with its marks, then taken.
                let mine = try makeFanotifyGroup(f, pid: pid)
                defer { close(mine) }
                fd = try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "fanotify fd \(f.fd)")
            } else {
                // An unlinked FIFO has no path but ssi's fd on it; an unlinked file (or memfd)
                // is opened where DeletedFiles made it again (Python's multiprocessing shares
                // its heap that way: a /dev/shm file unlinked at once, its fd inherited by
                // every worker).
                let path = f.fifoDeleted == true ? (f.fifoID.flatMap { fsObjects?.fifoPath($0) } ?? f.path)
                    : f.deletedFileID.flatMap { deletedFiles?.path($0) } ?? (f.kind == .tty ? ptys?.path(f) : nil) ?? f.path
                fd = try reopen(f, path: path, who: "PID \(f.sharedID?.split(separator: ":").first.map(String.init) ?? "?") fd \(f.fd)")
            }
            try inj.call("dup3 shared", .dup3, fd, target, 0)
            try restoreOffset(f, fd: target)
            if !(f.kind == .tty && useCallerTerminal) { try inj.call("close", .close, fd) }
        }
    }
}
