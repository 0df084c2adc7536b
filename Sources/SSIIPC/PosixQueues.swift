import Foundation
import CSSILinux
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// POSIX message queues (mq_overview(7)), in the calling thread's IPC namespace (each IPC
/// namespace has its own queue file system): read without losing a message, and made again.
public enum PosixQueues {
    /// The attributes and messages of queue `name` ("/name"). Messages are taken out one by
    /// one and sent back in the order received, which keeps the queue's order (by priority,
    /// then arrival, mq_receive(3)); the application is frozen meanwhile.
    public static func read(_ name: String) throws -> (maxMessages: Int, messageSize: Int, messages: [MessageQueueImage.Message]) {
        let fd = cssi_mq_open(name, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0, 0, 0)
        guard fd >= 0 else { throw SSIError.sys("mq_open \(name)", errno: -fd, hint: "a queue removed with mq_unlink while open cannot be saved") }
        defer { close(fd) }
        var flags = 0, maxmsg = 0, msgsize = 0, cur = 0
        let g = cssi_mq_getattr(fd, &flags, &maxmsg, &msgsize, &cur)
        guard g == 0 else { throw SSIError.sys("mq_getattr \(name)", errno: -g) }
        var out = [MessageQueueImage.Message]()
        var buf = [UInt8](repeating: 0, count: max(msgsize, 1))
        while true {
            var prio: UInt32 = 0
            let n = buf.withUnsafeMutableBytes { cssi_mq_receive_now(fd, $0.baseAddress, $0.count, &prio) }
            if n == -Int(EAGAIN) || n == -Int(ETIMEDOUT) { break }
            if n < 0 {
                try putBack(fd, out, name)
                throw SSIError.sys("mq_receive \(name)", errno: Int32(-n))
            }
            out.append(.init(priority: prio, data: Data(buf[0..<n])))
        }
        try putBack(fd, out, name)
        return (maxmsg, msgsize, out)
    }

    private static func putBack(_ fd: Int32, _ messages: [MessageQueueImage.Message], _ name: String) throws {
        for m in messages {
            let r = m.data.withUnsafeBytes { cssi_mq_send_now(fd, $0.baseAddress, $0.count, m.priority) }
            if r < 0 { throw SSIError.sys("mq_send back to \(name) (\(messages.count) messages were read)", errno: -r) }
        }
    }

    /// Makes queue `q` with its attributes, owner and messages; false if a queue of that name
    /// exists already (it is left as it is: a restart on the node where the application was
    /// killed finds its queue, messages included).
    @discardableResult
    public static func create(_ q: MessageQueueImage) throws -> Bool {
        let fd = cssi_mq_open(q.name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK | O_CLOEXEC, q.mode & 0o7777, q.maxMessages, q.messageSize)
        if fd == -EEXIST { return false }
        guard fd >= 0 else {
            throw SSIError.sys("mq_open(O_CREAT) \(q.name) with \(q.maxMessages) messages of \(q.messageSize) bytes", errno: -fd,
                               hint: "the limits of /proc/sys/fs/mqueue may be lower here than where it was saved")
        }
        defer { close(fd) }
        // The umask applied to the mode at creation: set it again as saved.
        _ = fchmod(fd, mode_t(q.mode & 0o7777))
        _ = fchown(fd, q.uid, q.gid)
        try putBack(fd, q.messages, q.name)
        return true
    }
}
