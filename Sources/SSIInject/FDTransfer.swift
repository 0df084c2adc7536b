import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Moving open files between ssi and a process, without a unix socket: pidfd_getfd(2)
/// (Linux 5.6) gives the caller a new fd on the very open file description another process
/// holds.
public enum FDTransfer {
    /// A copy in ssi of fd `fd` of process `pid`: the same socket, inotify instance... whose
    /// state can be read from here. Close-on-exec; the caller closes it.
    public static func copy(fd: Int32, from pid: ProcessID) throws -> Int32 {
        try PidFD.copy(fd: fd, of: pid)
    }

    /// A pidfd of ssi itself (pidfd_open(2)), opened once, before the first restore shell
    /// is cloned: the shell starts with a copy of ssi's fd table, this fd included, and
    /// passes it on (ProcessRestorer.ssiPidFD). A process of an application with a PID
    /// namespace of its own cannot name ssi by a PID (ssi is outside its namespace, so
    /// pidfd_open of ssi's number fails with ESRCH), but a pidfd it holds still refers to ssi.
    public static let selfPidFD: Int32 = (try? PidFD.open(ProcessID(getpid()))) ?? -1

    /// Gives the stopped process driven by `inj` a copy of ssi's fd `mine`: it runs
    /// pidfd_getfd(2) on ssi itself, so it gets the same open file description. That needs
    /// PTRACE_MODE_ATTACH_REALCREDS over ssi, which it has while it still runs with ssi's
    /// (root) credentials: a restart restores credentials last. `ssiPidFD`: the process's
    /// own fd on ssi's pidfd, if it has one (always, for a process in a PID namespace of
    /// its own); else it opens one by ssi's PID. Returns the new fd, without FD_CLOEXEC
    /// (pidfd_getfd sets it; the caller gives the final fd its flags).
    public static func take(_ mine: Int32, inj: Injector, ssiPidFD: UInt64? = nil, what: @autoclosure () -> String) throws -> UInt64 {
        let pidfd = try ssiPidFD ?? inj.call("pidfd_open(ssi)", .pidfd_open, UInt64(getpid()), 0)
        defer { if ssiPidFD == nil { _ = try? inj.raw(.close, pidfd) } }
        let fd = try inj.call("pidfd_getfd(ssi fd \(mine)) for \(what())", .pidfd_getfd, pidfd, UInt64(mine), 0)
        try inj.call("fcntl(F_SETFD)", .fcntl, fd, UInt64(F_SETFD), 0)
        return fd
    }
}
