import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// fanotify groups (fanotify(7)): fdinfo shows the group's fanotify_init flags and event
// flags, and one line per mark (fs/notify/fdinfo.c, fanotify_fdinfo): "fanotify ino:I
// sdev:D mflags:F mask:M ignored_mask:N fhandle-bytes:B fhandle-type:T f_handle:HEX" for an
// inode mark, every number in hex; mount and file-system marks ("mnt_id:", no "ino:") are
// refused. Restart makes the group in ssi, marks the same paths, and the process takes it
// with pidfd_getfd(2), as for inotify. Events queued at checkpoint time are not restored.

extension ProcessDumper {
    func fanotify(fd: Int32, link: String, flags: Int32, cloexec: Bool) throws -> FileDescriptorImage {
        var img = FileDescriptorImage(fd: fd, kind: .fanotify, path: link, flags: flags, closeOnExec: cloexec, position: 0)
        var marks = [FanotifyMark]()
        for line in try fdinfoMarks(fd: fd, prefix: "fanotify ") {
            if let f = line.hex("flags"), let e = line.hex("event-flags") {
                img.fanotifyFlags = UInt32(truncatingIfNeeded: f); img.fanotifyEventFlags = UInt32(truncatingIfNeeded: e)
                continue
            }
            let subject = "PID \(pid) fd \(fd): fanotify mark"
            guard line.hex("ino") != nil, let sdev = line.hex("sdev"), let mflags = line.hex("mflags"), let mask = line.hex("mask"),
                  let ignored = line.hex("ignored_mask"), let type = line.hex("fhandle-type"), let size = line.hex("fhandle-bytes"),
                  let handleHex = line.fields["f_handle"], handleHex.count == Int(size) * 2 else {
                throw SSIError(.unsupported, "\(subject) \"\(line.text)\": only marks on files and directories can be restored (not mount or file-system marks); nothing was written",
                               hint: "use `ssi checkpoint -i` to restore the fanotify fd as a closed fd")
            }
            let handle = FileHandles.bytes(hex: handleHex)
            let file = try FileHandles.path(device: UInt32(truncatingIfNeeded: sdev), handleType: Int32(truncatingIfNeeded: type), handle: handle, what: subject)
            var m = FanotifyMark(path: file.path, mflags: UInt32(truncatingIfNeeded: mflags), mask: mask, ignoredMask: ignored)
            m.isSymlink = file.isSymlink ? true : nil
            marks.append(m)
        }
        img.fanotifyMarks = marks
        return img
    }
}

/// A fanotify group with the marks of `f`, held by an fd of ssi.
func makeFanotifyGroup(_ f: FileDescriptorImage, pid: Int32) throws -> Int32 {
    let what = "PID \(pid) fd \(f.fd): fanotify group"
    let r = Fanotify.initialize(flags: f.fanotifyFlags ?? 0, eventFlags: f.fanotifyEventFlags ?? 0)
    if r < 0 { throw SSIError.sys("\(what): fanotify_init", errno: Int32(-r)) }
    let fd = Int32(r)
    var ok = false
    defer { if !ok { close(fd) } }
    // FAN_MARK_ADD 0x1, FAN_MARK_DONT_FOLLOW 0x4, FAN_MARK_IGNORED_MASK 0x20,
    // FAN_MARK_IGNORED_SURV_MODIFY 0x40, FAN_MARK_EVICTABLE 0x200, FAN_MARK_IGNORE 0x400.
    // fdinfo lists a group's marks newest first (each is added at the head of the group's
    // list): added here oldest first, so that the group reads as it did.
    for m in (f.fanotifyMarks ?? []).reversed() {
        let base: UInt32 = 0x1 | (m.isSymlink == true ? 0x4 : 0) | (m.mflags & 0x200)
        if m.mask != 0 {
            let e = Fanotify.mark(fd, flags: base, mask: m.mask, path: m.path)
            if e < 0 { throw SSIError.sys("\(what): mark \(m.path)", errno: Int32(-e), hint: e == -Int(ENOENT) ? "recreate \(m.path), then restart again" : nil) }
        }
        if m.ignoredMask != 0 {
            let kind: UInt32 = m.mflags & 0x400 != 0 ? 0x400 : 0x20
            let e = Fanotify.mark(fd, flags: base | kind | (m.mflags & 0x40), mask: m.ignoredMask, path: m.path)
            if e < 0 { throw SSIError.sys("\(what): ignore mask on \(m.path)", errno: Int32(-e)) }
        }
    }
    // The group's fd flags (O_NONBLOCK) belong to the description the process gets.
    _ = fcntl(fd, F_SETFL, f.flags & O_NONBLOCK)
    ok = true
    return fd
}
