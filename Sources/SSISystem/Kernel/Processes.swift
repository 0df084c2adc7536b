import Foundation
import CSSILinux
#if canImport(Glibc)
import Glibc
#endif

/// kcmp(2) (Linux 3.5, CONFIG_KCMP): whether two processes share a kernel object.
public enum Kcmp {
    /// The kcmp types (linux/kcmp.h).
    public struct Kind: RawRepresentable, Hashable, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let file = Kind(rawValue: 0), vm = Kind(rawValue: 1), files = Kind(rawValue: 2), fs = Kind(rawValue: 3)
        /// The SysV semaphore undo list (task->sysvsem.undo_list): two tasks that have none
        /// compare equal (kernel/kcmp.c compares the pointers, NULL included). A thread made
        /// by pthread_create shares one with its process from then on (clone with
        /// CLONE_SYSVSEM makes it), until an unshare(CLONE_SYSVSEM) or setns of the IPC
        /// namespace drops it.
        public static let sysvsem = Kind(rawValue: 6)
    }

    /// 0 when both have the same object, 1 or 2 when the first one's comes before or after (the
    /// kernel orders the objects' obfuscated addresses), -errno on failure.
    public static func compare(_ a: ProcessID, _ b: ProcessID, _ kind: Kind, _ index1: UInt = 0, _ index2: UInt = 0) -> Int {
        cssi_kcmp(a.rawValue, b.rawValue, kind.rawValue, index1, index2)
    }

    /// Whether fd `fd` of `pid` is the file registered in its epoll set `efd` as the `nth`
    /// entry (from 0) with fd number `tfd` (KCMP_EPOLL_TFD, 4.13, struct kcmp_epoll_slot).
    public static func isEpollTarget(_ pid: ProcessID, fd: Int32, epoll efd: Int32, target tfd: Int32, nth: Int) -> Bool {
        var slot: (UInt32, UInt32, UInt32) = (UInt32(efd), UInt32(tfd), UInt32(nth))
        return withUnsafeMutablePointer(to: &slot) { cssi_kcmp(pid.rawValue, pid.rawValue, 7, UInt(fd), UInt(bitPattern: $0)) } == 0
    }
}

/// Process file descriptors (pidfd_open(2) Linux 5.3, pidfd_getfd(2) Linux 5.6).
public enum PidFD {
    public static func open(_ pid: ProcessID) throws -> Int32 {
        Int32(try check(cssi_pidfd_open(pid.rawValue), "pidfd_open(\(pid))"))
    }

    /// A copy in this process of fd `fd` of process `pid`: the same open file description
    /// (needs PTRACE_MODE_ATTACH_REALCREDS over it). Close-on-exec.
    public static func copy(fd: Int32, of pid: ProcessID) throws -> Int32 {
        // A thread's id (a process whose leader exited is reached through a live thread):
        // pidfd_open refuses it (EINVAL) without PIDFD_THREAD.
        let r = cssi_pidfd_open(pid.rawValue)
        let pidfd = r == -Int(EINVAL) ? Int32(try check(cssi_pidfd_open_thread(pid.rawValue), "pidfd_open(\(pid), PIDFD_THREAD)")) : Int32(try check(r, "pidfd_open(\(pid))"))
        defer { close(pidfd) }
        return Int32(try check(cssi_pidfd_getfd(pidfd, fd), "pidfd_getfd(\(pid), \(fd))"))
    }
}

/// Resource limits of any process (prlimit(2)).
public enum ResourceLimits {
    /// The 16 resources of getrlimit(2), RLIMIT_CPU (0) to RLIMIT_RTTIME (15).
    public static let all: ClosedRange<Int32> = 0...15

    /// (soft, hard), or nil if the kernel refused.
    public static func get(_ pid: ProcessID, _ resource: Int32) -> (cur: UInt64, max: UInt64)? {
        var lim: [UInt64] = [0, 0]
        return cssi_prlimit(pid.rawValue, resource, nil, &lim) >= 0 ? (lim[0], lim[1]) : nil
    }

    /// Sets (soft, hard); returns 0 or -errno.
    public static func set(_ pid: ProcessID, _ resource: Int32, cur: UInt64, max: UInt64) -> Int {
        var v: [UInt64] = [cur, max]
        return cssi_prlimit(pid.rawValue, resource, &v, nil)
    }
}

/// A thread's robust futex list (get_robust_list(2)): head and length, nil if refused.
public func robustList(of tid: ProcessID) -> (head: UInt64, length: UInt64)? {
    var head: UInt64 = 0, len: UInt64 = 0
    return cssi_get_robust_list(tid.rawValue, &head, &len) >= 0 ? (head, len) : nil
}

/// waitpid(2) with __WALL and WNOHANG on any child: the pid reaped, 0 if none has ended yet,
/// or -errno (ECHILD when there is no child left).
public func reapAnyChild() -> pid_t {
    var status: Int32 = 0
    return cssi_waitpid(-1, &status, WNOHANG)
}

/// A thread group whose leader (the thread with the process's id) has exited while other
/// threads run: the leader is a zombie, the process is not (pthread_exit in main). Its
/// /proc/PID/{maps,mem,fd} are empty (the leader gave its mm and files up), but those of a
/// live thread, /proc/TID/..., are the process's.
public enum ExitedLeader {
    /// A live thread of `pid` when its leader has exited; nil when the leader runs or the
    /// whole process has exited.
    public static func liveThread(_ pid: Int32) -> Int32? {
        guard let st = try? ProcStat.read(pid: pid), st.state == "Z" || st.state == "X" else { return nil }
        let tids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []).compactMap { Int32($0) }.sorted()
        for tid in tids where tid != pid {
            if let t = try? ProcStat.read(pid: tid), t.state != "Z", t.state != "X" { return tid }
        }
        return nil
    }
}
