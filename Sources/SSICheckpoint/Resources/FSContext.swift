import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The file-system context a process has (and a CLONE_FS child shares): current directory,
// root directory and umask.

extension ProcessDumper {
    func dumpFSContext(into img: inout ProcessImage, status: ProcStatus) throws {
        img.cwd = try ProcFS.readLink("/proc/\(pid)/cwd")
        // A removed current directory reads "PATH (deleted)" (proc(5)); the process can still
        // sit in it. Its permission bits are kept to make an empty one again at restart.
        var st = stat()
        if img.cwd.hasSuffix(" (deleted)"), stat("/proc/\(pid)/cwd", &st) == 0 { img.cwdDeletedMode = UInt32(st.st_mode & 0o7777) }
        img.root = try ProcFS.readLink("/proc/\(pid)/root")
        img.umask = UInt32(status.fields["Umask"] ?? "22", radix: 8) ?? 0o22
    }
}

extension ProcessRestorer {
    /// The umask, unless a CLONE_FS child shares the one its parent has just set.
    func restoreUmask() throws {
        if image.sharesFSWithParent != true { try inj.call("umask", .umask, UInt64(image.umask)) }
    }

    /// chroot and chdir, done in finish(), once every process of the tree is forked and has
    /// opened its files: paths are resolved in the caller's root, and ssi's paths (snapshot,
    /// /proc/<ssi>/fd/N, files) would not exist inside a chroot. /proc shows the root and the
    /// cwd as ssi sees them: after chroot(2) the cwd is named inside the new root; a cwd
    /// outside the root (chroot without chdir) is entered first.
    func restoreRootAndCwd() throws {
        guard image.sharesFSWithParent != true else { return }   // CLONE_FS: the parent's
        func inside(_ path: String, _ root: String) -> String? {
            if root == "/" { return path }
            if path == root { return "/" }
            return path.hasPrefix(root + "/") ? String(path.dropFirst(root.count)) : nil
        }
        let cwd = image.cwdDeletedMode == nil ? image.cwd : String(image.cwd.dropLast(" (deleted)".count))
        if let mode = image.cwdDeletedMode { try makeRemovedDirectory(cwd, mode: mode, what: "PID \(pid) sat in the removed directory \(cwd)") }
        defer { if image.cwdDeletedMode != nil { rmdir(cwd) } }
        let cwdInRoot = inside(cwd, image.root)
        if cwdInRoot == nil { try inj.call("chdir \(cwd)", .chdir, try putString(cwd)) }
        if image.root != "/" { try inj.call("chroot \(image.root)", .chroot, try putString(image.root)) }
        if let c = cwdInRoot { try inj.call("chdir \(cwd)", .chdir, try putString(c)) }
    }

    /// A current directory that had been removed: an empty directory is made at its old path
    /// with its old mode, the process enters it, and it is removed again (the caller's
    /// defer): the process sits in a removed directory of that name, under the same parent,
    /// as before (getcwd(3) then fails with ENOENT, as it did).
    func makeRemovedDirectory(_ path: String, mode: UInt32, what: String) throws {
        if mkdir(path, mode_t(mode)) != 0 {
            let e = errno
            throw SSIError.sys("\(what): making it again for the restart", errno: e,
                               hint: e == EEXIST ? "something now exists at \(path): move it away, then restart again"
                                   : "its parent directory must exist: create it, then restart again")
        }
        chmod(path, mode_t(mode))   // mkdir(2) applies our umask
    }
}
