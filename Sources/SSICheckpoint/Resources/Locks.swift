import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// File locks held at checkpoint: POSIX record locks (fcntl F_SETLK, owned by the process),
// OFD locks (F_OFD_SETLK, owned by the open file description) and flock(2) locks (also the
// description's). /proc/PID/fdinfo/N lists the locks of the file open on fd N that this
// process or this description holds, one "lock:" line each in the /proc/locks format
// (proc(5)); restart takes each again, in the process, on the same fd.

extension ProcessDumper {
    /// The locks shown for fd `fd`, or nil if none.
    func dumpLocks(fd: Int32) -> [FileLock]? {
        guard let text = try? ProcFS.read("/proc/\(pid)/fdinfo/\(fd)") else { return nil }
        var out = [FileLock]()
        for line in text.split(separator: "\n") where line.hasPrefix("lock:") {
            // "lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 99" (or "-> ..." for a
            // waiter, which holds nothing, and "EOF" for a lock to the end of the file).
            let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            // A lease reads "lock:\t1: LEASE  ACTIVE    READ 1234 fe:00:5678 0 EOF"; one being
            // broken ("BREAKING") is given up by then: not kept.
            guard w.count >= 9, w[2] != "->", ["POSIX", "OFDLCK", "FLOCK", "LEASE"].contains(w[2]),
                  w[3] == (w[2] == "LEASE" ? "ACTIVE" : "ADVISORY"), let start = Int64(w[7]) else { continue }
            let end = w[8] == "EOF" ? nil : Int64(w[8])
            // POSIX locks of a process show on every fd of that file: kept once, on the first.
            out.append(FileLock(kind: w[2], write: w[4] == "WRITE", start: start, end: end))
        }
        return out.isEmpty ? nil : out
    }

    /// A POSIX lock belongs to the process, not to the fd it was taken through: keep it on
    /// the first fd of the file only.
    static func dedupPosixLocks(_ fds: inout [FileDescriptorImage]) {
        var seen = Set<String>()
        for i in fds.indices {
            guard let locks = fds[i].locks else { continue }
            let kept = locks.filter { l in
                guard l.kind == "POSIX" else { return true }
                return seen.insert("\(fds[i].path)|\(l.start)|\(l.end ?? -1)|\(l.write)").inserted
            }
            fds[i].locks = kept.isEmpty ? nil : kept
        }
    }
}

extension ProcessRestorer {
    /// Takes every saved lock again, in the process, once its fds are in place. A lock that
    /// someone else took meanwhile fails the restart, naming the file.
    func restoreLocks() throws {
        for f in image.fds {
            for l in f.locks ?? [] {
                let what = "PID \(pid) fd \(f.fd): \(l.kind) \(l.write ? "write" : "read") lock on \(f.path) [\(l.start), \(l.end.map(String.init) ?? "EOF")]"
                let r: Int64
                if l.kind == "LEASE" {
                    // F_SETLEASE 1024 with F_RDLCK 0 / F_WRLCK 1. The kernel refuses a read
                    // lease on a file someone has open for writing now, and a write lease on
                    // one open anywhere else (fcntl(2), "Leases"): the application would have
                    // seen its lease broken by that; it runs on without one, said here.
                    let r = try inj.raw(.fcntl, UInt64(f.fd), 1024, l.write ? 1 : 0)
                    if r < 0 { warn("\(what): not taken again: \(String(cString: strerror(Int32(-r))))") }
                    continue
                } else if l.kind == "FLOCK" {
                    // flock(2): LOCK_SH 1, LOCK_EX 2, LOCK_NB 4.
                    r = try inj.raw(.flock, UInt64(f.fd), l.write ? 6 : 5)
                } else {
                    // struct flock (x86_64): l_type (F_RDLCK 0, F_WRLCK 1), l_whence (SEEK_SET),
                    // l_start, l_len (0: to the end of the file), l_pid (0 for OFD locks).
                    let len = l.end.map { $0 - l.start + 1 } ?? 0
                    let head = UInt64(l.write ? 1 : 0) | (UInt64(SEEK_SET) << 16)
                    try mem.write(words: [head, UInt64(bitPattern: l.start), UInt64(bitPattern: len), 0], to: scratch)
                    // F_SETLK 6, F_OFD_SETLK 37 (fcntl(2)): never waits.
                    r = try inj.raw(.fcntl, UInt64(f.fd), l.kind == "OFDLCK" ? 37 : 6, scratch)
                }
                if r < 0 {
                    throw SSIError.sys("\(what): taking it again", errno: Int32(-r), hint: "another process holds a conflicting lock on \(f.path) now: stop it, then restart again")
                }
            }
        }
    }
}
