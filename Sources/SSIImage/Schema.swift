import Foundation

/// The snapshot format, version 4. docs/snapshot-format.md describes it for humans; these
/// types are the single definition the writer and the reader share.
///
/// A snapshot is a directory `<appid>/v<N>/` holding:
///  - `manifest.json`: what this is, and every other file with its size and CRC-32C;
///  - `manifest.crc`: the CRC-32C of manifest.json, in hex;
///  - `core-<pid>.json`: one process's state except memory contents;
///  - `pages-<pid>.img`: that process's saved pages, concatenated, page aligned.
public enum SnapshotFormat {
    public static let magic = "swiftssi-snapshot"
    /// 2 added process trees, threads and task states (optional fields: version 1 files read as before).
    /// 3 added sockets beyond socketpairs (FileDescriptorImage.socket) and the tcpSocket kind.
    /// 4 (fidelity, issue 10) added optional fields to the process and fd records only (and the
    ///   fd kinds namespace, fanotify, udpSocket): docs/snapshot-format.md, "Version 4", lists them.
    /// apps (no bump, optional field): ProcessImage.pidNamespaceInit, ids inside the application's PID namespace.
    /// 7 (ops, issue 16) added Manifest.pooled: pages files kept in the application's page pool
    ///   (`<appid>/pool/pages.img`), the version holding only their maps (`pages-<pid>.map`).
    /// 8 (issue 17) writes page runs as arrays `[address, count, fileOffset]` (PageRun).
    /// 9 (issue 17) writes an area's runs, when it has many, packed: one base64 string of
    ///   little-endian (address, count, fileOffset) triples (VMA.pages, PageRuns).
    public static let version = 9
    public static let readable: ClosedRange<Int> = 1...9
    public static let pageSize: UInt64 = 4096
}

public struct Manifest: Codable, Sendable, Equatable {
    public var format: String
    public var formatVersion: Int
    public var appID: Int32
    public var version: Int
    public var description: String
    public var date: String
    public var arch: String
    public var kernel: String
    public var processes: [Int32]
    public var files: [FileEntry]
    /// Version 7: pages files whose pages are in the application's page pool (their maps are
    /// in `files`); nil when every file is in the version.
    public var pooled: [PooledFile]?

    public init(appID: Int32, version: Int, description: String, date: String, arch: String, kernel: String,
                processes: [Int32], files: [FileEntry]) {
        self.format = SnapshotFormat.magic
        self.formatVersion = SnapshotFormat.version
        self.appID = appID; self.version = version; self.description = description; self.date = date
        self.arch = arch; self.kernel = kernel; self.processes = processes; self.files = files
    }

    /// Bytes this version added on disk when it was written: its own files and the pool
    /// pages it was the first to hold.
    public var addedBytes: UInt64 {
        files.reduce(0) { $0 + $1.size } + (pooled ?? []).reduce(0) { $0 + $1.addedBytes }
    }

    /// Bytes of the snapshot as the engine wrote it (every pages file whole, no map).
    public var totalBytes: UInt64 {
        let maps = Set((pooled ?? []).map(\.map))
        return files.filter { !maps.contains($0.name) }.reduce(0) { $0 + $1.size } + (pooled ?? []).reduce(0) { $0 + $1.size }
    }
}

/// Version 7: a pages file kept in the page pool (docs/snapshot-format.md, "Version 7").
public struct PooledFile: Codable, Sendable, Equatable {
    /// The pages file the core file names (`pages-<pid>.img`).
    public var name: String
    /// Its size and CRC-32C as the engine wrote it (what a copy to another node must match).
    public var size: UInt64
    public var crc32c: UInt32
    /// The map in the version directory: for each page, its pool slot and content hash.
    public var map: String
    /// Bytes of pages this version wrote to the pool (their content was not there yet).
    public var addedBytes: UInt64
    public init(name: String, size: UInt64, crc32c: UInt32, map: String, addedBytes: UInt64) {
        (self.name, self.size, self.crc32c, self.map, self.addedBytes) = (name, size, crc32c, map, addedBytes)
    }
}

public struct FileEntry: Codable, Sendable, Equatable {
    public var name: String
    public var size: UInt64
    public var crc32c: UInt32
    public init(name: String, size: UInt64, crc32c: UInt32) { self.name = name; self.size = size; self.crc32c = crc32c }
}

/// One process (thread group).
public struct ProcessImage: Codable, Sendable {
    public var pid: Int32
    public var ppid: Int32
    public var pgid: Int32
    public var sid: Int32
    public var comm: String
    public var exe: String
    public var credentials: Credentials
    public var umask: UInt32
    public var cwd: String
    public var root: String
    public var personality: UInt32
    public var parentDeathSignal: Int32
    public var dumpable: Int32
    public var rlimits: [RLimit]
    public var mm: MMFields
    public var vmas: [VMA]
    public var pagesFile: String
    public var fds: [FileDescriptorImage]
    public var sigactions: [SigAction]
    public var sharedPending: [Data]
    public var threads: [ThreadImage]
    public var oomScoreAdj: Int32
    /// Version 2: the signal sent to the parent when this process ends (SIGCHLD usually).
    public var exitSignal: Int32?
    /// Version 2: set for a zombie (exited, not yet reaped): its wait status, restored as is.
    public var zombieStatus: Int32?
    /// Version 2: stopped by job control (SIGSTOP/SIGTSTP) at checkpoint time.
    public var jobStopped: Bool?
    /// Set on the root of an application that has a PID namespace of its own (a cluster
    /// application: ssi-init is its process 1). Every PID, PGID, SID and thread id of the
    /// snapshot is then the one seen inside that namespace, and restart creates a new
    /// namespace for them (optional field, apps: no format bump).
    public var pidNamespaceInit: Bool?
    /// Version 2: PR_SET_CHILD_SUBREAPER.
    public var childSubreaper: Bool?
    /// Version 9: PR_SET_NO_NEW_PRIVS was set (/proc/PID/status NoNewPrivs); nil when not.
    public var noNewPrivs: Bool?
    /// Version 9: PR_GET_SECUREBITS of the main thread (SECBIT_KEEP_CAPS, NO_SETUID_FIXUP,
    /// NOROOT and their locks); nil when none is set.
    public var securebits: UInt32?
    /// Version 2: setitimer(2) timers (ITIMER_REAL, _VIRTUAL, _PROF) that are armed.
    public var intervalTimers: [IntervalTimer]?
    /// Version 2: POSIX timers (timer_create(2)), with their ids.
    public var posixTimers: [PosixTimer]?
    /// Version 2: files this process uses that have no name any more (unlinked files, memfd),
    /// whose content is saved in the snapshot.
    public var deletedFiles: [DeletedFile]?

    // MARK: inotify/fifo (version 3)

    /// Created by its parent with CLONE_FILES (one fd table for both) or CLONE_FS (one cwd,
    /// root and umask), found with kcmp(2) KCMP_FILES / KCMP_FS.
    public var sharesFilesWithParent: Bool?
    public var sharesFSWithParent: Bool?

    // MARK: fidelity (version 4)

    /// prctl(PR_SET_THP_DISABLE) was set ("THP_enabled: 0" in /proc/PID/status).
    public var thpDisabled: Bool?
    /// The current directory had been removed (cwd reads "PATH (deleted)"): its mode.
    public var cwdDeletedMode: UInt32?
    /// A job-stopped process: the signal that stopped it (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU)
    /// while its parent had not been told; 0 once a wait(2) had reported the stop.
    public var stopSignal: Int32?
    /// The index N of /dev/pts/N when the controlling terminal is the slave of a pair inside
    /// the application; for a session leader, its terminal's foreground process group.
    public var controllingPTY: Int32?
    /// The thread group's leader had exited while its other threads ran (a zombie leader,
    /// pthread_exit in main): `threads` lacks it, and restart makes it exit again.
    public var leaderExited: Bool?
    public var foregroundGroup: Int32?
    /// Namespaces the application made for itself (unshare(2), clone(2) CLONE_NEW*) that
    /// restart makes again; nil: the process shares ssi's.
    public var namespaces: ProcessNamespaces?

    public init(pid: Int32) {
        self.pid = pid; ppid = 0; pgid = 0; sid = 0; comm = ""; exe = ""; credentials = Credentials()
        umask = 0o022; cwd = "/"; root = "/"; personality = 0; parentDeathSignal = 0; dumpable = 1; rlimits = []
        mm = MMFields(); vmas = []; pagesFile = ""; fds = []; sigactions = []; sharedPending = []; threads = []; oomScoreAdj = 0
    }
}

/// The namespaces of one process that are not ssi's. Each is named by its inode at
/// checkpoint time (the number in /proc/PID/ns/KIND), so that processes sharing one
/// namespace share it again after restart.
public struct ProcessNamespaces: Codable, Sendable, Equatable {
    public var uts: UTSNamespace?
    /// Compared with the root's network namespace (the launcher's choice, not saved).
    public var net: NetNamespace?
    public var ipc: IPCNamespace?
    public init(uts: UTSNamespace? = nil, net: NetNamespace? = nil, ipc: IPCNamespace? = nil) { self.uts = uts; self.net = net; self.ipc = ipc }
    public var isEmpty: Bool { uts == nil && net == nil && ipc == nil }
}

/// An IPC namespace (ipc_namespaces(7)): its limits (/proc/sys/kernel msg*, sem, shm*, and
/// /proc/sys/fs/mqueue, by path under /proc/sys) and its SysV objects, each saved in a file
/// of the snapshot in SSIIPC's format.
public struct IPCNamespace: Codable, Sendable, Equatable {
    public struct Object: Codable, Sendable, Equatable {
        /// "msg", "sem" or "shm" (IPCKind).
        public var kind: String
        public var id: Int32
        public var file: String
        public init(kind: String, id: Int32, file: String) { self.kind = kind; self.id = id; self.file = file }
    }
    public var id: UInt64
    public var limits: [String: String]
    public var objects: [Object]
    public init(id: UInt64, limits: [String: String], objects: [Object]) { self.id = id; self.limits = limits; self.objects = objects }
}

/// A network namespace (network_namespaces(7)) with only its loopback interface: whether
/// "lo" is up, and its per-namespace sysctls (by their paths under /proc/sys).
/// Its sockets carry its id (SocketImage.netns).
public struct NetNamespace: Codable, Sendable, Equatable {
    public var id: UInt64
    public var loopbackUp: Bool
    public var sysctls: [String: String]
    public init(id: UInt64, loopbackUp: Bool, sysctls: [String: String]) { self.id = id; self.loopbackUp = loopbackUp; self.sysctls = sysctls }
}

/// A UTS namespace (uts_namespaces(7)): its host and NIS domain names.
public struct UTSNamespace: Codable, Sendable, Equatable {
    public var id: UInt64
    public var hostname: String
    public var domainname: String
    public init(id: UInt64, hostname: String, domainname: String) { self.id = id; self.hostname = hostname; self.domainname = domainname }
}

/// One thread's capability sets, as /proc/PID/task/TID/status shows them (CapInh, CapPrm,
/// CapEff, CapBnd, CapAmb): bit N is capability N.
public struct CapabilitySets: Codable, Sendable, Equatable {
    public var inheritable: UInt64
    public var permitted: UInt64
    public var effective: UInt64
    public var bounding: UInt64
    public var ambient: UInt64
    public init(inheritable: UInt64, permitted: UInt64, effective: UInt64, bounding: UInt64, ambient: UInt64) {
        self.inheritable = inheritable; self.permitted = permitted; self.effective = effective
        self.bounding = bounding; self.ambient = ambient
    }
}

public struct Credentials: Codable, Sendable, Equatable {
    /// real, effective, saved, filesystem
    public var uids: [UInt32] = [0, 0, 0, 0]
    public var gids: [UInt32] = [0, 0, 0, 0]
    public var groups: [UInt32] = []
    public init() {}
}

public struct RLimit: Codable, Sendable, Equatable {
    public var resource: Int32
    public var cur: UInt64
    public var max: UInt64
    public init(resource: Int32, cur: UInt64, max: UInt64) { self.resource = resource; self.cur = cur; self.max = max }
}

/// The mm_struct fields restored with prctl(PR_SET_MM, PR_SET_MM_MAP) (prctl(2)).
public struct MMFields: Codable, Sendable, Equatable {
    public var startCode: UInt64 = 0, endCode: UInt64 = 0, startData: UInt64 = 0, endData: UInt64 = 0
    public var startBrk: UInt64 = 0, brk: UInt64 = 0, startStack: UInt64 = 0
    public var argStart: UInt64 = 0, argEnd: UInt64 = 0, envStart: UInt64 = 0, envEnd: UInt64 = 0
    public var auxv: [UInt64] = []
    public init() {}
}

/// An area's page runs in a core file: a JSON array of `[address, count, fileOffset]` while
/// they are few (a person reads them), packed into one base64 string of little-endian u64
/// triples from `packedFrom` runs on (format version 9). A pre-copied process has one run
/// per page written during the rounds, tens of thousands: encoding and decoding them as
/// JSON arrays took 60 and 66 ms of a 1 GiB migration's frozen time.
public enum PageRuns {
    public static let packedFrom = 64

    static func encode(_ runs: [PageRun], to c: inout KeyedEncodingContainer<VMA.CodingKeys>, forKey key: VMA.CodingKeys) throws {
        guard runs.count >= packedFrom else { try c.encode(runs, forKey: key); return }
        var bytes = [UInt8](repeating: 0, count: runs.count * 24)
        bytes.withUnsafeMutableBytes { b in
            for (i, r) in runs.enumerated() {
                b.storeBytes(of: r.address.littleEndian, toByteOffset: i * 24, as: UInt64.self)
                b.storeBytes(of: r.count.littleEndian, toByteOffset: i * 24 + 8, as: UInt64.self)
                b.storeBytes(of: r.fileOffset.littleEndian, toByteOffset: i * 24 + 16, as: UInt64.self)
            }
        }
        try c.encode(Data(bytes).base64EncodedString(), forKey: key)
    }

    static func decode(from c: KeyedDecodingContainer<VMA.CodingKeys>, forKey key: VMA.CodingKeys) throws -> [PageRun]? {
        guard c.contains(key), !(try c.decodeNil(forKey: key)) else { return nil }
        guard let text = try? c.decode(String.self, forKey: key) else { return try c.decode([PageRun].self, forKey: key) }
        guard let data = Data(base64Encoded: text), data.count % 24 == 0 else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "packed page runs are not base64 of 24-byte records")
        }
        return data.withUnsafeBytes { b in
            (0..<(data.count / 24)).map { i in
                PageRun(address: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24, as: UInt64.self)),
                        count: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24 + 8, as: UInt64.self)),
                        fileOffset: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24 + 16, as: UInt64.self)))
            }
        }
    }
}

/// One virtual memory area, as /proc/PID/maps and smaps describe it.
public struct VMA: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case anonymous, file, vdso, vvar, vvarVclock = "vvar_vclock", sysvShm = "sysv_shm"
    }
    public var start: UInt64
    public var end: UInt64
    public var read: Bool, write: Bool, exec: Bool, shared: Bool
    public var kind: Kind
    /// "[heap]", "[stack]", a file path, "/SYSV0000002a (deleted)"...
    public var name: String
    public var path: String?
    public var fileOffset: UInt64
    /// smaps VmFlags we restore: gd (grows down), dc (dontfork), dd (dontdump), hg/nh (huge page advice), wf (wipe on fork).
    public var vmFlags: [String]
    public var sysvShmID: Int32?
    /// Version 2: set when the mapped file was unlinked or is a memfd: the DeletedFile id.
    public var deletedFileID: String?
    /// Version 2: the same area exists in the parent, and the pages the two still share
    /// copy-on-write are not saved here: restart forks this process from its restored parent
    /// and keeps the area, so they stay shared. `pages` are this process's own pages;
    /// `dropPages` are pages the parent has and this process does not (zero or file content).
    public var inherited: Bool?
    public var dropPages: [PageRun]?
    /// Saved pages: runs of consecutive pages and where they start in the pages file.
    public var pages: [PageRun]

    public init(start: UInt64, end: UInt64, read: Bool, write: Bool, exec: Bool, shared: Bool, kind: Kind, name: String,
                path: String?, fileOffset: UInt64, vmFlags: [String]) {
        self.start = start; self.end = end; self.read = read; self.write = write; self.exec = exec; self.shared = shared
        self.kind = kind; self.name = name; self.path = path; self.fileOffset = fileOffset; self.vmFlags = vmFlags
        self.sysvShmID = nil; self.pages = []
    }

    public enum CodingKeys: String, CodingKey {
        case start, end, read, write, exec, shared, kind, name, path, fileOffset, vmFlags, sysvShmID, deletedFileID, inherited, dropPages, pages
    }

    /// As the synthesized coding (absent optionals left out), the runs as PageRuns says.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        start = try c.decode(UInt64.self, forKey: .start)
        end = try c.decode(UInt64.self, forKey: .end)
        read = try c.decode(Bool.self, forKey: .read)
        write = try c.decode(Bool.self, forKey: .write)
        exec = try c.decode(Bool.self, forKey: .exec)
        shared = try c.decode(Bool.self, forKey: .shared)
        kind = try c.decode(Kind.self, forKey: .kind)
        name = try c.decode(String.self, forKey: .name)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        fileOffset = try c.decode(UInt64.self, forKey: .fileOffset)
        vmFlags = try c.decode([String].self, forKey: .vmFlags)
        sysvShmID = try c.decodeIfPresent(Int32.self, forKey: .sysvShmID)
        deletedFileID = try c.decodeIfPresent(String.self, forKey: .deletedFileID)
        inherited = try c.decodeIfPresent(Bool.self, forKey: .inherited)
        dropPages = try PageRuns.decode(from: c, forKey: .dropPages)
        guard let p = try PageRuns.decode(from: c, forKey: .pages) else {
            throw DecodingError.keyNotFound(CodingKeys.pages, .init(codingPath: c.codingPath, debugDescription: "an area without its pages"))
        }
        pages = p
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(start, forKey: .start)
        try c.encode(end, forKey: .end)
        try c.encode(read, forKey: .read)
        try c.encode(write, forKey: .write)
        try c.encode(exec, forKey: .exec)
        try c.encode(shared, forKey: .shared)
        try c.encode(kind, forKey: .kind)
        try c.encode(name, forKey: .name)
        try c.encodeIfPresent(path, forKey: .path)
        try c.encode(fileOffset, forKey: .fileOffset)
        try c.encode(vmFlags, forKey: .vmFlags)
        try c.encodeIfPresent(sysvShmID, forKey: .sysvShmID)
        try c.encodeIfPresent(deletedFileID, forKey: .deletedFileID)
        try c.encodeIfPresent(inherited, forKey: .inherited)
        if let dropPages { try PageRuns.encode(dropPages, to: &c, forKey: .dropPages) }
        try PageRuns.encode(pages, to: &c, forKey: .pages)
    }
}

public struct PageRun: Codable, Sendable, Equatable {
    public var address: UInt64
    public var count: UInt64
    /// Byte offset in the pages file.
    public var fileOffset: UInt64
    public init(address: UInt64, count: UInt64, fileOffset: UInt64) { self.address = address; self.count = count; self.fileOffset = fileOffset }

    enum CodingKeys: String, CodingKey { case address, count, fileOffset }

    /// Written as `[address, count, fileOffset]` since format version 8: a process's index
    /// can hold tens of thousands of runs, and JSONDecoder read them three times faster as
    /// arrays than as objects (decoding the core files was most of a migration target's
    /// "verify snapshot" step). Versions up to 7 wrote objects, still read.
    public init(from decoder: any Decoder) throws {
        if var a = try? decoder.unkeyedContainer() {
            (address, count, fileOffset) = (try a.decode(UInt64.self), try a.decode(UInt64.self), try a.decode(UInt64.self))
        } else {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            (address, count, fileOffset) = (try c.decode(UInt64.self, forKey: .address), try c.decode(UInt64.self, forKey: .count), try c.decode(UInt64.self, forKey: .fileOffset))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var a = encoder.unkeyedContainer()
        try a.encode(address); try a.encode(count); try a.encode(fileOffset)
    }
}

public struct FileDescriptorImage: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case regular, directory, charDevice, tty, pipe, eventfd, timerfd, signalfd, epoll, unixSocket
        case inotify
        case fifo
        /// Version 3: a TCP socket (listening, bound, or connected inside the application).
        case tcpSocket
        /// Version 4: an fd on a namespace file (/proc/PID/ns/net...).
        case namespace
        /// Version 4: a fanotify group with its marks.
        case fanotify
        /// Version 4: a UDP socket (bound, connected, with its queued datagrams).
        case udpSocket
        /// A POSIX message queue (mq_open(3)), with its attributes and messages.
        case mqueue
        /// The master of a pseudo-terminal pair (/dev/ptmx), with the pair's state.
        case ptyMaster
        /// Version 9: a pidfd (pidfd_open(2), clone3 CLONE_PIDFD) on a process of the application.
        case pidfd
        /// Version 9: a netlink socket (netlink(7)): its protocol, port id, multicast groups
        /// and options; never with unread messages (refused at checkpoint).
        case netlinkSocket
        /// Version 9: a packet socket (packet(7)): type, protocol, interface by name,
        /// memberships and options; refused with a ring mapped.
        case packetSocket

        /// A socket ssi builds before the processes fork (Sockets.swift), by its socketID.
        public var isSocket: Bool { [.unixSocket, .tcpSocket, .udpSocket, .netlinkSocket, .packetSocket].contains(self) }
    }
    public var fd: Int32
    public var kind: Kind
    public var path: String
    /// open(2) flags as in /proc/PID/fdinfo (O_ACCMODE, O_APPEND, O_NONBLOCK...).
    public var flags: Int32
    public var closeOnExec: Bool
    public var position: Int64
    /// Regular files: size at checkpoint time, to detect a file shrunk below the offset.
    public var size: Int64?
    /// Pipes: the pipe's inode, shared by both ends; its buffered bytes and capacity.
    public var pipeID: UInt64?
    public var pipeData: Data?
    public var pipeSize: Int32?
    /// Version 2: fds sharing one open file description (after dup() or fork(): one offset,
    /// one set of flags) carry the same id, "<pid>:<fd>" of the first holder.
    public var sharedID: String?
    /// Version 2: set for an unlinked file or memfd: the DeletedFile id.
    public var deletedFileID: String?
    /// Version 2, unixSocket (one end of a socketpair whose other end is in the application):
    /// its inode, its peer's inode, SOCK_STREAM/DGRAM/SEQPACKET, and the bytes queued to it.
    public var socketID: UInt32?
    public var peerID: UInt32?
    public var socketType: Int32?
    public var socketData: Data?
    /// Version 2, eventfd: its counter and EFD_SEMAPHORE.
    public var eventCount: UInt64?
    public var eventSemaphore: Bool?
    /// Version 9, pidfd: the process it refers to, by the PID its holder sees.
    public var pidfdTarget: Int32?
    /// Version 2, timerfd: clock, remaining time and interval (relative), expirations not read.
    public var timer: TimerState?
    /// Version 2, signalfd: the signals it accepts.
    public var signalMask: UInt64?
    /// Version 2, epoll: the fds registered in it, with their events and user data.
    public var epollTargets: [EpollTarget]?

    // MARK: sockets (version 3)

    /// unixSocket and tcpSocket: address, state, queues and options (see SocketImage).
    /// socketID is the socket's inode for both kinds; peerID the peer's inode when the peer
    /// is a unix socket inside the application.
    public var socket: SocketImage?

    // MARK: inotify/fifo (version 3)

    /// inotify: its watches, each with the watch descriptor the program got.
    public var inotifyWatches: [InotifyWatch]?
    /// inotify: bytes of events queued and not read at checkpoint time; they are not restored.
    public var inotifyQueuedBytes: Int32?
    /// fifo (a named pipe, mkfifo(3)): "<major:minor hex>:<inode>" of the FIFO, shared by every
    /// fd on it; its permission bits and owner, to recreate it if it is gone. Its buffered
    /// bytes and capacity are in `pipeData` and `pipeSize`, as for pipes.
    public var fifoID: String?
    public var fifoMode: UInt32?
    public var fifoOwner: [UInt32]?

    // MARK: fidelity (version 4)

    /// A pipe whose other end is held by a process outside the application: restart
    /// connects this fd to one the caller gives (its own fds 0-2, or --inherit-fd N).
    /// pipeData then holds only what the application had not read.
    public var external: Bool?
    /// Locks held through this fd: POSIX ones of this process (once per file), OFD and
    /// flock ones of its open file description.
    public var locks: [FileLock]?
    /// Version 9: who gets SIGIO/SIGURG for this open file description and which signal
    /// (F_GETOWN_EX, F_GETSIG): kept when O_ASYNC is set or it holds a lease (whose break
    /// is signalled the same way). The pid is the one the holder sees.
    public var signalOwner: SignalOwner?
    /// fifo: unlinked while open (its path is the old one): made again nameless.
    public var fifoDeleted: Bool?
    /// namespace: its kind ("net", "uts"...), and whether it is the process's own (reopened
    /// from /proc/self/ns) rather than one no process of the application is in (made anew:
    /// only an empty network namespace can be).
    public var namespaceKind: String?
    public var namespaceOwn: Bool?
    /// mqueue: the queue.
    public var mqueue: MessageQueueImage?
    /// ptyMaster: the pair. tty: the pair's index when this is the slave of a pair whose
    /// master is in the application (nil: a terminal from outside).
    public var pty: PTYImage?
    public var ptyIndex: Int32?
    /// fanotify: fanotify_init(2) flags and event_f_flags, and the inode marks.
    public var fanotifyFlags: UInt32?
    public var fanotifyEventFlags: UInt32?
    public var fanotifyMarks: [FanotifyMark]?
    /// fifo: the times of the FIFO and of its directory (FileTimes' layout), put back after
    /// the FIFO is refilled (a write moves its mtime).
    public var fileTimes: [Int64]?
    public var directoryTimes: [Int64]?

    public init(fd: Int32, kind: Kind, path: String, flags: Int32, closeOnExec: Bool, position: Int64) {
        self.fd = fd; self.kind = kind; self.path = path; self.flags = flags; self.closeOnExec = closeOnExec; self.position = position
    }
}

public struct SigAction: Codable, Sendable, Equatable {
    public var signal: Int32
    public var handler: UInt64
    public var flags: UInt64
    public var restorer: UInt64
    public var mask: UInt64
    public init(signal: Int32, handler: UInt64, flags: UInt64, restorer: UInt64, mask: UInt64) {
        self.signal = signal; self.handler = handler; self.flags = flags; self.restorer = restorer; self.mask = mask
    }
}

public struct ThreadImage: Codable, Sendable {
    public var tid: Int32
    /// General-purpose registers by name (Arch's register file), as saved while stopped.
    public var registers: [String: UInt64]
    /// The XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE).
    public var xstate: Data
    public var blockedMask: UInt64
    public var pending: [Data]
    public var altStack: AltStack
    public var rseq: RSeq?
    public var robustListHead: UInt64
    public var robustListLength: UInt64
    public var clearChildTID: UInt64
    /// Version 2: the thread's name (/proc/PID/task/TID/comm).
    public var name: String?

    // MARK: inotify/fifo (version 3)

    /// Set when the thread was in a relative nanosleep/clock_nanosleep that the checkpoint
    /// interrupted: what was left to sleep, and when.
    public var interruptedSleep: InterruptedSleep?
    /// Version 9: its nice value, policy, CPU affinity, timer slack and I/O priority.
    public var scheduling: ThreadScheduling?
    /// Version 9: its seccomp filters, oldest first (nil: none).
    public var seccompFilters: [SeccompFilter]?
    /// Version 9: its capability sets (capabilities(7) are per thread: `capsh`, daemons
    /// that drop privileges, libcap-ng); nil in older snapshots (the restorer's are kept).
    public var capabilities: CapabilitySets?

    public init(tid: Int32) {
        self.tid = tid; registers = [:]; xstate = Data(); blockedMask = 0; pending = []; altStack = AltStack()
        rseq = nil; robustListHead = 0; robustListLength = 0; clearChildTID = 0
    }
}

/// What the kernel keeps per thread for the CPU and block schedulers (`nice`, `chrt`,
/// `taskset`, `ionice` and PR_SET_TIMERSLACK set them; fork and clone copy them), which a
/// restored thread would otherwise take from the restorer it was forked from.
public struct ThreadScheduling: Codable, Sendable, Equatable {
    /// getpriority(PRIO_PROCESS, tid): -20...19.
    public var nice: Int32
    /// sched_getscheduler(2), SCHED_RESET_ON_FORK (0x40000000) included, and the static
    /// priority (1...99 for SCHED_FIFO and SCHED_RR, 0 for the others).
    public var policy: Int32
    public var priority: Int32
    /// sched_getaffinity(2): the CPUs it may run on, bit n of word n / 64 for CPU n.
    public var cpus: [UInt64]
    /// PR_GET_TIMERSLACK, in ns (/proc/TID/timerslack_ns).
    public var timerSlackNs: UInt64
    /// ioprio_get(IOPRIO_WHO_PROCESS, tid): class << 13 | level.
    public var ioPriority: Int32
    public init(nice: Int32, policy: Int32, priority: Int32, cpus: [UInt64], timerSlackNs: UInt64, ioPriority: Int32) {
        (self.nice, self.policy, self.priority, self.cpus, self.timerSlackNs, self.ioPriority) = (nice, policy, priority, cpus, timerSlackNs, ioPriority)
    }
}

/// One seccomp filter of a thread (seccomp(2) SECCOMP_SET_MODE_FILTER): its classic BPF
/// program, 8-byte struct sock_filter instructions, and the flags it was installed with.
public struct SeccompFilter: Codable, Sendable, Equatable {
    public var program: Data
    public var flags: UInt64
    public init(program: Data, flags: UInt64) { (self.program, self.flags) = (program, flags) }
}

public struct AltStack: Codable, Sendable, Equatable {
    public var sp: UInt64 = 0
    public var flags: Int32 = 2 // SS_DISABLE
    public var size: UInt64 = 0
    public init() {}
}

public struct RSeq: Codable, Sendable, Equatable {
    public var pointer: UInt64
    public var length: UInt32
    public var signature: UInt32
    public init(pointer: UInt64, length: UInt32, signature: UInt32) { self.pointer = pointer; self.length = length; self.signature = signature }
}

public struct TimerState: Codable, Sendable, Equatable {
    public var clockID: Int32
    public var valueSeconds: Int64, valueNanoseconds: Int64
    public var intervalSeconds: Int64, intervalNanoseconds: Int64
    public var ticks: UInt64
    /// Version 4: timerfd_settime(2) flags (TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET), and
    /// for an absolute timer its deadline on its clock (the value above is what was left).
    public var settimeFlags: Int32?
    public var deadlineSeconds: Int64?, deadlineNanoseconds: Int64?
    public init(clockID: Int32, valueSeconds: Int64, valueNanoseconds: Int64, intervalSeconds: Int64, intervalNanoseconds: Int64, ticks: UInt64) {
        self.clockID = clockID; self.valueSeconds = valueSeconds; self.valueNanoseconds = valueNanoseconds
        self.intervalSeconds = intervalSeconds; self.intervalNanoseconds = intervalNanoseconds; self.ticks = ticks
    }
}

public struct EpollTarget: Codable, Sendable, Equatable {
    public var fd: Int32
    public var events: UInt32
    public var data: UInt64
    /// Version 4: the entry's file is not the one at `fd` now (fd closed and its number
    /// reused): another fd of the process that holds that file; restart registers it under
    /// the number `fd`.
    public var viaFD: Int32?
    public init(fd: Int32, events: UInt32, data: UInt64) { self.fd = fd; self.events = events; self.data = data }
}

public struct IntervalTimer: Codable, Sendable, Equatable {
    public var which: Int32
    /// struct itimerval: interval then value, seconds and microseconds.
    public var interval: [Int64]
    public var value: [Int64]
    public init(which: Int32, interval: [Int64], value: [Int64]) { self.which = which; self.interval = interval; self.value = value }
}

public struct PosixTimer: Codable, Sendable, Equatable {
    public var id: Int32
    public var clockID: Int32
    public var signal: Int32
    public var sigevValue: UInt64
    /// SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4.
    public var notify: Int32
    public var notifyTID: Int32
    /// struct itimerspec: interval then value, seconds and nanoseconds (relative).
    public var interval: [Int64]
    public var value: [Int64]
    public init(id: Int32, clockID: Int32, signal: Int32, sigevValue: UInt64, notify: Int32, notifyTID: Int32, interval: [Int64], value: [Int64]) {
        self.id = id; self.clockID = clockID; self.signal = signal; self.sigevValue = sigevValue; self.notify = notify
        self.notifyTID = notifyTID; self.interval = interval; self.value = value
    }
}

/// A file without a name (unlinked, or a memfd), saved whole in the snapshot.
public struct DeletedFile: Codable, Sendable, Equatable {
    /// "<device major:minor hex>:<inode>", as in /proc/PID/maps.
    public var id: String
    /// Its former path, or "/memfd:NAME".
    public var path: String
    public var isMemfd: Bool
    public var size: Int64
    public var mode: UInt32
    /// memfd seals (F_GET_SEALS).
    public var seals: Int32
    /// The snapshot file holding its content.
    public var contentFile: String
    /// Version 4: owner, and access and modification times (seconds, nanoseconds each).
    public var owner: [UInt32]?
    public var times: [Int64]?
    public init(id: String, path: String, isMemfd: Bool, size: Int64, mode: UInt32, seals: Int32, contentFile: String) {
        self.id = id; self.path = path; self.isMemfd = isMemfd; self.size = size; self.mode = mode; self.seals = seals; self.contentFile = contentFile
    }
}

/// Version 3: what a socket was, beyond its kind: enough to rebuild it with the same address,
/// state, connections and queued data.
public struct SocketImage: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Created, maybe bound, not connected (a datagram socket receiving by its name).
        case unconnected
        case listening
        case connected
    }
    /// AF_UNIX (1), AF_INET (2) or AF_INET6 (10).
    public var family: Int32
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5).
    public var type: Int32
    public var state: State
    /// unix: the sun_path bytes (an abstract name starts with a 0 byte); inet: the struct
    /// sockaddr_in or sockaddr_in6 bytes. nil when unbound.
    /// The network namespace the socket was made in, when it is one the application made
    /// (NetNamespace.id); nil: the root's.
    public var netns: UInt64?
    public var address: Data?
    /// The address of the peer, for a connected socket.
    public var peerAddress: Data?
    /// listening: the backlog given to listen(2).
    public var backlog: Int32?
    /// unix listening: the inodes of the client sockets whose connections wait in the accept
    /// queue, oldest first.
    public var pendingClients: [UInt32]?
    /// unix datagram and seqpacket: the messages waiting to be read, oldest first, with their
    /// sender's name; unix stream with file descriptors in flight: its queued bytes, cut where
    /// the kernel attached fds (otherwise they are in FileDescriptorImage.socketData).
    public var datagrams: [QueuedDatagram]?
    /// shutdown(2) already done: 1 = no more receiving, 2 = no more sending (unix_diag's bits).
    public var shutdown: Int32?
    /// unix bound to a path: the socket file's permission bits, owner and group.
    public var fileMode: UInt32?
    public var fileUID: UInt32?
    public var fileGID: UInt32?
    /// Socket options worth keeping, by name: SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE,
    /// SO_PASSCRED, TCP_NODELAY, IPV6_V6ONLY.
    public var options: [String: Int32]?
    /// Version 4: other options (SO_PRIORITY, SO_LINGER, TCP_KEEPIDLE, TCP_CONGESTION, IP_TOS,
    /// buffer sizes...), by name, as the bytes getsockopt(2) gave; only those that differed
    /// from a fresh socket's.
    public var rawOptions: [String: Data]?
    /// Version 9: a classic BPF filter attached with SO_ATTACH_FILTER (socket(7)), as
    /// SO_GET_FILTER gives it back (8-byte struct sock_filter instructions), and whether
    /// SO_LOCK_FILTER was set after it.
    public var filter: Data?
    public var filterLocked: Bool?
    /// Version 4: a unix socket bound to a relative path: the directory it was bound from
    /// (the name stays relative, as the kernel keeps it).
    public var bindDirectory: String?
    /// Version 4: a socket bound to a path: the times of its file and of its directory,
    /// put back after it is bound again (binding creates the file, in the directory).
    public var fileTimes: [Int64]?
    public var directoryTimes: [Int64]?
    /// tcp connected: what TCP_REPAIR needs to rebuild the connection.
    public var tcp: TCPRepairState?

    /// Version 9, netlink: the protocol given to socket(2) (NETLINK_ROUTE 0, NETLINK_GENERIC
    /// 16...), and the multicast groups it is a member of, as NETLINK_LIST_MEMBERSHIPS gives
    /// them (bit N of word W is group 32 * W + N + 1). Its `address` is the struct
    /// sockaddr_nl of getsockname(2) (the port id), `peerAddress` that of connect(2).
    public var `protocol`: Int32?
    public var netlinkGroups: [UInt32]?
    /// Version 9, packet: the interface the socket was bound to (its `address` is the struct
    /// sockaddr_ll, whose index is replaced by that name's on restart) and its memberships.
    public var interfaceName: String?
    public var packetMemberships: [PacketMembership]?
    public init(family: Int32, type: Int32, state: State) { self.family = family; self.type = type; self.state = state }
}

public struct QueuedDatagram: Codable, Sendable, Equatable {
    public var data: Data
    /// The sender's bound name (sun_path bytes), nil when it had none.
    public var sender: Data?
    /// File descriptors in flight with this message (SCM_RIGHTS), in order: regular files,
    /// directories and sockets, described like fds (their `fd` is their index here).
    public var files: [FileDescriptorImage]?
    public init(data: Data, sender: Data?) { self.data = data; self.sender = sender }
}

/// A TCP connection's sequence numbers, queues and negotiated options, read in repair mode
/// (TCP_REPAIR, see tcp(7) and linux/tcp.h).
public struct TCPRepairState: Codable, Sendable, Equatable {
    /// The sequence number after the last byte queued to send (TCP_QUEUE_SEQ on the send
    /// queue), and after the last byte received (on the receive queue).
    public var sendSeq: UInt32
    public var recvSeq: UInt32
    /// Bytes written by the application and not yet acknowledged by the peer.
    public var sendQueue: Data
    /// Bytes received and not yet read by the application.
    public var recvQueue: Data
    public var mss: UInt32
    public var sendWindowScale: UInt8
    public var recvWindowScale: UInt8
    public var sack: Bool
    public var timestamps: Bool
    /// TCP_TIMESTAMP: the connection's timestamp clock.
    public var timestamp: UInt32
    /// struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    public var window: [UInt32]
    /// Version 4: how many bytes at the end of sendQueue had not been sent yet (SIOCOUTQNSD):
    /// restart sends them normally, once out of repair mode, rather than as data in flight.
    public var unsent: UInt32?
    /// When `timestamp` was read (CLOCK_REALTIME, ns; nil in older snapshots): the restored
    /// clock goes on from it as if it had kept running.
    public var timestampRead: Int64?
    public init(sendSeq: UInt32, recvSeq: UInt32, sendQueue: Data, recvQueue: Data, mss: UInt32, sendWindowScale: UInt8,
                recvWindowScale: UInt8, sack: Bool, timestamps: Bool, timestamp: UInt32, window: [UInt32]) {
        self.sendSeq = sendSeq; self.recvSeq = recvSeq; self.sendQueue = sendQueue; self.recvQueue = recvQueue; self.mss = mss
        self.sendWindowScale = sendWindowScale; self.recvWindowScale = recvWindowScale; self.sack = sack
        self.timestamps = timestamps; self.timestamp = timestamp; self.window = window
    }
}

// MARK: inotify/fifo (version 3)

/// One inotify watch (inotify(7)), from /proc/PID/fdinfo.
public struct InotifyWatch: Codable, Sendable, Equatable {
    /// The watch descriptor, restored as is.
    public var wd: Int32
    /// The inotify_add_watch(2) mask, with IN_ONESHOT and IN_EXCL_UNLINK when they were given.
    public var mask: UInt32
    /// The watched file or directory, found from its file handle at checkpoint time.
    public var path: String
    /// "<major:minor hex>:<inode>" of the watched inode, to tell whether `path` still names it.
    public var fileID: String
    /// The watched inode was a symbolic link itself (watched with IN_DONT_FOLLOW).
    public var isSymlink: Bool?
    public init(wd: Int32, mask: UInt32, path: String, fileID: String, isSymlink: Bool? = nil) {
        self.wd = wd; self.mask = mask; self.path = path; self.fileID = fileID; self.isSymlink = isSymlink
    }
}

/// A relative sleep (nanosleep(2), clock_nanosleep(2) without TIMER_ABSTIME) interrupted by
/// the checkpoint: the kernel wrote what was left to the caller's `rem` buffer.
public struct InterruptedSleep: Codable, Sendable, Equatable {
    /// The clock the sleep counts on (CLOCK_REALTIME for nanosleep).
    public var clockID: Int32
    /// What was left to sleep when the thread was stopped.
    public var remainingNanoseconds: Int64
    /// CLOCK_MONOTONIC once every task was stopped, and the boot it belongs to
    /// (/proc/sys/kernel/random/boot_id): restart subtracts the time elapsed since then.
    public var monotonicAtCheckpoint: Int64
    public var bootID: String
    public init(clockID: Int32, remainingNanoseconds: Int64, monotonicAtCheckpoint: Int64, bootID: String) {
        self.clockID = clockID; self.remainingNanoseconds = remainingNanoseconds
        self.monotonicAtCheckpoint = monotonicAtCheckpoint; self.bootID = bootID
    }
}

/// A PACKET_ADD_MEMBERSHIP of a packet socket: the interface by name, PACKET_MR_MULTICAST 0,
/// PACKET_MR_PROMISC 1, PACKET_MR_ALLMULTI 2 or PACKET_MR_UNICAST 3, and the address.
public struct PacketMembership: Codable, Sendable, Equatable {
    public var interfaceName: String
    public var type: UInt16
    public var address: Data
    public init(interfaceName: String, type: UInt16, address: Data) { self.interfaceName = interfaceName; self.type = type; self.address = address }
}

public struct SignalOwner: Codable, Sendable, Equatable {
    /// F_OWNER_TID 0, F_OWNER_PID 1, F_OWNER_PGRP 2 (fcntl(2)); pid 0: no owner.
    public var type: Int32
    public var pid: Int32
    /// F_SETSIG's signal; 0: SIGIO.
    public var signal: Int32
    public init(type: Int32, pid: Int32, signal: Int32) { self.type = type; self.pid = pid; self.signal = signal }
}

/// Version 4: a file lock (fcntl(2) record locks, OFD locks, flock(2)).
public struct FileLock: Codable, Sendable, Equatable {
    /// "POSIX", "OFDLCK" or "FLOCK", as /proc/locks names them; version 9: "LEASE" for a
    /// lease (F_SETLEASE) of the open file description, read or write.
    public var kind: String
    public var write: Bool
    /// The byte range, end included; nil end: to the end of the file (flock: 0 and nil).
    public var start: Int64
    public var end: Int64?
    public init(kind: String, write: Bool, start: Int64, end: Int64?) { self.kind = kind; self.write = write; self.start = start; self.end = end }
}

/// Version 4: one inode mark of a fanotify group, as fdinfo shows it (mflags in FAN_MARK_*
/// terms), with the path of the marked inode found from its file handle.
public struct FanotifyMark: Codable, Sendable, Equatable {
    public var path: String
    public var mflags: UInt32
    public var mask: UInt64
    public var ignoredMask: UInt64
    public var isSymlink: Bool?
    public init(path: String, mflags: UInt32, mask: UInt64, ignoredMask: UInt64) {
        self.path = path; self.mflags = mflags; self.mask = mask; self.ignoredMask = ignoredMask
    }
}

/// A POSIX message queue (mq_overview(7)): its name in its IPC namespace's queue file
/// system, attributes, owner and messages, in the order they are received (priority, then
/// arrival).
public struct MessageQueueImage: Codable, Sendable, Equatable {
    public struct Message: Codable, Sendable, Equatable {
        public var priority: UInt32
        public var data: Data
        public init(priority: UInt32, data: Data) { self.priority = priority; self.data = data }
    }
    /// "/name", as mq_open(3) takes it.
    public var name: String
    public var maxMessages: Int
    public var messageSize: Int
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var messages: [Message]
    /// The IPC namespace the queue is in, when the application made it (IPCNamespace.id).
    public var ipcNamespace: UInt64?
    public init(name: String, maxMessages: Int, messageSize: Int, mode: UInt32, uid: UInt32, gid: UInt32, messages: [Message]) {
        self.name = name; self.maxMessages = maxMessages; self.messageSize = messageSize
        self.mode = mode; self.uid = uid; self.gid = gid; self.messages = messages
    }
}

/// A pseudo-terminal pair (pty(7)) whose master is in the application: its index, the
/// slave's settings (the kernel's struct termios, 36 bytes, TCGETS) and window size, the
/// master's lock and packet mode, and the bytes queued each way.
public struct PTYImage: Codable, Sendable, Equatable {
    public var index: Int32
    public var termios: Data
    public var rows: UInt16, columns: UInt16, xPixels: UInt16, yPixels: UInt16
    public var locked: Bool
    public var packetMode: Bool
    /// Written to the master, not yet read from the slave (a partial line included).
    public var toSlave: Data
    /// Written to the slave, not yet read from the master.
    public var toMaster: Data
    public init(index: Int32, termios: Data) {
        self.index = index; self.termios = termios; rows = 0; columns = 0; xPixels = 0; yPixels = 0
        locked = false; packetMode = false; toSlave = Data(); toMaster = Data()
    }
}
