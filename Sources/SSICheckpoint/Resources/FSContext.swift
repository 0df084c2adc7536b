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
        let cwdInRoot = inside(image.cwd, image.root)
        if cwdInRoot == nil { try inj.call("chdir \(image.cwd)", .chdir, try putString(image.cwd)) }
        if image.root != "/" { try inj.call("chroot \(image.root)", .chroot, try putString(image.root)) }
        if let c = cwdInRoot { try inj.call("chdir \(image.cwd)", .chdir, try putString(c)) }
    }
}
