import CSSILinux
import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// A queue's messages held in memory, already laid out as the snapshot's payload: per
/// message the type (Int64), the text length (UInt64), the text.
struct HeldMessages {
    var payload: [UInt8] = []
    /// Where each message starts in `payload`.
    var starts: [Int] = []
    var bytes: UInt64 = 0
    var longest = 0
    var count: Int { starts.count }

    mutating func append(type: Int, text: UnsafeRawBufferPointer) {
        starts.append(payload.count)
        // withUnsafeBytes(of:) rather than littleEndianBytes: no temporary array per message.
        withUnsafeBytes(of: Int64(type).littleEndian) { payload.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(text.count).littleEndian) { payload.append(contentsOf: $0) }
        payload.append(contentsOf: text)
        bytes += UInt64(text.count)
        longest = max(longest, text.count)
    }
}

/// Saving a queue by receiving every message and sending it back, in order.
///
/// msgrcv(2) with MSG_COPY takes msgtyp as a position that the kernel finds by walking the
/// queue from its head (ipc/msg.c find_msg), so copying n messages costs n²/2 steps: 1.6-1.9 s
/// for 10,000. A plain msgrcv with msgtyp 0 takes the head in constant time, so emptying the
/// queue and refilling it is linear. What this changes, and how it is made safe:
/// - msg_stime, msg_rtime, msg_lspid and msg_lrpid become ours (msgsnd(2), msgrcv(2)); their
///   earlier values are recorded in the snapshot. msg_ctime, msg_qbytes and the permissions
///   are untouched (only IPC_SET changes them, msgctl(2)).
/// - A process blocked in msgrcv is handed a message by msgsnd directly (ipc/msg.c
///   pipelined_send) only if it matches; it would not be blocked if a message in the queue
///   matched it, so sending back the same messages wakes nobody.
/// - Anything that fails after the first message was taken puts every taken message back,
///   in order, before the error is thrown.
enum MessageQueueDrain {
    /// Why the queue cannot be emptied and refilled safely (then MSG_COPY is used), or nil.
    static func refusal(_ st: cssi_ipc_msq_stat, msgmax: Int) -> String? {
        // msgsnd(2) fails with EAGAIN when msg_qbytes would be exceeded (bytes, and in Linux
        // the message count too: ipc/msg.c msg_fits_inqueue); IPC_SET may have lowered it.
        if st.cbytes > st.qbytes || st.qnum > st.qbytes { return "it holds more than its msg_qbytes" }
        // msgsnd(2) refuses a text longer than msgmax (EINVAL); a message can be longer if
        // msgmax was lowered after it was sent. Only when the sum of all texts is above
        // msgmax can one be, and then msgmax must be raisable for the refill.
        if st.cbytes > UInt64(msgmax) && access("/proc/sys/kernel/msgmax", W_OK) != 0 { return "msgmax cannot be raised here" }
        return mayWrite(st.perm) ? nil : "no write permission"
    }

    /// ipcperms (ipc/util.c): owner or creator bits, then group, then others; root passes.
    static func mayWrite(_ p: cssi_ipc_perm) -> Bool {
        let uid = geteuid(), gid = getegid()
        if uid == 0 { return true }
        if uid == p.uid || uid == p.cuid { return p.mode & 0o200 != 0 }
        var groups = [gid_t](repeating: 0, count: 256)
        let n = getgroups(Int32(groups.count), &groups)
        let member = gid == p.gid || gid == p.cgid || groups.prefix(Int(max(n, 0))).contains { $0 == p.gid || $0 == p.cgid }
        return p.mode & (member ? 0o020 : 0o002) != 0
    }

    /// Test hook: SSI_TEST_MSGQ_FAIL_AT=N makes the save fail after taking N messages.
    static var failAt: Int? { ProcessInfo.processInfo.environment["SSI_TEST_MSGQ_FAIL_AT"].flatMap { Int($0) } }

    /// Takes every message, checks that nobody else used the queue meanwhile, puts them
    /// all back. Returns them; the queue is as it was (but for the times and pids above)
    /// whether this returns or throws.
    /// If putting them back fails, `rescue` is given them (to write the snapshot file anyway).
    static func take(_ id: Int32, before: cssi_ipc_msq_stat, rescue: (HeldMessages) -> Void) throws -> HeldMessages {
        var held = HeldMessages()
        held.payload.reserveCapacity(Int(before.cbytes) + 16 * Int(before.qnum))
        held.starts.reserveCapacity(Int(before.qnum))
        do {
            try receiveAll(id, before: before, into: &held)
        } catch {
            // msgsnd appends at the tail: putting back only the taken head would move it
            // behind the rest. Take the rest too (no test hook this time), then put back all.
            try? receiveAll(id, before: before, into: &held, inject: false)
            do { try putBack(id, held, after: error) } catch { rescue(held); throw error }
            throw error
        }
        let after = try? MessageQueueCheckpoint.stat(id)
        let quiet = after.map { $0.qnum == 0 && $0.stime == before.stime && $0.lspid == before.lspid && $0.lrpid == getpid() } ?? false
        do { try putBack(id, held, after: nil) } catch { rescue(held); throw error }
        guard quiet, held.count == Int(before.qnum), held.bytes == before.cbytes else {
            throw SSIError(.state, "message queue id \(id) was used by another process while it was being saved (\(held.count) of \(before.qnum) messages read); the messages read were put back",
                           hint: "freeze the applications that use it (ssi checkpoint --freeze APP) and checkpoint it again")
        }
        return held
    }

    /// msgrcv(msgtyp 0, IPC_NOWAIT) of the msg_qnum messages there were.
    static func receiveAll(_ id: Int32, before: cssi_ipc_msq_stat, into held: inout HeldMessages, inject: Bool = true) throws {
        var size = Int(min(max(before.cbytes, 1), 1 << 20))
        var buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + size, alignment: 8)
        defer { buf.deallocate() }
        let stop = inject ? failAt : nil
        while held.count < Int(before.qnum) {
            if held.count == stop {
                throw SSIError(.system, "injected failure after taking \(held.count) messages from message queue id \(id) (SSI_TEST_MSGQ_FAIL_AT)", hint: "unset SSI_TEST_MSGQ_FAIL_AT")
            }
            let n = cssi_ipc_msg_take(id, buf, size)
            if n == -Int(E2BIG) && size < Int(Int32.max) {
                // The message stays at the head on E2BIG (msgrcv(2), no MSG_NOERROR).
                size = min(size * 4, Int(Int32.max))
                buf.deallocate()
                buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + size, alignment: 8)
                continue
            }
            if n == -Int(ENOMSG) { return }  // taken by someone else: take() refuses
            if n == -Int(EINTR) { continue }
            if n < 0 {
                if n == -Int(EACCES) { throw Reservation.statError(kind: .messageQueue, id: id, errno: EACCES) }
                throw SSIError.sys("cannot read message \(held.count) of message queue id \(id) (msgrcv)", errno: Int32(-n))
            }
            held.append(type: buf.load(as: Int.self), text: UnsafeRawBufferPointer(start: buf + 8, count: n))
        }
    }
}

extension MessageQueueDrain {
    /// Sends every held message back in order. `cause` is the error that stopped the save,
    /// if any, named in the error thrown should the put-back itself fail.
    static func putBack(_ id: Int32, _ held: HeldMessages, after cause: Error?) throws {
        guard held.count > 0 else { return }
        let restoreMax = raiseMsgmax(to: held.longest, id: id)
        defer { if let m = restoreMax { try? "\(m)\n".write(toFile: "/proc/sys/kernel/msgmax", atomically: false, encoding: .utf8) } }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + max(held.longest, 1), alignment: 8)
        defer { buf.deallocate() }
        try held.payload.withUnsafeBytes { p in
            for (i, start) in held.starts.enumerated() {
                let len = Int(p.loadUnaligned(fromByteOffset: start + 8, as: UInt64.self).littleEndian)
                buf.storeBytes(of: Int(Int64(littleEndian: p.loadUnaligned(fromByteOffset: start, as: Int64.self))), as: Int.self)
                (buf + 8).copyMemory(from: p.baseAddress! + start + 16, byteCount: len)
                let r = send(id, buf, len)
                if r < 0 {
                    let why = cause.map { " after \($0)" } ?? ""
                    throw SSIError.sys("cannot put message \(i) of \(held.count) back into message queue id \(id)\(why); messages \(i) to \(held.count - 1) are lost from the queue", errno: -r,
                                       hint: "the snapshot file, if written, holds them all: remove the queue (ipcrm -q \(id)) and run `ssi ipc restart -q FILE`")
                }
            }
        }
    }

    /// msgsnd(IPC_NOWAIT), retried for up to 2 s while the queue is full (EAGAIN: another
    /// process sent meanwhile) or the call is interrupted.
    static func send(_ id: Int32, _ buf: UnsafeRawPointer, _ len: Int) -> Int32 {
        var r: Int32 = 0
        for _ in 0..<2000 {
            r = cssi_ipc_msgsnd(id, buf, len)
            if r != -EAGAIN && r != -EINTR { return r }
            usleep(1000)
        }
        return r
    }

    /// msgsnd(2) refuses texts longer than msgmax (EINVAL). If a held message is longer
    /// (msgmax lowered after it was sent), raises this namespace's msgmax for the put-back;
    /// returns the value to put back, or nil if nothing was changed.
    static func raiseMsgmax(to longest: Int, id: Int32) -> Int? {
        guard let msgmax = MessageQueueCheckpoint.readSysctl("msgmax"), longest > msgmax else { return nil }
        // If msgmax cannot be raised, the long message's msgsnd fails (EINVAL) and the error
        // says where the messages are.
        return (try? "\(longest)\n".write(toFile: "/proc/sys/kernel/msgmax", atomically: false, encoding: .utf8)) != nil ? msgmax : nil
    }
}
