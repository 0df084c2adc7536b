import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Named pipes (fifo(7)). A FIFO keeps a name in the file system, but its bytes live in a
// pipe that exists only while someone has it open: when the application is killed they are
// gone. The checkpoint saves them as for anonymous pipes (tee(2), nothing consumed); the
// restart makes sure the FIFO exists at its path, opens it in ssi, puts the bytes back, and
// keeps it open while the processes reopen it by path, so that they all find the same pipe.

extension ProcessDumper {
    /// An fd on a FIFO: which FIFO (device and inode), its path, mode and owner.
    func fifo(fd: Int32, path: String, flags: Int32, cloexec: Bool, st: stat) -> FileDescriptorImage {
        var img = FileDescriptorImage(fd: fd, kind: .fifo, path: path, flags: flags, closeOnExec: cloexec, position: 0)
        img.fifoID = ProcessDumper.fileID(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        img.fifoMode = UInt32(st.st_mode & 0o7777)
        img.fifoOwner = [st.st_uid, st.st_gid]
        img.fileTimes = FileTimes.get(path)
        img.directoryTimes = FileTimes.get((path as NSString).deletingLastPathComponent)
        return img
    }

    /// The bytes and capacity of every FIFO the application has open, read once per FIFO
    /// through any fd of it that is not O_PATH, and copied to every fd on that FIFO.
    static func completeFifos(_ tables: inout [Int32: [FileDescriptorImage]]) throws {
        var done = [String: (Data, Int32)]()
        for (pid, fds) in tables.sorted(by: { $0.key < $1.key }) {
            for f in fds where f.kind == .fifo && f.flags & OpenFlags.path == 0 {
                guard let id = f.fifoID, done[id] == nil else { continue }
                // Opening /proc/PID/fd/N of a FIFO opens the same pipe (fifo_open, the inode's
                // i_pipe), whatever the end that fd holds.
                done[id] = try ProcessDumper(pid: pid).peekPipe(fd: f.fd)
            }
        }
        for pid in tables.keys {
            for i in tables[pid]!.indices where tables[pid]![i].kind == .fifo {
                guard let id = tables[pid]![i].fifoID, let (data, size) = done[id] else { continue }
                tables[pid]![i].pipeData = data.isEmpty ? nil : data
                tables[pid]![i].pipeSize = size
            }
        }
    }
}

/// Checks done before a restart creates anything: the FIFO path is free or still a FIFO.
func preflightFifo(_ f: FileDescriptorImage, pid: Int32) throws {
    var st = stat()
    if f.fifoDeleted != true, lstat(f.path, &st) == 0 {
        if st.st_mode & S_IFMT != S_IFIFO {
            throw SSIError(.state, "PID \(pid) fd \(f.fd): \(f.path) was a FIFO and is now another kind of file; nothing was changed",
                           hint: "move that file away (restart recreates the FIFO), then restart again")
        }
        return
    }
    let dir = (f.path as NSString).deletingLastPathComponent
    if !dir.isEmpty && access(dir, F_OK) != 0 {
        throw SSIError(.notFound, "PID \(pid) fd \(f.fd): the directory \(dir) of the FIFO \(f.path) no longer exists; nothing was changed",
                       hint: "recreate the directory, then restart again")
    }
}

/// Makes the FIFO of `f` exist (mkfifo(3) with its mode and owner, if it is gone), opens it
/// and refills its bytes. Returns the fd that ssi holds: O_RDWR, which on Linux opens a FIFO
/// without waiting for a partner (fifo(7)), and, being both a reader and a writer, lets every
/// process of the application open either end without blocking.
func openFifo(_ f: FileDescriptorImage, pid: Int32, takeover: NameTakeover? = nil) throws -> Int32 {
    if f.fifoDeleted == true { return try openUnlinkedFifo(f, pid: pid) }
    let what = "PID \(pid) fd \(f.fd): FIFO \(f.path)"
    var st = stat()
    if lstat(f.path, &st) != 0 {
        let mode = mode_t(f.fifoMode ?? 0o600)
        if mkfifo(f.path, mode) != 0 && errno != EEXIST { throw SSIError.sys("\(what): mkfifo", errno: errno) }
        // mkfifo applies our umask: set the exact mode, and the owner it had.
        chmod(f.path, mode)
        if let o = f.fifoOwner, o.count == 2 { _ = lchown(f.path, o[0], o[1]) }
    }
    let fd = open(f.path, O_RDWR | O_NONBLOCK | O_CLOEXEC)
    if fd < 0 { throw SSIError.sys("\(what): open", errno: errno) }
    var ok = false
    defer { if !ok { close(fd) } }
    fstat(fd, &st)
    guard st.st_mode & S_IFMT == S_IFIFO else {
        throw SSIError(.state, "\(what) is no longer a FIFO", hint: "move that file away (restart recreates the FIFO), then restart again")
    }
    // Bytes already there mean that a process outside the application holds the FIFO open:
    // adding the saved bytes would duplicate them.
    let queued = SocketIoctl.queuedBytes(fd) ?? 0
    let saved = f.pipeData ?? Data()
    // Taking over from a migration's source copy on the same kernel: the bytes there are
    // its own, the ones saved.
    let own = takeover?.enabled == true && queued == saved.count
    if queued > 0 && !saved.isEmpty && !own {
        throw SSIError(.busy, "\(what) already holds \(queued) bytes: a process outside the application has it open, and refilling it would mix old and new bytes",
                       hint: "stop the processes that use \(f.path) (fuser \(f.path)), then restart again")
    }
    if let size = f.pipeSize, size > 0 { Pipe.setCapacity(fd, size) }
    if let data = f.pipeData, !data.isEmpty, !own {
        let n = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n != data.count { throw SSIError(.system, "\(what): could not put back its \(data.count) bytes (\(n) written)") }
    }
    // Refilling (or making) it moved the times; the application did not.
    FileTimes.set(f.path, f.fileTimes)
    FileTimes.set((f.path as NSString).deletingLastPathComponent, f.directoryTimes)
    ok = true
    return fd
}

/// A FIFO that had been unlinked: made at its old path (or beside it, if that name is taken
/// now), opened and refilled like any FIFO, then unlinked at once; ssi's fd is what the
/// processes open. The directory's times are put back: nothing of it changed for the program.
private func openUnlinkedFifo(_ f: FileDescriptorImage, pid: Int32) throws -> Int32 {
    let dir = (f.path as NSString).deletingLastPathComponent
    let dirTimes = FileTimes.get(dir.isEmpty ? "/" : dir)
    var st = stat()
    let path = lstat(f.path, &st) == 0 ? "\(f.path).ssi-restore-\(getpid())" : f.path
    let mode = mode_t(f.fifoMode ?? 0o600)
    if mkfifo(path, mode) != 0 { throw SSIError.sys("PID \(pid) fd \(f.fd): make the unlinked FIFO \(f.path) again (mkfifo \(path))", errno: errno) }
    defer {
        unlink(path)
        FileTimes.set(dir.isEmpty ? "/" : dir, dirTimes)
    }
    chmod(path, mode)
    if let o = f.fifoOwner, o.count == 2 { _ = lchown(path, o[0], o[1]) }
    var named = f
    named.path = path
    named.fifoDeleted = nil
    named.fileTimes = nil
    named.directoryTimes = nil
    return try openFifo(named, pid: pid)
}
