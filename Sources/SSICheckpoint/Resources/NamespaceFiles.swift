import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// fds on namespace files (/proc/PID/ns/*, namespaces(7)): programs keep them to setns(2)
// back and forth, or to keep a namespace alive. One of the process's own namespaces is
// opened again from /proc/self/ns (the restored process is in ssi's, as the checkpoint
// refuses namespaces made by the application). A network namespace no process is in any
// more is made anew, empty, when it was empty (only "lo"): its interfaces, addresses and
// routes are not saved, so one that had more is refused.

extension ProcessDumper {
    static let namespaceFileKinds = ["net", "uts", "ipc", "mnt", "pid", "user", "cgroup", "time", "pid_for_children", "time_for_children"]

    /// The image of fd `fd` if it is a namespace file ("net:[4026531840]"), else nil.
    func namespaceFile(fd: Int32, link: String, flags: Int32, cloexec: Bool, st: stat) throws -> FileDescriptorImage? {
        guard let colon = link.firstIndex(of: ":"), link.hasSuffix("]"), ProcessDumper.namespaceFileKinds.contains(String(link[..<colon])) else { return nil }
        let kind = String(link[..<colon])
        var img = FileDescriptorImage(fd: fd, kind: .namespace, path: link, flags: flags, closeOnExec: cloexec, position: 0)
        img.namespaceKind = kind
        var own = stat()
        if stat("/proc/\(pid)/ns/\(kind)", &own) == 0, own.st_ino == st.st_ino, own.st_dev == st.st_dev {
            img.namespaceOwn = true
            return img
        }
        guard kind == "net", let copy = try? fdCopy(fd: fd) else {
            if ignoreUnsupported { return nil }
            throw SSIError(.unsupported, "PID \(pid) fd \(fd): \(link) is a \(kind) namespace the process is not in; only its own namespaces and empty network namespaces can be restored; nothing was written and the application goes on",
                           hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
        }
        defer { close(copy) }
        let names = NamespaceFiles.interfaces(inNetworkNamespace: copy)
        guard names == ["lo"] else {
            if ignoreUnsupported { return nil }
            throw SSIError(.unsupported, "PID \(pid) fd \(fd): \(link) is a network namespace no process is in, with interfaces \(names ?? []) whose configuration is not saved; nothing was written and the application goes on",
                           hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
        }
        img.namespaceOwn = false
        return img
    }
}

enum NamespaceFiles {
    /// The interface names of the network namespace of `fd`, read by a thread of ssi that
    /// enters it (setns(2) moves only the calling thread); nil if it cannot.
    static func interfaces(inNetworkNamespace fd: Int32) -> [String]? {
        let names: [String]?? = AppNamespaces.inside(fd, type: AppNamespaces.newNet) {
            guard let list = if_nameindex() else { return nil }
            defer { if_freenameindex(list) }
            var out = [String]()
            var p = list
            while p.pointee.if_index != 0, let n = p.pointee.if_name { out.append(String(cString: n)); p += 1 }
            return out
        }
        return names ?? nil
    }

    /// A new, empty network namespace, held by an fd of ssi.
    static func makeNetworkNamespace() throws -> Int32 { try ThreadFS.makeNetworkNamespace() }
}

extension ProcessRestorer {
    /// The process's own namespace from /proc/self/ns; a network namespace it was not in,
    /// made anew by ssi and taken with pidfd_getfd(2).
    func openNamespace(_ f: FileDescriptorImage) throws -> UInt64 {
        let kind = f.namespaceKind ?? "net"
        if f.namespaceOwn == true {
            return try reopen(f, path: "/proc/self/ns/\(kind)", who: "PID \(pid) fd \(f.fd)")
        }
        let mine = try NamespaceFiles.makeNetworkNamespace()
        defer { close(mine) }
        return try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "network namespace of fd \(f.fd)")
    }
}
