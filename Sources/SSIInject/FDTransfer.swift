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

    /// Gives the stopped process driven by `inj` a copy of ssi's fd `mine`: it runs
    /// pidfd_getfd(2) on ssi itself, so it gets the same open file description. That needs
    /// PTRACE_MODE_ATTACH_REALCREDS over ssi, which it has while it still runs with ssi's
    /// (root) credentials: a restart restores credentials last. Returns the new fd, without
    /// FD_CLOEXEC (pidfd_getfd sets it; the caller gives the final fd its flags).
    public static func take(_ mine: Int32, inj: Injector, what: @autoclosure () -> String) throws -> UInt64 {
        let pidfd = try inj.call("pidfd_open(ssi)", .pidfd_open, UInt64(getpid()), 0)
        defer { _ = try? inj.raw(.close, pidfd) }
        let fd = try inj.call("pidfd_getfd(ssi fd \(mine)) for \(what())", .pidfd_getfd, pidfd, UInt64(mine), 0)
        try inj.call("fcntl(F_SETFD)", .fcntl, fd, UInt64(F_SETFD), 0)
        return fd
    }
}
