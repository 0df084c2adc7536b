import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// File descriptors: what each one is (checked first at checkpoint, so that an unsupported
// one fails before anything is written), and at restart every fd at its number with its
// flags, offset and close-on-exec bit. Each kind of file has its own file (Pipes, FIFOs,
// Inotify, EventFiles, DeletedFiles, Sockets, SharedFiles); this one dispatches.

extension ProcessDumper {
    func dumpFileDescriptors() throws -> [FileDescriptorImage] {
        var out = [FileDescriptorImage]()
        for fd in try openFDs(of: pid) {
            var link: String
            do { link = try ProcFS.readLink("/proc/\(pid)/fd/\(fd)") } catch let e as SSIError where e.errno == ENAMETOOLONG {
                // readlink(2) of /proc/PID/fd/N fails for a path longer than PATH_MAX (a file
                // reached through openat from deep directories): it cannot be opened by name.
                if ignoreUnsupported { continue }
                throw SSIError(.unsupported, "PID \(pid) fd \(fd): its path is longer than PATH_MAX (\(PATH_MAX) bytes), and a file is opened again by its path; nothing was written and the application goes on",
                               hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
            }
            let info = try FdInfo.read(pid: pid, fd: fd)
            let cloexec = info.flags & O_CLOEXEC != 0
            let flags = info.flags & ~O_CLOEXEC
            var st = stat()
            if stat("/proc/\(pid)/fd/\(fd)", &st) != 0 { throw SSIError.sys("stat fd \(fd) of PID \(pid) (\(link))", errno: errno) }
            let mode = st.st_mode & S_IFMT
            func unsupported(_ kind: String) throws {
                if ignoreUnsupported { return }
                throw SSIError(.unsupported, "PID \(pid) fd \(fd): \(kind) (\(link)) is not supported by the checkpoint engine yet; nothing was written and the application goes on",
                               hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
            }
            if link.hasPrefix("pipe:[") {
                let ino = UInt64(st.st_ino)
                var img = FileDescriptorImage(fd: fd, kind: .pipe, path: link, flags: flags, closeOnExec: cloexec, position: 0)
                img.pipeID = ino
                out.append(img)
                continue
            }
            if link.hasPrefix("socket:") {
                do {
                    out.append(try dumpSocket(fd: fd, inode: UInt32(truncatingIfNeeded: st.st_ino), link: link, flags: flags, cloexec: cloexec))
                } catch let u as UnsupportedSocket {
                    try unsupported(u.kind)
                }
                continue
            }
            if link.hasPrefix("anon_inode:") {
                if let img = try anonymousFile(fd: fd, link: link, flags: flags, cloexec: cloexec, info: info) { out.append(img) } else {
                    try unsupported("\(link.dropFirst("anon_inode:".count)) file")
                }
                continue
            }
            if isMessageQueue(fd: fd) {
                do { out.append(try messageQueue(fd: fd, link: link, flags: flags, cloexec: cloexec, st: st)) } catch where ignoreUnsupported {}
                continue
            }
            // A terminal whose pty is gone reads "/dev/pts/N (deleted)": still a terminal, which
            // `restart -t` replaces by the caller's. A file really named "... (deleted)" is
            // not one: its name still leads to the same inode.
            if mode == S_IFREG, st.st_nlink > 0, link.hasSuffix(" (deleted)"), !ProcessDumper.nameLeads(link, to: st),
               let name = ProcessDumper.linkedName(of: link, st) {
                // Opened by a name since removed, but linked elsewhere (link(2) then unlink(2):
                // glibc's sem_open, maildir and git publish files that way): the file is the
                // one at its other name, not a copy.
                link = name
            }
            let deleted = link.hasSuffix(" (deleted)") && !ProcessDumper.nameLeads(link, to: st)
            if deleted && link.hasPrefix("/secretmem") { try unsupported(ProcessDumper.secretMemory); continue }
            if deleted && mode == S_IFREG {
                // An unlinked file or a memfd: its content goes into the snapshot.
                var img = FileDescriptorImage(fd: fd, kind: .regular, path: String(link.dropLast(" (deleted)".count)), flags: flags,
                                              closeOnExec: cloexec, position: info.pos)
                img.size = Int64(st.st_size)
                img.deletedFileID = ProcessDumper.fileID(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
                out.append(img)
                continue
            }
            if deleted && mode == S_IFIFO {
                // A FIFO unlinked while open: only its fds hold it.
                var img = fifo(fd: fd, path: String(link.dropLast(" (deleted)".count)), flags: flags, cloexec: cloexec, st: st)
                img.fifoDeleted = true
                out.append(img)
                continue
            }
            if deleted && mode == S_IFDIR && link.hasPrefix("/") {
                // A directory removed while open (rmdir(2) of a program's work directory):
                // made again empty, opened and removed again at restart.
                var img = FileDescriptorImage(fd: fd, kind: .directory, path: String(link.dropLast(" (deleted)".count)), flags: flags,
                                              closeOnExec: cloexec, position: 0)
                img.removedDirectoryMode = UInt32(st.st_mode & 0o7777)
                out.append(img)
                continue
            }
            if deleted && mode != S_IFCHR { try unsupported("unlinked special file"); continue }
            let path = deleted ? String(link.dropLast(" (deleted)".count)) : link
            if let ns = try namespaceFile(fd: fd, link: link, flags: flags, cloexec: cloexec, st: st) { out.append(ns); continue }
            guard link.hasPrefix("/") else { try unsupported("special file"); continue }
            switch mode {
            case S_IFREG:
                var img = FileDescriptorImage(fd: fd, kind: .regular, path: link, flags: flags, closeOnExec: cloexec, position: info.pos)
                img.size = Int64(st.st_size)
                img.locks = dumpLocks(fd: fd)
                out.append(img)
            case S_IFDIR:
                out.append(FileDescriptorImage(fd: fd, kind: .directory, path: link, flags: flags, closeOnExec: cloexec, position: info.pos))
            case S_IFCHR:
                guard let kind = ProcessDumper.charDeviceKind(st) else {
                    out.append(try ptyMaster(fd: fd, flags: flags, cloexec: cloexec))
                    continue
                }
                var img = FileDescriptorImage(fd: fd, kind: kind, path: path, flags: flags, closeOnExec: cloexec, position: info.pos)
                // A pty slave whose master was closed (a nohup'd child of a closed terminal):
                // its node is gone. Opened again by path it would be another session's
                // terminal, or none.
                if deleted && kind == .tty && (136...143).contains((st.st_rdev >> 8) & 0xfff) { img.ttyHungUp = true }
                out.append(img)
            case S_IFIFO:
                out.append(fifo(fd: fd, path: path, flags: flags, cloexec: cloexec, st: st))
            case S_IFSOCK where flags & OpenFlags.path != 0, S_IFLNK where flags & OpenFlags.path != 0:
                // O_PATH on a unix socket's file (systemd connects through /proc/self/fd/N
                // when the path is too long for sun_path) or, with O_NOFOLLOW, on a symbolic
                // link itself (path resolvers hold those): opened again by path, as O_PATH
                // files are (open(2): nothing of the file is opened but its place).
                out.append(FileDescriptorImage(fd: fd, kind: .regular, path: link, flags: flags, closeOnExec: cloexec, position: 0))
            default:
                try unsupported("block device or special file")
            }
        }
        ProcessDumper.dedupPosixLocks(&out)
        // The owner and signal are kept whatever O_ASYNC says: a server sets F_SETOWN on a TCP
        // connection for SIGURG alone (fcntl(2): urgent data signals the owner without
        // O_ASYNC), and a program may set F_SETSIG and the owner before it turns O_ASYNC on.
        // The kinds that have an owner of their own to signal (sockets, pipes, terminals,
        // directories for dnotify); a regular file's is read only with a lease or O_ASYNC.
        let owned: Set<FileDescriptorImage.Kind> = [.pipe, .fifo, .directory, .tty, .ptyMaster, .unixSocket, .tcpSocket, .udpSocket, .inotify, .eventfd]
        for i in out.indices where out[i].flags & O_ASYNC != 0 || owned.contains(out[i].kind)
                                   || out[i].locks?.contains(where: { $0.kind == "LEASE" }) == true {
            out[i].signalOwner = try signalOwner(fd: out[i].fd)
        }
        return out
    }

    /// memfd_secret(2) memory is taken out of the kernel's own mappings: nothing outside the
    /// process can read it (/proc/PID/mem, process_vm_readv and the file all refuse).
    static let secretMemory = "memfd_secret area (secret memory, which no other process can read by design)"

    /// Whether `name` (a /proc/PID/fd link ending in " (deleted)") is the file's real name:
    /// a file may be called that, and its name then still leads to the same inode.
    static func nameLeads(_ name: String, to st: stat) -> Bool {
        var other = stat()
        return name.hasPrefix("/") && lstat(name, &other) == 0 && other.st_dev == st.st_dev && other.st_ino == st.st_ino
    }

    /// The name a file shown as "NAME (deleted)" still has (`st.st_nlink > 0`: another link
    /// leads to it), looked for where programs that publish a file by link(2) and unlink(2)
    /// put it: the directory of the removed name (glibc's sem_open: /dev/shm/sem.XXXXXX
    /// linked to sem.NAME), that directory's subdirectories and its siblings (maildir's
    /// tmp/ to new/, git's objects/tmp_obj_* to objects/xx/). At most `budget` entries are
    /// read; nil when not found there (the file is then saved as unlinked, a copy).
    static func linkedName(of deletedLink: String, _ st: stat, budget: Int = 50_000) -> String? {
        guard deletedLink.hasPrefix("/") else { return nil }
        let old = String(deletedLink.dropLast(" (deleted)".count))
        let dir = (old as NSString).deletingLastPathComponent
        let parent = (dir as NSString).deletingLastPathComponent
        var left = budget
        func subdirectories(_ d: String) -> [String] {
            guard let dp = opendir(d) else { return [] }
            defer { closedir(dp) }
            var out = [String]()
            while left > 0, out.count < 1024, let e = readdir(dp) {
                left -= 1
                guard e.pointee.d_type == UInt8(DT_DIR) else { continue }
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != ".", name != ".." { out.append(d == "/" ? "/\(name)" : "\(d)/\(name)") }
            }
            return out
        }
        func search(_ d: String) -> String? {
            guard let dp = opendir(d) else { return nil }
            defer { closedir(dp) }
            while left > 0, let e = readdir(dp) {
                left -= 1
                guard e.pointee.d_ino == st.st_ino else { continue }
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                let path = d == "/" ? "/\(name)" : "\(d)/\(name)"
                var other = stat()
                if lstat(path, &other) == 0, other.st_dev == st.st_dev, other.st_ino == st.st_ino { return path }
            }
            return nil
        }
        if let found = search(dir) { return found }
        for d in subdirectories(dir) { if let found = search(d) { return found } }
        if dir != "/" { for d in subdirectories(parent) where d != dir { if let found = search(d) { return found } } }
        return nil
    }

    /// Terminals: /dev/pts/N (136-143), virtual consoles (4), /dev/tty and /dev/console (5:0,
    /// 5:1); other character devices are reopened by path. nil for the master of a
    /// pseudo-terminal pair (/dev/ptmx, 5:2), saved with its pair (PTYs.swift).
    static func charDeviceKind(_ st: stat) -> FileDescriptorImage.Kind? {
        let major = (st.st_rdev >> 8) & 0xfff
        let minor = st.st_rdev & 0xff
        if major == 5 && minor == 2 { return nil }
        return (136...143).contains(major) || major == 4 || (major == 5 && minor <= 1) ? .tty : .charDevice
    }

    /// An anonymous-inode file: inotify, fanotify, eventfd, timerfd, signalfd, epoll; nil for
    /// another kind, or for one refused with -i given (restored closed).
    private func anonymousFile(fd: Int32, link: String, flags: Int32, cloexec: Bool, info: FdInfo) throws -> FileDescriptorImage? {
        do {
            switch link {
            case "anon_inode:inotify": return try inotify(fd: fd, link: link, flags: flags, cloexec: cloexec)
            case "anon_inode:[fanotify]": return try fanotify(fd: fd, link: link, flags: flags, cloexec: cloexec)
            default: return try anonInode(fd: fd, link: link, flags: flags, cloexec: cloexec, info: info)
            }
        } catch let e as SSIError where e.kind == .unsupported && ignoreUnsupported {
            return nil
        }
    }

    /// The id /proc/PID/maps would show for a file: "major:minor" in hex, then the inode
    /// (new_encode_dev layout of st_dev).
    static func fileID(dev: UInt64, ino: UInt64) -> String {
        let major = (dev >> 8) & 0xfff, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
        return String(format: "%02llx:%02llx:%llu", major, minor, ino)
    }
}

/// The fd numbers a restore works with, above every fd of the image.
struct FDLayout {
    /// The first number above the image's fds kept free for the restore's own files.
    var high: UInt64
    /// The caller's terminal (`restart -t`), dup'd at `high`.
    var ttyFD: UInt64?
    /// False for a CLONE_FILES child: it shares the fd table its parent has rebuilt.
    var ownTable: Bool
}

extension ProcessRestorer {
    /// Closes every fd the process inherited but the caller's terminal (for -t, kept at a
    /// high number) and the shared descriptions.
    func closeInheritedFiles() throws -> FDLayout {
        let maxFD = UInt64(max(image.fds.map(\.fd).max() ?? 2, 2))
        let high = shared.map { UInt64($0.high) } ?? maxFD + 10
        if let shared, shared.count > 0, high + 8 >= UInt64(shared.base) {
            throw SSIError(.system, "internal: fd layout of PID \(pid) overlaps the shared descriptions")
        }
        var ttyFD: UInt64? = nil
        if useCallerTerminal, let t = ProcessRestorer.callerTerminalFD() {
            ttyFD = try inj.call("dup terminal", .fcntl, UInt64(t), UInt64(F_DUPFD), high)
        }
        var keep = [UInt64]()
        if let ttyFD { keep.append(ttyFD) }
        // ssi's pidfd (FDTransfer.take) moves above the image's fds and stays until finish().
        if let inherited = ssiPidFD {
            let slot = try inj.call("dup ssi's pidfd", .fcntl, inherited, UInt64(F_DUPFD), high)
            ssiPidFD = slot
            keep.append(slot)
        }
        if let shared, shared.count > 0 { keep += (0..<shared.count).map { UInt64(shared.base) + UInt64($0) } }
        var from: UInt64 = 0
        let ownTable = image.sharesFilesWithParent != true
        for k in keep.sorted() where ownTable {
            if k > from { try inj.call("close_range", .close_range, from, k - 1, 0) }
            from = k + 1
        }
        if ownTable { try inj.call("close_range", .close_range, from, UInt64(UInt32.max), 0) }
        return FDLayout(high: high, ttyFD: ttyFD, ownTable: ownTable)
    }

    func restoreFileDescriptors(ttyFD: UInt64?) throws {
        // epoll instances last: the fds they watch must exist first; an epoll set that
        // watches another epoll set after that one.
        let epolls = Set(image.fds.filter { $0.kind == .epoll }.map(\.fd))
        func rank(_ f: FileDescriptorImage) -> Int {
            guard f.kind == .epoll else { return 0 }
            return (f.epollTargets ?? []).contains { epolls.contains($0.fd) } ? 2 : 1
        }
        // Ranked once per fd, not in the sort's comparisons (each walked an epoll set's
        // entries: seconds for a set of 10,000).
        for (_, f) in image.fds.map({ (rank($0), $0) }).sorted(by: { ($0.0, $0.1.fd) < ($1.0, $1.1.fd) }) {
            let target = UInt64(f.fd)
            guard let (src, temporary) = try sourceFD(for: f, ttyFD: ttyFD) else { continue }
            try placeFD(src, as: f)
            if temporary && src != target { try inj.call("close", .close, src) }
            if f.kind.isSocket && f.flags & O_NONBLOCK != 0 {
                try inj.call("fcntl O_NONBLOCK", .fcntl, target, UInt64(F_SETFL), UInt64(O_NONBLOCK))
            }
            if f.sharedID == nil { try restoreOffset(f, fd: target) }
        }
    }

    /// A regular file of a process's own /proc directory (/proc/PID/statm, /proc/PID/status,
    /// /proc/PID/task/TID/stat: top-like monitors and runtimes keep them open and read them
    /// again): it exists only once that process does. The PIDs are the ones the application
    /// had; in a PID namespace of its own they are not (nor opened late: refused as before).
    static func isProcessFile(_ f: FileDescriptorImage) -> Bool {
        guard f.path.hasPrefix("/proc/") else { return false }
        let first = f.path.dropFirst("/proc/".count).prefix { $0 != "/" }
        return !first.isEmpty && first.allSatisfy(\.isNumber)
    }

    /// The files of processes' /proc directories (isProcessFile), once every process of the
    /// tree exists (after restorePidfds): opened by path, at their number and offset.
    func restoreProcessFiles() throws {
        guard !ownNamespace else { return }
        for f in image.fds where f.kind == .regular && f.sharedID == nil && Self.isProcessFile(f) {
            let src = try reopen(f, path: f.path, who: "PID \(pid) fd \(f.fd)")
            try placeFD(src, as: f)
            if src != UInt64(f.fd) { try inj.call("close", .close, src) }
            try restoreOffset(f, fd: UInt64(f.fd))
        }
    }

    /// Puts a file's or directory's offset back on `fd` (none on an O_PATH fd: lseek(2) on it
    /// is EBADF, open(2)). A file of a pseudo file system (PseudoFiles), whose content is
    /// generated anew, may refuse a seek past its end: the offset then stays at 0, where the
    /// program's next rewind puts it anyway.
    func restoreOffset(_ f: FileDescriptorImage, fd: UInt64) throws {
        guard f.kind == .regular || f.kind == .directory, f.flags & OpenFlags.path == 0 else { return }
        if f.position != 0 && f.kind == .regular && PseudoFiles.contains(f.path) {
            _ = try inj.raw(.lseek, fd, UInt64(bitPattern: f.position), UInt64(SEEK_SET))
        } else {
            try inj.call("lseek fd \(f.fd)", .lseek, fd, UInt64(bitPattern: f.position), UInt64(SEEK_SET))
        }
    }

    /// An end of a pipe held by ssi (PipeRegistry), taken from ssi (pidfd_getfd): the end
    /// pipe(2) made, whose flags are a pipe's own. Opened through /proc/<ssi>/fd/N instead,
    /// it would be a new open of the pipe (fifo_open) with O_LARGEFILE, which open(2) adds on
    /// 64-bit systems and F_SETFL cannot take away: F_GETFL would differ from the program's.
    /// Its O_NONBLOCK and packet mode (O_DIRECT) set as they were. nil when the snapshot has
    /// no such pipe.
    func openPipeEnd(_ f: FileDescriptorImage) throws -> UInt64? {
        let write = (f.flags & O_ACCMODE) == O_WRONLY
        guard let id = f.pipeID, let mine = pipes?.fd(id, write: write) else { return nil }
        let fd = try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "pipe end fd \(f.fd)")
        try inj.call("fcntl F_SETFL pipe end fd \(f.fd)", .fcntl, fd, UInt64(F_SETFL), UInt64(f.flags & (O_NONBLOCK | OpenFlags.direct)))
        return fd
    }

    /// Puts `src` at `f`'s number with `f`'s FD_CLOEXEC. A `src` already at that number has
    /// none (a new fd, or one taken with FDTransfer); dup3(2) refuses to copy an fd onto
    /// itself (EINVAL).
    func placeFD(_ src: UInt64, as f: FileDescriptorImage) throws {
        if src != UInt64(f.fd) {
            try inj.call("dup3 to fd \(f.fd)", .dup3, src, UInt64(f.fd), UInt64(f.closeOnExec ? O_CLOEXEC : 0))
        } else if f.closeOnExec {
            try inj.call("fcntl FD_CLOEXEC", .fcntl, src, UInt64(F_SETFD), UInt64(FD_CLOEXEC))
        }
    }

    /// The fd that becomes `f`, and whether it is a temporary one to close after the dup;
    /// nil when there is nothing to restore.
    private func sourceFD(for f: FileDescriptorImage, ttyFD: UInt64?) throws -> (UInt64, Bool)? {
        // An epoll instance shared with other fds or watching a pidfd: built once every
        // process exists (restoreLateEpolls).
        if f.kind == .epoll && isLateEpoll(f) { return nil }
        if let id = f.sharedID, let i = shared?.index[id], let base = shared?.base {
            // One description shared with other fds: inherited from the root.
            return (UInt64(base + Int32(i)), false)
        }
        switch f.kind {
        case .pipe where f.external == true && inheritFDs[f.fd] != nil:
            // Connected to what the caller of ssi restart gives for it. Opened non-blocking
            // (a pipe with no writer would block a read-only open, fifo(7)), then given its
            // own flags back.
            guard let pipes, let callerFD = inheritFDs[f.fd] else { return nil }
            let path = try pipes.external(f, callerFD: callerFD, pid: pid)
            let mode = (f.flags & O_ACCMODE) == O_WRONLY ? O_WRONLY : O_RDONLY
            let fd = try open("open inherited fd \(callerFD)", path: path, flags: mode | O_NONBLOCK)
            try inj.call("fcntl F_SETFL", .fcntl, fd, UInt64(F_SETFL), UInt64(f.flags & ~O_ACCMODE))
            return (fd, true)
        case .pipe:
            return try openPipeEnd(f).map { ($0, true) }
        case .eventfd, .timerfd, .signalfd, .epoll:
            return (try createAnonInode(f), true)
        case .pidfd:
            // Its process may not exist yet: made once every one does (restorePidfds).
            return nil
        case .regular where f.sharedID == nil && !ownNamespace && Self.isProcessFile(f):
            // A file of a process's /proc directory: opened once every process exists
            // (restoreProcessFiles).
            return nil
        case .inotify:
            guard let fsObjects else { return nil }
            return (try fsObjects.receiveInotify(f, pid: image.pid, inj: inj, ssiPidFD: ssiPidFD), true)
        case .unixSocket, .tcpSocket, .udpSocket, .netlinkSocket, .packetSocket:
            // Created in the root before it forked: inherited at its slot.
            guard let id = f.socketID, let slot = shared?.socketSlot[id] else { return nil }
            return (UInt64(slot), false)
        case .fifo where f.fifoDeleted == true:
            // Made nameless by ssi, which holds it: opened through /proc/<ssi>/fd/N, the same
            // pipe (fifo_open); ssi holds both ends, so no open waits.
            guard let id = f.fifoID, let path = fsObjects?.fifoPath(id) else { return nil }
            return (try reopen(f, path: path, who: "PID \(pid) fd \(f.fd)"), true)
        case .namespace:
            return (try openNamespace(f), true)
        case .mqueue:
            return (try openMessageQueue(f), true)
        case .fanotify:
            let mine = try makeFanotifyGroup(f, pid: pid)
            defer { close(mine) }
            return (try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "fanotify fd \(f.fd)"), true)
        case .ptyMaster:
            return (try takePTYMaster(f), true)
        case .tty where ttyFD != nil && f.ptyIndex == nil:
            return (ttyFD!, false)
        case .tty where f.ttyHungUp == true && ttyFD == nil:
            return (try hungUpTerminal(f), true)
        case .directory where f.removedDirectoryMode != nil:
            return (try reopenRemovedDirectory(f, who: "PID \(pid) fd \(f.fd)"), true)
        default:
            // A pair's slave by its index now (PTYRegistry.path: renumbered in a migration).
            let path = f.deletedFileID.flatMap { deletedFiles?.path($0) } ?? (f.kind == .tty ? ptys?.path(f) : nil) ?? f.path
            return (try reopen(f, path: path, who: "PID \(pid) fd \(f.fd)"), true)
        }
    }

    /// A directory removed while open: made again empty at its old path with its mode,
    /// opened, and removed again, so that the fd is on a removed directory of that name under
    /// the same parent, as before (getdents(2) on it reads nothing, openat(2) in it fails
    /// with ENOENT).
    func reopenRemovedDirectory(_ f: FileDescriptorImage, who: String) throws -> UInt64 {
        try makeRemovedDirectory(f.path, mode: f.removedDirectoryMode ?? 0o755, what: "\(who) was open on the removed directory \(f.path)")
        defer { rmdir(f.path) }
        return try reopen(f, path: f.path, who: who)
    }

    /// Opens `path` again in the process with the fd's flags (never O_CREAT, O_TRUNC or
    /// O_EXCL; O_NOCTTY, so that no terminal becomes a controlling one). `who` names the fd.
    func reopen(_ f: FileDescriptorImage, path: String, who: String) throws -> UInt64 {
        var flags = f.flags & ~(O_CREAT | O_TRUNC | O_EXCL | O_NOCTTY)
        // O_NOFOLLOW guarded the open of its own name (mkstemp(3) and Python's tempfile use
        // it); a file opened again through a /proc/PID/fd link of ssi's (an unlinked file
        // made again, a FIFO) would fail it with ELOOP (open(2)).
        if path != f.path { flags &= ~O_NOFOLLOW }
        // open(2) records O_ASYNC without enabling signal-driven I/O (open(2), BUGS): it is
        // set with F_SETFL once the owner is (restoreSignalOwner), and F_SETFL acts only on a
        // change of the flag.
        flags &= ~O_ASYNC
        // A file made with O_TMPFILE keeps that flag (with its O_DIRECTORY bit) in f_flags:
        // opened again by its /proc link it would fail with ENOTDIR. ssi made it again with
        // O_TMPFILE (DeletedFiles), so linkat(2) can still give it a name.
        if flags & OpenFlags.tmpfile == OpenFlags.tmpfile { flags &= ~OpenFlags.tmpfile }
        let r = try openRaw(path, flags: flags | O_NOCTTY)
        if r < 0 {
            throw SSIError.sys("\(who): reopen \(f.path)", errno: Int32(-r),
                               hint: f.kind == .tty ? "the terminal is gone: restart with -t to use yours" : nil)
        }
        return UInt64(r)
    }
}

// Signal-driven I/O (fcntl(2), "Managing signals"): O_ASYNC, the owner that gets the signal
// and the signal. open(2) ignores O_ASYNC, so it is set with F_SETFL, after the owner and
// the signal, so that no SIGIO goes to nobody in between.

extension ProcessDumper {
    /// F_GETOWN_EX and F_GETSIG of fd `fd`, read on a copy of it (the same open file
    /// description); the owner's pid as this process sees it (its PID namespace).
    func signalOwner(fd: Int32) throws -> SignalOwner? {
        let copy = try fdCopy(fd: fd)
        defer { close(copy) }
        // struct f_owner_ex { int type; pid_t pid; }; F_GETOWN_EX 16, F_GETSIG 11 (GNU
        // values of <fcntl.h>, which Swift does not see).
        var owner: [Int32] = [0, 0]
        guard owner.withUnsafeMutableBytes({ fcntl(copy, 16, $0.baseAddress!) }) == 0 else { return nil }
        let sig = fcntl(copy, 11)
        var pid = owner[1]
        if pid > 0, let inner = PIDNamespace.nsIDs(pid).last, inner != pid {
            // ssi sees its own pid of the owner; the application's namespace another.
            pid = inner
        }
        if pid == 0 && sig <= 0 { return nil }
        return SignalOwner(type: owner[0], pid: pid, signal: max(sig, 0))
    }
}

extension ProcessRestorer {
    func restoreSignalOwner(_ f: FileDescriptorImage, target: UInt64) throws {
        if let o = f.signalOwner {
            if o.signal != 0 { try inj.call("fcntl F_SETSIG fd \(f.fd)", .fcntl, target, 10 /* F_SETSIG */, UInt64(o.signal)) }
            if o.pid != 0 {
                // struct f_owner_ex { int type; pid_t pid; }
                try mem.write(words: [UInt32(bitPattern: o.type), UInt32(bitPattern: o.pid)], to: scratch + 2048)
                let r = try inj.raw(.fcntl, target, 15 /* F_SETOWN_EX */, scratch + 2048)
                if r < 0 { warn("PID \(pid) fd \(f.fd): signal owner \(o.pid) not set again: \(String(cString: strerror(Int32(-r))))") }
            }
        }
        if f.flags & O_ASYNC != 0 {
            let now = try inj.call("fcntl F_GETFL fd \(f.fd)", .fcntl, target, UInt64(F_GETFL))
            try inj.call("fcntl O_ASYNC fd \(f.fd)", .fcntl, target, UInt64(F_SETFL), now | UInt64(O_ASYNC))
        }
    }
}
