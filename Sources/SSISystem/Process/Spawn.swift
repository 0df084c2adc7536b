import Foundation
import CSSILinux
#if canImport(Glibc)
import Glibc
#endif

/// How a spawned program gets its fd 0, 1 or 2.
public enum StandardIO: Sendable, Equatable {
    /// Ours, as is.
    case inherit
    /// /dev/null (read for stdin, write for the others).
    case null
    /// A file, created if missing (mode 0644), appended to or truncated.
    case file(String, append: Bool)
    /// A dup of one of our fds.
    case descriptor(Int32)
    /// The same open file as the program's stdout (`2>&1`).
    case standardOutput
}

/// What `Spawn.start` does between clone and exec (all of it in C, in `cssi_spawn`).
public struct SpawnOptions: Sendable {
    public var standardInput: StandardIO = .inherit
    public var standardOutput: StandardIO = .inherit
    public var standardError: StandardIO = .inherit
    /// A cgroup v2 directory fd: the child is born in that group (clone3 CLONE_INTO_CGROUP,
    /// Linux 5.7), so that none of its forks can escape before a move.
    public var cgroup: Int32? = nil
    /// Pass our fds above 2 on; by default they are marked close-on-exec in the child.
    public var keepFileDescriptors = false
    /// setsid(2) in the child.
    public var newSession = false
    /// The child becomes our parent's child (clone(2) CLONE_PARENT): a daemon that outlives
    /// us and is reaped by whoever started us (a shell, a test), not by an init that may not
    /// reap. Refused (EINVAL) when we are a pid namespace's init.
    public var sibling = false
    /// chdir(2) in the child, after the stdio files are opened.
    public var directory: String? = nil
    /// The whole environment of the program; nil: ours.
    public var environment: [String: String]? = nil
    /// Namespaces the child is born in (clone(2) CLONE_NEWPID, CLONE_NEWNS...): with
    /// CLONE_NEWPID the child is process 1 of a new PID namespace.
    public var namespaces: Namespaces = []
    /// An fd of ours that becomes the child's fd 3 (kept across exec), e.g. the read end of
    /// a pipe it waits on.
    public var passDescriptor: Int32? = nil
    /// The child's nice value (setpriority(2)); nil: ours.
    public var nice: Int32? = nil

    /// clone(2) namespace flags.
    public struct Namespaces: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let mount = Namespaces(rawValue: 0x0002_0000)   // CLONE_NEWNS
        public static let pid = Namespaces(rawValue: 0x2000_0000)     // CLONE_NEWPID
    }

    public init() {}

    /// stdin from /dev/null, stdout and stderr appended to `log`.
    public static func logging(to log: String) -> SpawnOptions {
        var o = SpawnOptions()
        o.standardInput = .null
        o.standardOutput = .file(log, append: true)
        o.standardError = .standardOutput
        return o
    }
}

/// How a child ended (wait(2)).
public enum WaitStatus: Sendable, Equatable {
    case exited(Int32)
    case signaled(Int32)

    /// Decodes a raw wait status of an ended child (WIFEXITED/WEXITSTATUS, WTERMSIG).
    public init(raw status: Int32) {
        if cssi_wifexited(status) != 0 { self = .exited(cssi_wexitstatus(status)) } else { self = .signaled(cssi_wtermsig(status)) }
    }

    /// The exit code a shell shows: the code, or 128 + the signal.
    public var exitCode: Int32 {
        switch self {
        case .exited(let code): return code
        case .signaled(let sig): return 128 + sig
        }
    }
}

/// The one way SwiftSSI starts a program (`ssi run`, the daemon's children, the benchmark,
/// the tests). No Swift code runs between clone and exec: the C spawner `cssi_spawn` does
/// it all, and reports an exec failure as the errno it got.
public enum Spawn {
    /// Runs `body` on a thread of its own that has entered the network namespace of `fd`
    /// (setns(2) moves the calling thread only), and waits for it: a process `body` starts
    /// is born in that namespace, since clone(2) copies the calling thread's namespaces.
    /// No thread of ours stays in it.
    public static func inNetwork<T>(_ fd: Int32, _ body: @escaping () throws -> T) throws -> T {
        nonisolated(unsafe) let work = body
        let result: Result<T, Error> = ThreadFS.onThread {
            let e = ThreadFS.enter(fd, type: 0x4000_0000 /* CLONE_NEWNET */)
            return e == 0 ? Result { try work() } : .failure(SSIError.sys("setns into the network namespace of fd \(fd)", errno: e))
        }
        return try result.get()
    }

    /// Starts `argv` (looked up in PATH) and returns its pid. Throws what clone3, an open of
    /// a stdio file, chdir or exec refused, naming the program.
    public static func start(_ argv: [String], _ options: SpawnOptions = SpawnOptions()) throws -> pid_t {
        let pid = rawStart(argv, options)
        guard pid > 0 else {
            throw SSIError.sys("cannot start \(argv.first ?? "(no program)")", errno: -pid,
                               hint: -pid == ENOENT ? "check the path; the command is looked up in PATH" : nil)
        }
        return pid
    }

    /// `start` without the error: the pid, or -errno.
    public static func rawStart(_ argv: [String], _ options: SpawnOptions) -> pid_t {
        precondition(!argv.isEmpty, "spawn of an empty argv")
        var strings: [UnsafeMutablePointer<CChar>?] = []
        defer { strings.forEach { free($0) } }
        func c(_ s: String) -> UnsafePointer<CChar> {
            let p = strdup(s)!
            strings.append(p)
            return UnsafePointer(p)
        }
        let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { UnsafeMutablePointer(mutating: c($0)) } + [nil]
        let cenv: [UnsafeMutablePointer<CChar>?]? = options.environment.map { env in
            env.map { UnsafeMutablePointer(mutating: c("\($0.key)=\($0.value)")) } + [nil]
        }
        func slot(_ io: StandardIO, input: Bool) -> cssi_spawn_stdio {
            switch io {
            case .inherit: return cssi_spawn_stdio(kind: Int32(CSSI_STDIO_INHERIT), fd: -1, path: nil, flags: 0)
            case .null: return cssi_spawn_stdio(kind: Int32(CSSI_STDIO_PATH), fd: -1, path: c("/dev/null"), flags: input ? O_RDONLY : O_WRONLY)
            case .file(let path, let append):
                let flags = input ? O_RDONLY : O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC)
                return cssi_spawn_stdio(kind: Int32(CSSI_STDIO_PATH), fd: -1, path: c(path), flags: flags)
            case .descriptor(let fd): return cssi_spawn_stdio(kind: Int32(CSSI_STDIO_FD), fd: fd, path: nil, flags: 0)
            case .standardOutput: return cssi_spawn_stdio(kind: Int32(CSSI_STDIO_STDOUT), fd: -1, path: nil, flags: 0)
            }
        }
        var o = cssi_spawn_options()
        o.stdio = (slot(options.standardInput, input: true), slot(options.standardOutput, input: false), slot(options.standardError, input: false))
        o.cgroup_fd = options.cgroup ?? -1
        o.keep_fds = options.keepFileDescriptors ? 1 : 0
        o.new_session = options.newSession ? 1 : 0
        o.sibling = options.sibling ? 1 : 0
        o.directory = options.directory.map(c)
        o.namespaces = options.namespaces.rawValue
        o.pass_fd = options.passDescriptor ?? -1
        (o.set_nice, o.nice) = options.nice.map { (1, $0) } ?? (0, 0)
        return cargs.withUnsafeBufferPointer { argvp in
            guard let cenv else { o.envp = nil; return cssi_spawn(argvp.baseAddress!, &o) }
            return cenv.withUnsafeBufferPointer { envp in
                o.envp = envp.baseAddress
                return cssi_spawn(argvp.baseAddress!, &o)
            }
        }
    }

    /// Waits for a child of ours to end and reaps it (waitpid(2), retried on EINTR).
    public static func wait(_ pid: pid_t) throws -> WaitStatus {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw SSIError.sys("waitpid \(pid)", errno: errno) }
        }
        return WaitStatus(raw: status)
    }

    /// Starts `argv` and waits for it to end.
    public static func run(_ argv: [String], _ options: SpawnOptions = SpawnOptions()) throws -> WaitStatus {
        try wait(start(argv, options))
    }
}
