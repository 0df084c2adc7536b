import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Mount namespaces an application makes (unshare(CLONE_NEWNS), as `unshare -m`, sandboxes and
// build tools do; mount_namespaces(7)). A new namespace starts as a copy of its maker's, so it
// is saved as what differs from the application root's: the mounts it added (in the order they
// were made), the ones it removed, the flags it changed, and its propagation. Restart unshares
// in the first process of the namespace (its children inherit it, others join it with
// setns(2)), then replays the differences with injected mount(2) and umount2(2), before the
// process opens any file. A tmpfs or ramfs it mounted is saved with its files; a bind mount
// is made again from its source path, which must exist where the application restarts, as for
// any file it has open. Other file systems (a disk, NFS, devpts, overlay) are refused: their
// content is not the application's to carry.

/// One line of /proc/PID/mountinfo (proc(5)).
struct MountInfo: Equatable {
    var id: Int, parent: Int
    var device: String, root: String, mountPoint: String
    var options: [String], optional: [String]
    var fsType: String, source: String, superOptions: String

    /// The same mount in two namespaces: a copy keeps device, root and mount point.
    var key: String { "\(device) \(root) \(mountPoint)" }

    /// Parses /proc/PID/mountinfo; lines it cannot read are skipped.
    static func parse(_ text: String) -> [MountInfo] {
        text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            // The optional fields end with a lone "-" (from field 7 on).
            guard f.count >= 8, let dash = f[6...].firstIndex(of: "-"), dash + 1 < f.count, let id = Int(f[0]), let parent = Int(f[1]) else { return nil }
            return MountInfo(id: id, parent: parent, device: f[2], root: unescape(f[3]), mountPoint: unescape(f[4]),
                             options: f[5].split(separator: ",").map(String.init), optional: Array(f[6..<dash]),
                             fsType: f[dash + 1], source: dash + 2 < f.count ? unescape(f[dash + 2]) : "",
                             superOptions: dash + 3 < f.count ? f[dash + 3] : "")
        }
    }

    /// mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        let b = Array(s.utf8)
        var out = [UInt8](), i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v); i += 4
            } else {
                out.append(b[i]); i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The per-mount flags of mount(2) that its options name.
    var flags: UInt64 {
        let bits: [String: UInt64] = ["ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "nosymfollow": 256, "noatime": 1024,
                                      "nodiratime": 2048, "relatime": 1 << 21]
        let f = options.reduce(UInt64(0)) { $0 | (bits[$1] ?? 0) }
        // No atime option shown: strictatime (MS_STRICTATIME), the default being relatime.
        return f & (1024 | 1 << 21) == 0 ? f | 1 << 24 : f
    }
}

extension AppNamespaces {
    /// File systems made again from their type and options; a tmpfs or ramfs with its files.
    static let remadeFileSystems: Set<String> = ["tmpfs", "ramfs", "proc", "sysfs", "mqueue", "cgroup2"]

    /// What mount namespace `id` of `pid` has that the root's (`root`) has not.
    static func mounts(of pid: Int32, root: Int32, id: UInt64, writer: any ImageWriter) throws -> MountNamespace {
        guard let mine = try? ProcFS.read("/proc/\(pid)/mountinfo"), let theirs = try? ProcFS.read("/proc/\(root)/mountinfo") else {
            throw SSIError(.system, "could not read the mounts of PID \(pid) (mnt:[\(id)]); nothing was written and the application goes on", hint: "run ssi as root")
        }
        // mountinfo shows mount points relative to the reader's root (proc(5)), and hides the
        // mounts outside it: a chrooted process's cannot be compared with the reference's.
        if let r = try? ProcFS.readLink("/proc/\(pid)/root"), r != "/" {
            throw SSIError(.unsupported, "PID \(pid) has a mount namespace of its own (mnt:[\(id)]) and is chrooted to \(r); its mounts cannot be saved yet; nothing was written and the application goes on",
                           hint: "to checkpoint it, run it without the chroot, or without a mount namespace of its own")
        }
        let own = MountInfo.parse(mine), reference = MountInfo.parse(theirs)
        let refKeys = Dictionary(reference.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let ownKeys = Set(own.map(\.key))
        var ns = MountNamespace(id: id, propagation: nil, unmounted: reference.filter { !ownKeys.contains($0.key) }.map(\.mountPoint).reversed(), mounts: [])
        // Restart makes every mount private (or slave, when the namespace's were) before it
        // replays anything, so that no unmount or mount reaches the namespace it was copied
        // from (mount_namespaces(7): events propagate between peers). Mounts shared with peers
        // outside the application cannot be shared with them again anyway.
        ns.propagation = own.contains { $0.optional.contains { $0.hasPrefix("master:") } } ? "slave" : "private"
        // A bind is made from a mount that is still there when it is replayed: the removed ones
        // are unmounted first.
        var known = reference.filter { ownKeys.contains($0.key) }
        for m in own {
            defer { known.append(m) }
            if let r = refKeys[m.key] {
                if r.flags != m.flags { ns.mounts.append(MountImage(target: m.mountPoint, kind: "remount", source: "", flags: m.flags)) }
                continue
            }
            ns.mounts.append(try image(of: m, known: known, pid: pid, nsID: id, index: ns.mounts.count, writer: writer))
        }
        return ns
    }

    /// How to make mount `m` again: a bind of a path of a mount made before it (same device,
    /// a root that contains its root), or a new file system.
    private static func image(of m: MountInfo, known: [MountInfo], pid: Int32, nsID: UInt64, index: Int, writer: any ImageWriter) throws -> MountImage {
        func within(_ root: String, _ outer: String) -> Bool { outer == "/" || root == outer || root.hasPrefix(outer + "/") }
        if let from = known.filter({ $0.device == m.device && within(m.root, $0.root) }).max(by: { $0.root.count < $1.root.count }) {
            let rest = String(m.root.dropFirst(from.root == "/" ? 0 : from.root.count))
            let path = from.mountPoint == "/" ? (rest.isEmpty ? "/" : rest) : from.mountPoint + (rest == "/" ? "" : rest)
            return MountImage(target: m.mountPoint, kind: "bind", source: path, flags: m.flags)
        }
        guard remadeFileSystems.contains(m.fsType), m.root == "/" else {
            throw SSIError(.unsupported, "PID \(pid) mounted \(m.fsType) \(m.source) on \(m.mountPoint) in its mount namespace (mnt:[\(nsID)]); only bind mounts and \(remadeFileSystems.sorted().joined(separator: ", ")) can be made again; nothing was written and the application goes on",
                           hint: "unmount it before the checkpoint, or bind it from a path that exists where the application restarts")
        }
        var img = MountImage(target: m.mountPoint, kind: m.fsType, source: m.source, flags: m.flags)
        if m.fsType == "proc" {
            // Which PID namespace it shows: its process 1's (resolveProcMounts names the
            // process of the snapshot that mounts it again).
            img.pidNamespace = try? ProcFS.readLink("/proc/\(pid)/root\(m.mountPoint)/1/ns/pid")
        }
        let opts = m.superOptions.split(separator: ",").filter { $0 != "rw" && $0 != "ro" && $0 != "seclabel" }
        img.options = opts.isEmpty ? nil : opts.joined(separator: ",")
        if m.fsType == "tmpfs" || m.fsType == "ramfs" {
            let name = "mount-\(nsID)-\(index).img"
            img.files = try saveFiles(under: "/proc/\(pid)/root\(m.mountPoint)", to: name, writer: writer, what: "PID \(pid)'s \(m.fsType) on \(m.mountPoint)")
            img.contentFile = name
        }
        return img
    }

    /// Every file, directory and symbolic link below `top` (not crossing into other mounts),
    /// parents first; file contents appended to snapshot file `name`.
    private static func saveFiles(under top: String, to name: String, writer: any ImageWriter, what: String) throws -> [MountedFile] {
        var top0 = stat()
        guard lstat(top, &top0) == 0 else { throw SSIError.sys("\(what): stat \(top)", errno: errno) }
        let stream = try writer.createFile(name)
        var out = [MountedFile](), offset: UInt64 = 0
        var pending = [""], next = 0
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while next < pending.count {
            let rel = pending[next]
            next += 1
            let path = rel.isEmpty ? top : "\(top)/\(rel)"
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }                  // gone meanwhile
            var f = MountedFile(path: rel, type: "file", mode: UInt32(st.st_mode & 0o7777), owner: [st.st_uid, st.st_gid],
                                times: [Int64(st.st_atim.tv_sec), Int64(st.st_atim.tv_nsec), Int64(st.st_mtim.tv_sec), Int64(st.st_mtim.tv_nsec)])
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                f.type = "dir"
                // A mount below this one is another line of mountinfo: not its content.
                if st.st_dev == top0.st_dev {
                    let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                    pending += names.sorted().map { rel.isEmpty ? $0 : "\(rel)/\($0)" }
                }
            case S_IFLNK:
                f.type = "symlink"
                f.target = try? FileManager.default.destinationOfSymbolicLink(atPath: path)
            case S_IFREG:
                let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else { throw SSIError.sys("\(what): open \(rel)", errno: errno) }
                defer { close(fd) }
                f.offset = offset
                while true {
                    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("\(what): read \(rel)", errno: errno) }
                    if n == 0 { break }
                    try buf.withUnsafeBytes { try stream.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    offset += UInt64(n)
                }
                f.size = offset - f.offset!
            default:
                throw SSIError(.unsupported, "\(what): \(rel) is a device, FIFO or socket file, which is not saved; nothing was written and the application goes on",
                               hint: "remove it before the checkpoint")
            }
            out.append(f)
        }
        try stream.finish(sync: false)
        return out
    }
}

extension AppNamespaces {
    /// Each proc mount of a saved mount namespace names the process that mounts it again: one
    /// of the snapshot in the PID namespace it showed, nearest that namespace's top (`images`
    /// hold ssi's PIDs, before PIDNamespace.translate). A proc whose namespace has no process
    /// in the snapshot is mounted by the namespace's first process, as any other mount.
    static func resolveProcMounts(_ images: inout [ProcessImage]) {
        guard images.contains(where: { $0.namespaces?.mnt?.mounts.contains { $0.pidNamespace != nil } == true }) else { return }
        func link(_ pid: Int32, _ kind: String) -> String { (try? ProcFS.readLink("/proc/\(pid)/ns/\(kind)")) ?? "" }
        let pidNS = Dictionary(images.map { ($0.pid, link($0.pid, "pid")) }, uniquingKeysWith: { a, _ in a })
        let mntNS = Dictionary(images.map { ($0.pid, link($0.pid, "mnt")) }, uniquingKeysWith: { a, _ in a })
        for i in images.indices {
            guard var mnt = images[i].namespaces?.mnt else { continue }
            for k in mnt.mounts.indices {
                guard let shown = mnt.mounts[k].pidNamespace else { continue }
                mnt.mounts[k].mountedBy = images.filter { pidNS[$0.pid] == shown && mntNS[$0.pid] == "mnt:[\(mnt.id)]" }
                    .min { ($0.nestedPIDs?.count ?? 0, $0.pid) < ($1.nestedPIDs?.count ?? 0, $1.pid) }?.pid
            }
            images[i].namespaces?.mnt = mnt
        }
    }
}

/// proc mounts that a process other than the one making their mount namespace mounts, once it
/// exists (by its PID in the snapshot).
final class PendingMounts {
    var byProcess: [Int32: [MountImage]] = [:]
}

extension ProcessRestorer {
    /// Makes mount namespace `ns` for this process: unshare(2) CLONE_NEWNS, then the saved
    /// differences, in the process (mount(2) acts on the caller's namespace).
    func makeMountNamespace(_ ns: MountNamespace) throws {
        try inj.call("unshare(CLONE_NEWNS) in PID \(pid)", .unshare, 0x20000)
        // Paths are as the process sees them; it has ssi's root until its own is set again.
        let base = image.root == "/" ? "" : image.root
        // Always private (or slave) first: nothing replayed below may reach ssi's namespace.
        let slave = ns.propagation == "slave"
        try mount(nil, "/", nil, 0x4000 | (slave ? 0x80000 : 0x40000), nil, what: "make its mounts \(slave ? "slave" : "private")")   // MS_REC | MS_SLAVE/MS_PRIVATE
        for target in ns.unmounted {
            let r = try inj.rawArgs(.umount2, [try putString(base + target), 2 /* MNT_DETACH */])
            if r < 0 { warn("PID \(image.pid): \(target) could not be unmounted in its mount namespace: \(String(cString: strerror(Int32(-r))))") }
        }
        for m in ns.mounts {
            let target = base + m.target
            switch m.kind {
            case "remount":
                try mount(nil, target, nil, 0x20 | 0x1000 | m.flags, nil, what: "set the flags of \(m.target)")   // MS_REMOUNT | MS_BIND
            case "bind":
                try mount(base + m.source, target, nil, 0x1000, nil, what: "bind \(m.source) on \(m.target)")
                try mount(nil, target, nil, 0x20 | 0x1000 | m.flags, nil, what: "set the flags of \(m.target)")
            case "proc" where m.mountedBy != nil && m.mountedBy != image.pid:
                pendingMounts?.byProcess[m.mountedBy!, default: []].append(m)
            default:
                // Read-write while its files are written back, then read-only if it was.
                let readOnly = m.files != nil && m.flags & 1 != 0
                try mount(m.source, target, m.kind, readOnly ? m.flags & ~1 : m.flags, m.options, what: "mount \(m.kind) on \(m.target)")
                if let files = m.files, let name = m.contentFile { try refill(files, from: name, into: "/proc/\(pid)/root\(target)") }
                if readOnly { try mount(nil, target, nil, 0x20 | 0x1000 | m.flags, nil, what: "make \(m.target) read-only") }
            }
        }
    }

    /// The proc mounts left to this process by the one that made its mount namespace.
    func mountPending() throws {
        guard let mine = pendingMounts?.byProcess.removeValue(forKey: image.pid) else { return }
        let base = image.root == "/" ? "" : image.root
        for m in mine { try mount(m.source, base + m.target, m.kind, m.flags, m.options, what: "mount \(m.kind) on \(m.target)") }
    }

    private func mount(_ source: String?, _ target: String, _ type: String?, _ flags: UInt64, _ data: String?, what: String) throws {
        let a0 = try source.map { try putString($0, 0) } ?? 0
        let a1 = try putString(target, 4096)
        let a2 = try type.map { try putString($0, 8192) } ?? 0
        let a4 = try data.map { try putString($0, 12288) } ?? 0
        let r = try inj.rawArgs(.mount, [a0, a1, a2, flags, a4])
        if r < 0 {
            throw SSIError.sys("\(what) in the mount namespace of PID \(image.pid) (PID \(pid) here)", errno: Int32(-r),
                               hint: "the path must exist where the application restarts, as it did where it was checkpointed")
        }
    }

    /// Writes the saved files of a tmpfs into it, from ssi through the process's root
    /// (/proc/PID/root resolves in the process's mount namespace); owners, modes and times
    /// last, directories after their content.
    private func refill(_ files: [MountedFile], from name: String, into top: String) throws {
        let content = try source.open(name)
        for f in files {
            let path = f.path.isEmpty ? top : "\(top)/\(f.path)"
            switch f.type {
            case "dir":
                if !f.path.isEmpty, mkdir(path, 0o700) != 0, errno != EEXIST { throw SSIError.sys("make \(path)", errno: errno) }
            case "symlink":
                if symlink(f.target ?? "", path) != 0 { throw SSIError.sys("make the link \(path)", errno: errno) }
            default:
                let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw SSIError.sys("make \(path)", errno: errno) }
                defer { close(fd) }
                var left = f.size ?? 0, at = f.offset ?? 0
                var buf = [UInt8](repeating: 0, count: Int(min(left, 1 << 20)))
                while left > 0 {
                    let n = Int(min(left, UInt64(buf.count)))
                    try buf.withUnsafeMutableBytes { try content.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: at) }
                    guard buf.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, n) }) == n else { throw SSIError.sys("write \(path)", errno: errno) }
                    left -= UInt64(n); at += UInt64(n)
                }
            }
        }
        for f in files.reversed() {
            let path = f.path.isEmpty ? top : "\(top)/\(f.path)"
            _ = lchown(path, f.owner[0], f.owner[1])
            if f.type != "symlink" { _ = chmod(path, mode_t(f.mode)) }
            var ts = [timespec(tv_sec: Int(f.times[0]), tv_nsec: Int(f.times[1])), timespec(tv_sec: Int(f.times[2]), tv_nsec: Int(f.times[3]))]
            _ = utimensat(AT_FDCWD, path, &ts, AT_SYMLINK_NOFOLLOW)
        }
    }
}
