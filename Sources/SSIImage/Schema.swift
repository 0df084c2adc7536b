import Foundation

/// The snapshot format (`SnapshotFormat.version`). docs/snapshot-format.md describes it for
/// humans; these types are the single definition the writer and the reader share: this file
/// holds the manifest and the process record, SchemaMemory/Files/Threads/Sockets the rest.
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
    /// 10 (issue 17) packs many runs as "d:" and base64 of varint differences (PageRuns), 4-6
    ///   bytes a run instead of 24: a 1 GiB migration's core file is 5x smaller.
    /// 11 (issue 12) keeps long byte strings (TCP queues, pipe and socket pair buffers) out
    ///   of the core file, as they are, in `blobs-<pid>.img` (SchemaBlobs.swift).
    /// 12 (issue 17) keeps an area's packed page runs (the varint bytes of version 10) in
    ///   the blob file too: `"pages": {"blob": [offset, length]}`.
    /// 13 (issue 17) may save a cluster application's ssi-init as its state alone
    ///   (ProcessImage.freshInit); an older reader must not restore such an image.
    /// 14 restores fork-inherited pipe ends and epoll instances held by several fds as one
    ///   open file description (a `sharedID` on such pipe fds; one holder of a shared epoll
    ///   keeps its entries): an older reader would reopen the pipe by its name and fail.
    public static let version = 14
    public static let readable: ClosedRange<Int> = 1...14
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

    /// Bytes of the whole snapshot were it alone on disk: its files (the pool maps
    /// included, as `addedBytes` counts them, so that a first version never adds more than
    /// its whole) and every pages file whole.
    public var totalBytes: UInt64 {
        files.reduce(0) { $0 + $1.size } + (pooled ?? []).reduce(0) { $0 + $1.size }
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
    /// Version 9: the process lives in a PID namespace the application made (unshare(2) or
    /// clone(2) CLONE_NEWPID, below the application's): its ids in each namespace below the
    /// application's, outermost first; the last is its getpid(). `pid` stays its id at the
    /// application's level. nil: it lives in the application's namespace.
    public var nestedPIDs: [Int32]?
    /// Version 9: the namespace its next children go to (/proc/PID/ns/pid_for_children),
    /// when it is not its own: after unshare(CLONE_NEWPID), or setns(2) to a PID namespace.
    public var childPIDNamespace: ChildPIDNamespace?
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
    /// When its timers (interval, POSIX, timerfd) were read; nil in older snapshots, whose
    /// timers restart with the time they had left.
    public var timersReadAt: ClockStamp?
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
    /// PR_GET_MDWE's flags (memory-deny-write-execute); nil when none. Older readers leave
    /// the restored process without it, as it was before the flag was saved.
    public var mdwe: UInt32?
    /// PR_SET_MEMORY_MERGE was set (KSM for the whole process); nil when not.
    public var memoryMerge: Bool?
    /// /proc/PID/coredump_filter (core(5)) when it is not the kernel's default 0x33.
    public var coredumpFilter: UInt32?
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
    /// Version 13: this process is ssi-init, process 1 of a cluster application, saved as
    /// what it does rather than as its memory (FreshInit): restart runs a new ssi-init in
    /// its place, with its fds, credentials, signal mask and pending signals, which goes on
    /// waiting for the same command. Such an image has no areas and no pages file.
    public var freshInit: FreshInit?
    /// Its SEM_UNDO adjustments (semop(2)): what its exit would add to each semaphore, which
    /// restart registers again in the restored process. nil: none. Older readers restore
    /// the process without them, as before they were saved.
    public var semaphoreUndo: [SemaphoreAdjustment]?
    /// membarrier(2) MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3): the REGISTER_* commands
    /// the process made (liburcu, .NET, folly), made again at restart; nil: none.
    public var membarrierRegistrations: UInt32?
    /// mlockall(2) flags for memory mapped from now on (MCL_FUTURE 2, with MCL_ONFAULT 4):
    /// nil when new mappings are not locked.
    public var lockFuture: Int32?
    /// Its audit login uid (/proc/PID/loginuid, set by pam_loginuid for a login, sshd or
    /// cron session); nil: unset (4294967295).
    public var loginUID: UInt32?
    /// The nice value of its session's autogroup (/proc/PID/autogroup, sched(7)) when not 0.
    public var autogroupNice: Int32?

    public init(pid: Int32) {
        self.pid = pid; ppid = 0; pgid = 0; sid = 0; comm = ""; exe = ""; credentials = Credentials()
        umask = 0o022; cwd = "/"; root = "/"; personality = 0; parentDeathSignal = 0; dumpable = 1; rlimits = []
        mm = MMFields(); vmas = []; pagesFile = ""; fds = []; sigactions = []; sharedPending = []; threads = []; oomScoreAdj = 0
    }
}

/// One semaphore's SEM_UNDO adjustment (semadj) in a process: the value its exit would add
/// to semaphore `num` of the array `id` (key `key`), the opposite of what its semop calls with
/// SEM_UNDO took or gave.
public struct SemaphoreAdjustment: Codable, Sendable, Equatable {
    public var id: Int32
    public var key: Int32
    public var num: UInt16
    public var adjustment: Int32
    public init(id: Int32, key: Int32, num: UInt16, adjustment: Int32) { (self.id, self.key, self.num, self.adjustment) = (id, key, num, adjustment) }
}

/// The namespaces of one process that are not ssi's. Each is named by its inode at
/// checkpoint time (the number in /proc/PID/ns/KIND), so that processes sharing one
/// namespace share it again after restart.
/// Version 9: where a process's next children go when that is not its own PID namespace.
public struct ChildPIDNamespace: Codable, Sendable, Equatable {
    /// A process of the snapshot living in that namespace (by `pid`), whose namespace the
    /// process joins at restart; nil when none lives in it yet (unshare(CLONE_NEWPID) before
    /// the first fork: restart unshares again).
    public var holder: Int32?
    public init(holder: Int32?) { self.holder = holder }
}

public struct ProcessNamespaces: Codable, Sendable, Equatable {
    public var uts: UTSNamespace?
    /// Compared with the root's network namespace (the launcher's choice, not saved).
    public var net: NetNamespace?
    public var ipc: IPCNamespace?
    /// Version 9: compared with the root's mount namespace.
    public var mnt: MountNamespace?
    public init(uts: UTSNamespace? = nil, net: NetNamespace? = nil, ipc: IPCNamespace? = nil) { self.uts = uts; self.net = net; self.ipc = ipc }
    public var isEmpty: Bool { uts == nil && net == nil && ipc == nil && mnt == nil }
}

/// Version 9: a mount namespace the application made (unshare(2) or clone(2) CLONE_NEWNS),
/// kept as what differs from its root's: restart unshares, sets the propagation, unmounts
/// what was unmounted, then makes the mounts again in their order.
public struct MountNamespace: Codable, Sendable, Equatable {
    public var id: UInt64
    /// "private" or "slave" (mount(2) MS_REC with MS_PRIVATE or MS_SLAVE over "/"); nil: as
    /// unshare(2) copies it.
    public var propagation: String?
    /// Mount points of the root's namespace that are not in this one, deepest first.
    public var unmounted: [String]
    /// Mounts not in the root's namespace, in the order they were made; and mounts of both
    /// whose flags changed (kind "remount").
    public var mounts: [MountImage]
    public init(id: UInt64, propagation: String?, unmounted: [String], mounts: [MountImage]) {
        (self.id, self.propagation, self.unmounted, self.mounts) = (id, propagation, unmounted, mounts)
    }
}

/// One mount of a MountNamespace. Paths are as the process sees them (its root).
public struct MountImage: Codable, Sendable, Equatable {
    public var target: String
    /// "bind" (`source` is the path bound, as the namespace shows it when it is made),
    /// "remount" (an existing mount's flags), or a file system type: tmpfs, ramfs, proc,
    /// sysfs, mqueue, cgroup2 (`source` is mount(2)'s source string).
    public var kind: String
    public var source: String
    /// mount(2) flags from the mount's options: MS_RDONLY 1, NOSUID 2, NODEV 4, NOEXEC 8,
    /// NOATIME 1024, NODIRATIME 2048, RELATIME 1<<21, STRICTATIME 1<<24, NOSYMFOLLOW 256.
    public var flags: UInt64
    /// A new file system's options (tmpfs: size=1024k,mode=750), as mountinfo shows them.
    public var options: String?
    /// proc: a process of the PID namespace it shows (by `pid`), which mounts it at restart
    /// (proc(5): an instance shows the PID namespace of the process that mounted it).
    public var mountedBy: Int32?
    /// proc: the PID namespace it shows, as /proc names it ("pid:[N]": its process 1's).
    public var pidNamespace: String?
    /// tmpfs and ramfs: the files, their content in `contentFile` of the snapshot.
    public var files: [MountedFile]?
    public var contentFile: String?
    public init(target: String, kind: String, source: String, flags: UInt64) {
        (self.target, self.kind, self.source, self.flags) = (target, kind, source, flags)
    }
}

/// A file of a tmpfs or ramfs the application mounted.
public struct MountedFile: Codable, Sendable, Equatable {
    /// Relative to the mount; "" for its top directory.
    public var path: String
    /// "dir", "file" or "symlink".
    public var type: String
    public var mode: UInt32
    public var owner: [UInt32]
    /// atime and mtime: seconds, nanoseconds each.
    public var times: [Int64]
    /// A file's bytes in the content file; a symbolic link's target.
    public var offset: UInt64?
    public var size: UInt64?
    public var target: String?
    public init(path: String, type: String, mode: UInt32, owner: [UInt32], times: [Int64]) {
        (self.path, self.type, self.mode, self.owner, self.times) = (path, type, mode, owner, times)
    }
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

/// What ssi-init (Sources/ssi-init/main.c) is doing, all a restart needs to run it again:
/// the command it started, still running (so it has not reaped it and holds no exit status
/// yet), and its command line, which process 1 of the application shows again.
public struct FreshInit: Codable, Sendable, Equatable {
    /// The command's PID inside the application's namespace.
    public var command: Int32
    /// /proc/1/cmdline as it was, argv[0] first.
    public var arguments: [String]
    /// /proc/1/environ as it was.
    public var environment: [String]

    public init(command: Int32, arguments: [String], environment: [String]) {
        self.command = command
        self.arguments = arguments
        self.environment = environment
    }

    /// The environment variable that tells a new ssi-init it takes over from a saved one:
    /// its value is the command's PID. argv and the rest of the environment are the saved
    /// ones, as /proc/1/cmdline and /proc/1/environ showed them.
    public static let resumeVariable = "SSI_INIT_RESUME"
}
