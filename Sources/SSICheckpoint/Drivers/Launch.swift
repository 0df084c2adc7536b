import SSISystem
#if canImport(Glibc)
import Glibc
#endif

extension CheckpointEngine {
    public struct LaunchOptions: Sendable {
        /// Pass our fds above 2 on to the application (by default only 0-2 reach it).
        public var keepFileDescriptors = false
        public init() {}
    }

    /// Starts `argv` as a checkpointable application (`ssi run`, Kerrighed's krgcr-run) and
    /// returns its application id, the pid of its root process, which leads a new session.
    /// As root, the application is born in a cgroup of its own (clone3 CLONE_INTO_CGROUP into
    /// a temporary group, renamed `app-<appid>` once the pid is known), so that a later
    /// checkpoint can freeze it whole; without the cgroup v2 freezer it starts anyway. The
    /// caller is its parent and may wait for it.
    public func launch(_ argv: [String], options: LaunchOptions = LaunchOptions()) throws -> Int32 {
        let freezer = geteuid() == 0 ? CgroupFreezer.find() : nil
        freezer?.sweep()
        var group: (path: String, fd: Int32)? = nil
        if let freezer { group = try? freezer.openNewGroup() }
        var spawn = SpawnOptions()
        spawn.cgroup = group?.fd
        spawn.keepFileDescriptors = options.keepFileDescriptors
        spawn.newSession = true
        let pid: pid_t
        do {
            defer { if let g = group { close(g.fd) } }
            pid = try Spawn.start(argv, spawn)
        } catch {
            if let g = group { rmdir(g.path) }
            throw error
        }
        if let freezer, let g = group { freezer.adopt(temporary: g.path, app: pid) }
        return pid
    }
}
