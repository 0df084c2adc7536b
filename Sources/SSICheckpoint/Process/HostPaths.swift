import Foundation
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Files that ssi holds for a restart (pipes, nameless FIFOs, unlinked files) are opened by
// the restored process through ssi's /proc/<ssi>/fd/N: opening that magic link opens the very
// pipe or inode again (proc(5); fifo_open), with the process's own flags. A process of an
// application with a PID namespace of its own sees a /proc of its namespace, where ssi has
// no entry: there it opens N relative to a directory fd on ssi's own /proc/<ssi>/fd, which it
// is given by pidfd_getfd (FDTransfer.take through its inherited pidfd on ssi) and which
// resolves in the /proc where ssi opened it, whatever the process's mount namespace.

enum HostProcFD {
    /// ssi's /proc/<ssi>/fd directory, opened once (/proc/self resolves to ssi here).
    static let directory: Int32 = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    static var prefix: String { "/proc/\(getpid())/fd/" }
}

extension ProcessRestorer {
    /// openat(2) of `path` in the process; the raw result (a negative errno on failure).
    /// A path under ssi's /proc/<ssi>/fd/ goes through ssi's fd directory when the process
    /// lives in a PID namespace of its own.
    func openRaw(_ path: String, flags: Int32) throws -> Int64 {
        guard ownNamespace, path.hasPrefix(HostProcFD.prefix), HostProcFD.directory >= 0 else {
            return try inj.rawArgs(.openat, [UInt64(AT_FDCWD), try putString(path), UInt64(flags), 0])
        }
        let dir = try FDTransfer.take(HostProcFD.directory, inj: inj, ssiPidFD: ssiPidFD, what: "ssi's /proc fd directory")
        defer { _ = try? inj.raw(.close, dir) }
        let name = String(path.dropFirst(HostProcFD.prefix.count))
        return try inj.rawArgs(.openat, [dir, try putString(name), UInt64(flags), 0])
    }

    /// The same, throwing an error that says what failed.
    func open(_ what: String, path: String, flags: Int32) throws -> UInt64 {
        let r = try openRaw(path, flags: flags)
        if r < 0 { throw SSIError.sys("\(what) in PID \(pid)", errno: Int32(-r)) }
        return UInt64(r)
    }
}

/// Files of the kernel's pseudo file systems (proc(5), sysfs(5), cgroups(7), debugfs,
/// tracefs, securityfs, configfs, bpf, pstore, efivarfs): their size is 0 or made up and
/// their content is generated on each read, so a saved offset (top(1) keeps /proc/stat open
/// and has read it) is no promise about the file's size; the restart seeks there when the
/// file lets it, and leaves the offset at 0 otherwise.
enum PseudoFiles {
    static let magics: Set<Int> = [0x9fa0, 0x6265_6572, 0x6367_7270, 0x0027_e0eb, 0x6462_6720, 0x7472_6163,
                                   0x7363_6673, 0x6265_6570, 0xcafe_4a11, 0x6165_676c, 0xde5e_81e4]

    static func contains(_ path: String) -> Bool {
        ThreadFS.fileSystemType(path).map { magics.contains($0) } ?? false
    }
}
