import Foundation
import SSIImage
import SSIInject
import SSIIPC
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// POSIX message queues (mq_overview(7)). An mq descriptor is a file of the IPC namespace's
// queue file system (statfs f_type MQUEUE_MAGIC); /proc/PID/fd names it "/name". The
// checkpoint reads the queue's attributes and messages by name from inside the process's IPC
// namespace and puts the messages back; restart makes the queue again if it is not there (in
// a namespace made again, it never is), before the processes, and each process opens it by
// name with its fd's flags. An mq_notify(3) registration is read from the queue's own file
// (read(2) of an mq descriptor gives "QSIZE:.. NOTIFY:.. SIGNO:.. NOTIFY_PID:..", the pid as
// the reader sees it) and made again by its process, with a signal value of 0 (nothing shows
// the one it gave). Refused, named: a SIGEV_THREAD registration (glibc's netlink socket and
// helper thread) and a queue unlinked while open.

extension ProcessDumper {
    static let mqueueMagic = 0x1980_0202

    /// Whether fd `fd` of this process is a POSIX message queue.
    func isMessageQueue(fd: Int32) -> Bool {
        ThreadFS.fileSystemType("/proc/\(pid)/fd/\(fd)") == ProcessDumper.mqueueMagic
    }

    func messageQueue(fd: Int32, link: String, flags: Int32, cloexec: Bool, st: stat) throws -> FileDescriptorImage {
        if link.hasSuffix(" (deleted)") {
            throw SSIError(.unsupported, "PID \(pid) fd \(fd): POSIX message queue \(link) was removed (mq_unlink) while open, and such a queue cannot be read by name; nothing was written and the application goes on",
                           hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
        }
        let nsFD = open("/proc/\(pid)/ns/ipc", O_RDONLY | O_CLOEXEC)
        guard nsFD >= 0 else { throw SSIError.sys("open /proc/\(pid)/ns/ipc", errno: errno) }
        defer { close(nsFD) }
        let read = AppNamespaces.inside(nsFD, type: AppNamespaces.newIPC) { Result { try PosixQueues.read(link) } }
        guard let read else { throw SSIError(.system, "could not enter the IPC namespace of PID \(pid) to read its message queue \(link)") }
        let q: (maxMessages: Int, messageSize: Int, messages: [MessageQueueImage.Message])
        do { q = try read.get() } catch {
            throw SSIError(.system, "PID \(pid) fd \(fd): reading POSIX message queue \(link) failed: \(error); nothing was written and the application goes on")
        }
        var img = FileDescriptorImage(fd: fd, kind: .mqueue, path: link, flags: flags, closeOnExec: cloexec, position: 0)
        var mq = MessageQueueImage(name: link, maxMessages: q.maxMessages, messageSize: q.messageSize, mode: UInt32(st.st_mode) & 0o7777,
                                   uid: st.st_uid, gid: st.st_gid, messages: q.messages)
        var mine = stat(), theirs = stat()
        if stat("/proc/self/ns/ipc", &mine) == 0, stat("/proc/\(pid)/ns/ipc", &theirs) == 0, mine.st_ino != theirs.st_ino {
            mq.ipcNamespace = UInt64(theirs.st_ino)
        }
        mq.notify = try notification(fd: fd, name: link)
        img.mqueue = mq
        return img
    }

    /// This process's registration on the queue of fd `fd`, read from the queue's file.
    private func notification(fd: Int32, name: String) throws -> [Int32]? {
        let copy = open("/proc/\(pid)/fd/\(fd)", O_RDONLY | O_CLOEXEC)
        guard copy >= 0 else { return nil }
        defer { close(copy) }
        var buf = [UInt8](repeating: 0, count: 256)
        let n = read(copy, &buf, buf.count)
        guard n > 0 else { return nil }
        var fields = [String: Int64]()
        for w in String(decoding: buf.prefix(n), as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let kv = w.split(separator: ":", maxSplits: 1)
            if kv.count == 2, let v = Int64(kv[1]) { fields[String(kv[0])] = v }
        }
        guard let owner = fields["NOTIFY_PID"], owner == Int64(pid) else { return nil }
        let how = Int32(fields["NOTIFY"] ?? 0), signo = Int32(fields["SIGNO"] ?? 0)
        if how == 2 {
            throw SSIError(.unsupported, "PID \(pid) fd \(fd): POSIX message queue \(name) has an mq_notify(SIGEV_THREAD) registration (a netlink socket and a thread of glibc's), which cannot be made again; nothing was written and the application goes on",
                           hint: "checkpoint it once the notification has fired or been removed (mq_notify(mqd, NULL))")
        }
        return [how, signo]
    }
}

enum MessageQueues {
    /// Makes every queue of the snapshot that is missing, each once, in its IPC namespace
    /// (`ipcNamespaces`: those made again; nil: ssi's).
    static func create(from images: [ProcessImage], ipcNamespaces: [UInt64: Int32]) throws {
        var done = Set<String>()
        for image in images {
            for f in image.fds where f.kind == .mqueue {
                guard let q = f.mqueue, done.insert("\(q.ipcNamespace ?? 0) \(q.name)").inserted else { continue }
                if let ns = q.ipcNamespace {
                    guard let fd = ipcNamespaces[ns] else { throw SSIError(.corrupt, "PID \(image.pid) fd \(f.fd): message queue \(q.name) of IPC namespace ipc:[\(ns)], which no process of the snapshot is in") }
                    let r = AppNamespaces.inside(fd, type: AppNamespaces.newIPC) { Result { try PosixQueues.create(q) } }
                    guard let r else { throw SSIError(.system, "could not enter IPC namespace ipc:[\(ns)] to make message queue \(q.name)") }
                    _ = try r.get()
                } else {
                    try PosixQueues.create(q)
                }
            }
        }
    }
}

extension ProcessRestorer {
    /// Opens the queue of `f` in the process (which is in its IPC namespace by now) with
    /// the fd's access mode and O_NONBLOCK. The mq_open syscall takes the name without its
    /// leading '/' (glibc strips it, mq_open(3)).
    /// The process's mq_notify registrations, on the fds they were saved with.
    func restoreQueueNotifications() throws {
        var done = Set<String>()   // one registration per queue: every fd of it shows it
        for f in image.fds where f.kind == .mqueue {
            guard let n = f.mqueue?.notify, n.count == 2, done.insert(f.path).inserted else { continue }
            // struct sigevent: sigev_value (8 bytes), sigev_signo, sigev_notify, then the
            // union up to 64 bytes.
            var ev = [UInt8](repeating: 0, count: 64)
            withUnsafeBytes(of: n[1].littleEndian) { ev.replaceSubrange(8..<12, with: $0) }
            withUnsafeBytes(of: n[0].littleEndian) { ev.replaceSubrange(12..<16, with: $0) }
            try mem.write(ev, to: scratch + 3072)
            let r = try inj.raw(.mq_notify, UInt64(f.fd), scratch + 3072)
            if r < 0 { warn("PID \(image.pid) fd \(f.fd): mq_notify on \(f.path) not made again: \(String(cString: strerror(Int32(-r))))") }
        }
    }

    func openMessageQueue(_ f: FileDescriptorImage) throws -> UInt64 {
        guard let q = f.mqueue else { throw SSIError(.corrupt, "PID \(image.pid) fd \(f.fd): message queue without its description") }
        let name = try putString(String(q.name.drop { $0 == "/" }))
        let r = try inj.raw(.mq_open, name, UInt64(f.flags & (O_ACCMODE | O_NONBLOCK)), 0, 0)
        if r < 0 { throw SSIError.sys("PID \(image.pid) fd \(f.fd): mq_open \(q.name)", errno: Int32(-r)) }
        return UInt64(r)
    }
}
