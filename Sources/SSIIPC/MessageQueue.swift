import CSSILinux
import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Message queues: every message (type and text) in order, read by emptying and refilling
/// the queue (MessageQueueDrain.swift) or with msgrcv(2) MSG_COPY, and msg_qbytes. Payload: per message, the type (Int64), the
/// text length (UInt64), the text.
enum MessageQueueCheckpoint {
    static func readSysctl(_ name: String) -> Int? {
        (try? String(contentsOfFile: "/proc/sys/kernel/\(name)", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    static func stat(_ id: Int32) throws -> cssi_ipc_msq_stat {
        var st = cssi_ipc_msq_stat()
        let r = cssi_ipc_msq_stat(id, &st)
        if r < 0 { throw Reservation.statError(kind: .messageQueue, id: id, errno: -r) }
        return st
    }

    static func same(_ a: cssi_ipc_msq_stat, _ b: cssi_ipc_msq_stat) -> Bool {
        a.qnum == b.qnum && a.cbytes == b.cbytes && a.stime == b.stime && a.rtime == b.rtime
    }

    /// Empties and refills the queue (linear, MessageQueueDrain) when that is safe, else
    /// copies it with MSG_COPY (quadratic in the number of messages, never changes the queue).
    static func save(id: Int32, to path: String) throws -> IPCCheckpointResult {
        let before = try stat(id)
        let msgmax = max(readSysctl("msgmax") ?? 8192, 1)
        guard before.qnum > 0, MessageQueueDrain.refusal(before, msgmax: msgmax) == nil else { return try saveByCopy(id: id, to: path, textmax: msgmax) }
        var rescued: String?
        do {
            let held = try MessageQueueDrain.take(id, before: before) { held in
                if (try? write(id: id, path: path, st: before, held.payload, readBy: "drain")) != nil { rescued = path }
            }
            return try write(id: id, path: path, st: before, held.payload, readBy: "drain")
        } catch let e as SSIError where rescued != nil {
            throw SSIError(e.kind, e.message + "; \(path) holds every message", hint: e.hint, errno: e.errno)
        }
    }

    /// Writes the snapshot of a queue whose stat was `st` and whose payload is `payload`.
    static func write(id: Int32, path: String, st: cssi_ipc_msq_stat, _ payload: [UInt8], readBy: String) throws -> IPCCheckpointResult {
        var info = IPCSnapshotInfo(kind: .messageQueue, perm: st.perm, id: id)
        info.queue = .init(qbytes: st.qbytes, messages: Int(st.qnum), bytes: st.cbytes, sendTime: st.stime, receiveTime: st.rtime,
                           lastSender: st.lspid, lastReceiver: st.lrpid, readBy: readBy)
        let w = try IPCSnapshotWriter(path: path, info: info, payloadLength: UInt64(payload.count))
        try payload.withUnsafeBytes { try w.writePayload(raw: $0) }
        let size = try w.finish()
        return IPCCheckpointResult(info: info, path: path, fileBytes: size, contentBytes: st.cbytes)
    }

    /// The copy with msgrcv(2) MSG_COPY: nothing consumed; retried if the queue changed.
    static func saveByCopy(id: Int32, to path: String, textmax: Int) throws -> IPCCheckpointResult {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + textmax, alignment: 8)
        defer { buf.deallocate() }
        for _ in 0..<5 {
            let before = try stat(id)
            var payload = [UInt8]()
            payload.reserveCapacity(Int(before.cbytes) + 16 * Int(before.qnum))
            var complete = true
            // MSG_COPY copies the whole buffer size into the kernel on every call (ipc/msg.c
            // prepare_copy), so start near the mean message size and grow on E2BIG.
            var bufSize = before.qnum > 0 ? min(textmax, max(64, Int(before.cbytes / before.qnum) * 2)) : textmax
            for i in 0..<Int(before.qnum) {
                var n = cssi_ipc_msg_copy(id, i, buf, bufSize)
                if n == -Int(E2BIG) && bufSize < textmax {
                    bufSize = textmax
                    n = cssi_ipc_msg_copy(id, i, buf, bufSize)
                }
                if n == -Int(ENOMSG) { complete = false; break }
                try checkCopy(n, index: i, id: id, textmax: textmax)
                payload += buf.load(as: Int.self).littleEndianBytes
                payload += UInt64(n).littleEndianBytes
                payload += UnsafeRawBufferPointer(start: buf + 8, count: n)
            }
            let after = try stat(id)
            if !complete || !same(before, after) { continue }
            return try write(id: id, path: path, st: after, payload, readBy: "copy")
        }
        throw SSIError(.state, "message queue id \(id) kept changing while it was being saved",
                       hint: "freeze the applications that use it (ssi checkpoint --freeze APP) and checkpoint it again")
    }

    /// Throws the error for a failed MSG_COPY of message `index`, if `n` is one.
    static func checkCopy(_ n: Int, index i: Int, id: Int32, textmax: Int) throws {
        if n >= 0 { return }
        if n == -Int(ENOSYS) {
            throw SSIError(.unsupported, "cannot read message queue id \(id) without consuming it: msgrcv MSG_COPY is not in this kernel",
                           hint: "use a kernel built with CONFIG_CHECKPOINT_RESTORE (Linux 3.8 or later)")
        }
        if n == -Int(E2BIG) {
            throw SSIError(.unsupported, "message \(i) of message queue id \(id) is longer than msgmax (\(textmax) bytes), the most MSG_COPY can read",
                           hint: "raise /proc/sys/kernel/msgmax in this IPC namespace and checkpoint again")
        }
        if n == -Int(EACCES) { throw Reservation.statError(kind: .messageQueue, id: id, errno: EACCES) }
        throw SSIError.sys("cannot copy message \(i) of message queue id \(id) (msgrcv MSG_COPY)", errno: Int32(-n))
    }

    /// IPC_SET of owner, group, mode and msg_qbytes. Above msgmnb the kernel wants CAP_SYS_RESOURCE (ipc/msg.c
    /// msgctl_down); without it, but with write access to this namespace's
    /// /proc/sys/kernel/msgmnb, msgmnb is raised for the one call and put back (queues
    /// created by others in that instant would start with the raised limit).
    static func set(_ id: Int32, uid: UInt32, gid: UInt32, mode: UInt32, qbytes: UInt64) -> Int32 {
        let r = cssi_ipc_msq_set(id, uid, gid, mode, qbytes)
        guard r == -EPERM, let mnb = readSysctl("msgmnb"), qbytes > UInt64(mnb), qbytes <= UInt64(Int32.max) else { return r }
        let path = "/proc/sys/kernel/msgmnb"
        guard (try? "\(qbytes)\n".write(toFile: path, atomically: false, encoding: .utf8)) != nil else { return r }
        defer { try? "\(mnb)\n".write(toFile: path, atomically: false, encoding: .utf8) }
        return cssi_ipc_msq_set(id, uid, gid, mode, qbytes)
    }

    static func restore(_ file: IPCSnapshotReader) throws -> IPCRestoreResult {
        let info = file.info
        let q = info.queue!
        var payload = [UInt8](repeating: 0, count: Int(file.payloadLength))
        try payload.withUnsafeMutableBytes { try file.readPayload(into: $0.baseAddress!, count: $0.count, at: 0) }
        // Parse everything before creating anything.
        var messages: [(offset: Int, length: Int)] = []
        messages.reserveCapacity(q.messages)
        var off = 0
        var longest = 0
        for i in 0..<q.messages {
            guard off + 16 <= payload.count else { throw SSIError(.corrupt, "\(file.path) is corrupt: message \(i) is cut short") }
            let type = readLE(payload, off, as: Int64.self), len = readLE(payload, off + 8, as: UInt64.self)
            guard type > 0, len <= UInt64(payload.count - off - 16) else { throw SSIError(.corrupt, "\(file.path) is corrupt: message \(i) has type \(type), length \(len)") }
            messages.append((off, Int(len)))
            longest = max(longest, Int(len))
            off += 16 + Int(len)
        }
        guard off == payload.count else { throw SSIError(.corrupt, "\(file.path) is corrupt: message queue sizes do not add up") }
        if let msgmax = readSysctl("msgmax"), longest > msgmax {
            throw SSIError(.unsupported, "\(file.path) holds a message of \(longest) bytes, more than msgmax (\(msgmax)) in this IPC namespace",
                           hint: "raise /proc/sys/kernel/msgmax to at least \(longest) and restore again; nothing was changed")
        }
        let id = try Reservation.create(kind: .messageQueue, key: info.key, id: info.id) {
            cssi_ipc_msgget(info.key, Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600))
        }
        do {
            // The queue must take every message (msgsnd counts bytes and messages against
            // msg_qbytes); the saved qbytes is set last. Note that the kernel checks
            // qbytes against msgmnb on every IPC_SET, even when it does not change.
            let fill = max(q.qbytes, q.bytes, UInt64(q.messages))
            let st = try stat(id)
            var r = set(id, uid: st.perm.uid, gid: st.perm.gid, mode: 0o600, qbytes: fill)
            if r < 0 { throw SSIError.sys("cannot set the size limit (msg_qbytes \(fill)) of message queue id \(id)", errno: -r, hint: "raising it above /proc/sys/kernel/msgmnb needs root (CAP_SYS_RESOURCE, or write access to msgmnb)") }
            // msgsnd takes a struct msgbuf: the long type, then the text. The 8-byte type
            // sits in the file right before the length; copy it in front of the text.
            let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + max(longest, 1), alignment: 8)
            defer { buf.deallocate() }
            try payload.withUnsafeBytes { p in
                for (i, m) in messages.enumerated() {
                    buf.copyMemory(from: p.baseAddress! + m.offset, byteCount: 8)
                    buf.advanced(by: 8).copyMemory(from: p.baseAddress! + m.offset + 16, byteCount: m.length)
                    let r = cssi_ipc_msgsnd(id, buf, m.length)
                    if r < 0 { throw SSIError.sys("cannot put back message \(i) of \(info.objectDescription)", errno: -r) }
                }
            }
            r = set(id, uid: info.uid, gid: info.gid, mode: info.mode, qbytes: q.qbytes)
            if r < 0 { throw SSIError.sys("cannot set owner \(info.uid), group \(info.gid), mode \(String(info.mode, radix: 8)), msg_qbytes \(q.qbytes) of \(info.objectDescription)", errno: -r, hint: "run as root") }
        } catch {
            Reservation.remove(kind: .messageQueue, id: id)
            throw error
        }
        return IPCRestoreResult(info: info, warnings: [])
    }
}
