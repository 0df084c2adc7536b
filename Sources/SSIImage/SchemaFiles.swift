import Foundation

// The snapshot format (Schema.swift), files: what each descriptor was, and the files and
// kernel objects behind them (unlinked files, epoll targets, inotify and fanotify marks, locks,
// POSIX message queues, pseudo-terminals).

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
    @OptionalBlob public var pipeData: Data?
    public var pipeSize: Int32?
    /// pipe: the lengths of the packets `pipeData` holds, when the pipe is in packet mode
    /// (pipe2(2) O_DIRECT: each write one packet, each read at most one); nil: a byte stream.
    public var pipePackets: [Int]?
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
    @OptionalBlob public var socketData: Data?
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
    /// directory: removed while open (rmdir(2); its path is the old one), with this mode:
    /// made again empty there, opened and removed again.
    public var removedDirectoryMode: UInt32?
    /// tty: the slave of a pseudo-terminal pair whose master was closed (its /dev/pts node
    /// is gone; reads give EOF or EIO, writes EIO): made so again with a pair of its own.
    public var ttyHungUp: Bool?
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

public struct EpollTarget: Codable, Sendable, Equatable {
    public var fd: Int32
    public var events: UInt32
    public var data: UInt64
    /// Version 4: the entry's file is not the one at `fd` now (fd closed and its number
    /// reused): another fd of the process that holds that file; restart registers it under
    /// the number `fd`.
    public var viaFD: Int32?
    /// An edge-triggered entry (EPOLLET) whose file was ready at checkpoint and whose edge
    /// the program had already been told of (not on the instance's ready list): restart
    /// takes it off the ready list its EPOLL_CTL_ADD put it on, so that it is not reported
    /// twice. nil: reported as the kernel decides.
    public var edgeReported: Bool?
    public init(fd: Int32, events: UInt32, data: UInt64) { self.fd = fd; self.events = events; self.data = data }
}

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
    /// This process's mq_notify(3) registration on the queue, kept on one of its fds of it:
    /// [sigev_notify (0 SIGEV_SIGNAL, 1 SIGEV_NONE), signal]. nil: none of its own.
    public var notify: [Int32]?
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
    /// TIOCEXCL: opens of the slave refused but to CAP_SYS_ADMIN (tty_ioctl(4)); nil: not set.
    public var exclusive: Bool?
    /// Its output was stopped: 1 by the STOP character (^S with IXON, which ^Q or TCOON
    /// undo), 2 by tcflow(3) TCOOFF (which only TCOON undoes); nil: running.
    public var outputStop: Int32?
    /// Written to the master, not yet read from the slave (a partial line included).
    public var toSlave: Data
    /// Where in `toSlave` an end-of-file mark stood (the VEOF character typed in canonical
    /// mode, which a read sees as the end of a line, or as end of file at a line's start:
    /// `script < /dev/null` leaves one); nil: none. Added December 2026 (late).
    public var toSlaveEOFs: [Int]?
    /// Written to the slave, not yet read from the master.
    public var toMaster: Data
    public init(index: Int32, termios: Data) {
        self.index = index; self.termios = termios; rows = 0; columns = 0; xPixels = 0; yPixels = 0
        locked = false; packetMode = false; toSlave = Data(); toMaster = Data()
    }
}
