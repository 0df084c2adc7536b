import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// inotify(7) instances: their watches are read from /proc/PID/fdinfo at checkpoint time and
// rebuilt at restart, in ssi, with the same watch descriptors; the process then takes the
// instance with pidfd_getfd(2). Events queued and not read are not restored.

extension ProcessDumper {
    /// One line of /proc/PID/fdinfo/FD that describes a mark: fs/notify/fdinfo.c writes
    /// inotify and fanotify marks as "key:value" words, every number in hex.
    struct FdinfoMark {
        let text: Substring
        let fields: [Substring: Substring]
        func hex(_ key: Substring) -> UInt64? { fields[key].flatMap { UInt64($0, radix: 16) } }
    }

    /// The lines of fd `fd`'s fdinfo that start with `prefix` ("inotify ", "fanotify ").
    func fdinfoMarks(fd: Int32, prefix: String) throws -> [FdinfoMark] {
        try ProcFS.read("/proc/\(pid)/fdinfo/\(fd)").split(separator: "\n").filter { $0.hasPrefix(prefix) }.map { line in
            var fields = [Substring: Substring]()
            for word in line.dropFirst(prefix.count).split(separator: " ") {
                guard let colon = word.firstIndex(of: ":") else { continue }
                fields[word[..<colon]] = word[word.index(after: colon)...]
            }
            return FdinfoMark(text: line, fields: fields)
        }
    }

    /// One inotify fd. fdinfo shows a line per watch (fs/notify/fdinfo.c, inotify_fdinfo):
    /// "inotify wd:W ino:I sdev:D mask:M ignored_mask:0 fhandle-bytes:N fhandle-type:T
    /// f_handle:HEX", every number in hex. The watched inode is named by its file handle;
    /// open_by_handle_at(2) opens it again and /proc/self/fd gives its path.
    func inotify(fd: Int32, link: String, flags: Int32, cloexec: Bool) throws -> FileDescriptorImage {
        var img = FileDescriptorImage(fd: fd, kind: .inotify, path: link, flags: flags, closeOnExec: cloexec, position: 0)
        var watches = [InotifyWatch]()
        for line in try fdinfoMarks(fd: fd, prefix: "inotify ") {
            guard let wd = line.hex("wd"), let ino = line.hex("ino"), let sdev = line.hex("sdev"), let mask = line.hex("mask") else {
                throw SSIError(.system, "PID \(pid) fd \(fd): cannot parse the inotify watch line \"\(line.text)\" of /proc/\(pid)/fdinfo/\(fd)",
                               hint: "this kernel's fdinfo format is not the one SwiftSSI knows; report it")
            }
            let subject = "PID \(pid) fd \(fd): inotify watch \(wd) (inode \(ino) on device \(sdev >> 20):\(sdev & 0xfffff))"
            let handleHex = line.fields["f_handle"] ?? ""
            guard let type = line.hex("fhandle-type"), let size = line.hex("fhandle-bytes"), size > 0, handleHex.count == Int(size) * 2 else {
                throw SSIError(.unsupported, "\(subject): its file system gives no file handle, so the watched file cannot be named; nothing was written",
                               hint: "remove the watch before checkpointing, or use `ssi checkpoint -i` to restore the inotify fd as a closed fd")
            }
            let handle = FileHandles.bytes(hex: handleHex)
            let file = try FileHandles.path(device: UInt32(truncatingIfNeeded: sdev), handleType: Int32(truncatingIfNeeded: type),
                                            handle: handle, what: subject)
            watches.append(InotifyWatch(wd: Int32(truncatingIfNeeded: wd), mask: UInt32(truncatingIfNeeded: mask), path: file.path,
                                        fileID: file.id, isSymlink: file.isSymlink ? true : nil))
        }
        img.inotifyWatches = watches.sorted { $0.wd < $1.wd }
        // Queued events are lost at restart: count them, to say so then. FIONREAD on an
        // inotify fd gives the bytes queued (inotify(7)); the fd is borrowed with pidfd_getfd.
        if let copy = try? fdCopy(fd: fd) {
            if let queued = SocketIoctl.queuedBytes(copy), queued > 0 { img.inotifyQueuedBytes = queued }
            close(copy)
        }
        return img
    }
}

extension ProcessDumper {
    /// A watch on an unlinked file can be rebuilt only on the copy the restart makes of it,
    /// which exists when some fd of the application holds that file.
    static func completeInotify(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool) throws {
        let held = Set(tables.values.flatMap { $0.compactMap(\.deletedFileID) })
        for pid in tables.keys.sorted() {
            for f in tables[pid]! where f.kind == .inotify {
                for w in f.inotifyWatches ?? [] where w.path.hasSuffix(" (deleted)") && !held.contains(w.fileID) {
                    if ignoreUnsupported { tables[pid]!.removeAll { $0.fd == f.fd }; break }
                    throw SSIError(.unsupported, "PID \(pid) fd \(f.fd): inotify watch \(w.wd) is on \(w.path), an unlinked file no fd of the application holds, which cannot be made again; nothing was written and the application goes on",
                                   hint: "remove the watch before checkpointing, or use `ssi checkpoint -i` to restore the inotify fd as a closed fd")
                }
            }
        }
    }
}

/// File handles (name_to_handle_at(2), open_by_handle_at(2)).
enum FileHandles {
    /// fdinfo's "f_handle:" (two hex digits per byte) as bytes.
    static func bytes(hex: Substring) -> [UInt8] {
        var out = [UInt8]()
        var i = hex.startIndex
        while i < hex.endIndex, let j = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex) {
            out.append(UInt8(hex[i..<j], radix: 16) ?? 0)
            i = j
        }
        return out
    }

    /// The path of the inode a file handle names, on the file system whose superblock has
    /// kernel device number `device` (MAJOR << 20 | MINOR, as fdinfo prints s_dev).
    /// open_by_handle_at needs CAP_DAC_READ_SEARCH and any fd on that file system: we take
    /// the root of a mount of it from /proc/self/mountinfo, preferring one that mounts the
    /// file system's own root so that the path is complete.
    static func path(device: UInt32, handleType: Int32, handle: [UInt8], what: String) throws -> (path: String, id: String, isSymlink: Bool) {
        let major = device >> 20, minor = device & 0xfffff
        var mountPoint: String? = nil
        for line in try ProcFS.read("/proc/self/mountinfo").split(separator: "\n") {
            // "ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ..." (proc(5)); spaces are escaped as \040.
            let f = line.split(separator: " ")
            guard f.count > 4, f[2] == "\(major):\(minor)" else { continue }
            let point = f[4].replacingOccurrences(of: "\\040", with: " ")
            if f[3] == "/" { mountPoint = point; break }
            if mountPoint == nil { mountPoint = point }
        }
        guard let mountPoint else {
            throw SSIError(.unsupported, "\(what): no mount of device \(major):\(minor) is visible to ssi, so the watched file cannot be named; nothing was written",
                           hint: "run ssi in the application's mount namespace, or use `ssi checkpoint -i`")
        }
        // Not O_PATH: open_by_handle_at takes its mount fd with fdget(), which refuses O_PATH files.
        let mountFD = open(mountPoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if mountFD < 0 { throw SSIError.sys("\(what): open the mount point \(mountPoint)", errno: errno) }
        defer { close(mountFD) }
        let fd = InodeHandle.open(mountFD: mountFD, type: handleType, handle: handle, flags: OpenFlags.path | O_CLOEXEC)
        if fd == -Int(EPERM) {
            throw SSIError.sys("\(what): open_by_handle_at on \(mountPoint)", errno: EPERM, hint: "run as root (CAP_DAC_READ_SEARCH)")
        }
        if fd < 0 {
            throw SSIError(.unsupported, "\(what): the watched file cannot be opened from its file handle (open_by_handle_at: \(String(cString: strerror(Int32(-fd))))); nothing was written",
                           hint: "the watched file may have been deleted: remove the watch before checkpointing, or use `ssi checkpoint -i` to restore the inotify fd as a closed fd")
        }
        defer { close(Int32(fd)) }
        var st = stat()
        fstat(Int32(fd), &st)
        let path = try ProcFS.readLink("/proc/self/fd/\(fd)")
        // A handle of a file whose name left the dentry cache decodes to a disconnected
        // dentry (exportfs_decode_fh), whose /proc path is not a real one: check that the
        // path leads back to the same inode.
        var byPath = stat()
        if path.hasPrefix("/"), path.hasSuffix(" (deleted)"), st.st_nlink == 0 {
            // An unlinked file the watch keeps: the application holds it open (checked with
            // every fd, completeInotify), and the restart watches its nameless copy.
            return (path, ProcessDumper.fileID(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)), false)
        }
        guard path.hasPrefix("/"), !path.hasSuffix(" (deleted)"), lstat(path, &byPath) == 0,
              byPath.st_ino == st.st_ino, byPath.st_dev == st.st_dev else {
            throw SSIError(.unsupported, "\(what): the watched file has no reachable path (\(path)); nothing was written",
                           hint: "a watch on a deleted or unreachable file cannot be restored: remove it, or use `ssi checkpoint -i`")
        }
        return (path, ProcessDumper.fileID(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino)), st.st_mode & S_IFMT == S_IFLNK)
    }
}

/// Builds an inotify instance in ssi with the watches of `f`, each at its old watch
/// descriptor.
///
/// The kernel gives watch descriptors in increasing order from 1 (idr_alloc_cyclic in
/// inotify_add_to_idr, fs/notify/inotify/inotify_user.c) and does not reuse freed ones until
/// it wraps around. So, going through the watches by increasing wd, every missing wd is
/// taken by a placeholder watch that is removed at once, and the next real watch gets the
/// wd it had. The placeholder is a nameless file of ours, which no real watch can be on.
/// Removing a watch queues an IN_IGNORED event: those are read off before ssi hands the
/// instance over.
func makeInotifyInstance(_ f: FileDescriptorImage, pid: Int32, deletedFiles: DeletedFileRegistry?) throws -> Int32 {
    let fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
    if fd < 0 { throw SSIError.sys("PID \(pid) fd \(f.fd): inotify_init1", errno: errno, hint: errno == EMFILE ? "raise fs.inotify.max_user_instances" : nil) }
    var ok = false
    defer { if !ok { close(fd) } }
    let oTmpfile: Int32 = 0o20_200_000
    let placeholder = open("/tmp", oTmpfile | O_RDWR | O_CLOEXEC, 0o600)
    if placeholder < 0 { throw SSIError.sys("PID \(pid) fd \(f.fd): create a placeholder file in /tmp for inotify", errno: errno) }
    defer { close(placeholder) }
    let placeholderPath = "/proc/self/fd/\(placeholder)"
    let inMaskCreate: UInt32 = 0x1000_0000   // IN_MASK_CREATE (Linux 4.18): fail rather than change an existing watch
    let inDontFollow: UInt32 = 0x0200_0000
    func drain() {
        var buf = [UInt8](repeating: 0, count: 65536)
        while read(fd, &buf, buf.count) > 0 {}
    }
    var next: Int32 = 1
    for w in (f.inotifyWatches ?? []).sorted(by: { $0.wd < $1.wd }) {
        let what = "PID \(pid) fd \(f.fd): inotify watch \(w.wd) on \(w.path)"
        guard w.wd >= next else { throw SSIError(.corrupt, "\(what): watch descriptor listed twice in the snapshot") }
        while next < w.wd {
            let p = inotify_add_watch(fd, placeholderPath, UInt32(IN_ATTRIB) | inMaskCreate)
            if p < 0 { throw SSIError.sys("\(what): placeholder watch", errno: errno, hint: errno == ENOSPC ? "raise fs.inotify.max_user_watches" : nil) }
            inotify_rm_watch(fd, p)
            if p != next { throw SSIError(.system, "\(what): the kernel gave placeholder watch \(p), expected \(next); the watch descriptors cannot be rebuilt") }
            next += 1
        }
        drain()
        // A watch on an unlinked file goes on its nameless copy (DeletedFileRegistry), through
        // /proc/<ssi>/fd/N, which inotify_add_watch follows to that inode.
        let path = w.path.hasSuffix(" (deleted)") ? (deletedFiles?.path(w.fileID) ?? w.path) : w.path
        let r = inotify_add_watch(fd, path, w.mask | inMaskCreate | (w.isSymlink == true ? inDontFollow : 0))
        if r < 0 {
            let e = errno
            throw SSIError.sys(what, errno: e, hint: e == ENOENT ? "recreate \(w.path), then restart again"
                                    : e == EEXIST ? "\(w.path) is now the same file as another watched path: put the files back as they were"
                                    : e == ENOSPC ? "raise fs.inotify.max_user_watches" : nil)
        }
        if r != w.wd { throw SSIError(.system, "\(what): the kernel gave watch descriptor \(r), expected \(w.wd)") }
        next = w.wd + 1
    }
    drain()
    // The instance's file status flags (O_NONBLOCK) belong to the description the process gets.
    if fcntl(fd, F_SETFL, f.flags & O_NONBLOCK) < 0 { throw SSIError.sys("PID \(pid) fd \(f.fd): set the flags of the inotify fd", errno: errno) }
    if let q = f.inotifyQueuedBytes, q > 0 {
        warn("PID \(pid) fd \(f.fd): \(q) bytes of inotify events were queued and unread at checkpoint time; they are not restored")
    }
    ok = true
    return fd
}
