import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Namespaces an application made for itself (unshare(2), clone(2) CLONE_NEW*,
// namespaces(7)). UTS namespaces are saved with their names and made again at restart, shared
// by the same processes. The other kinds are not saved yet: a restart would put the processes
// back in ssi's own namespaces, where their IPC objects, network, mounts or PIDs are not, so
// such a checkpoint is refused, naming the process and the namespace, before anything is
// written.

extension ProcessDumper {
    /// The kinds of /proc/PID/ns/ checked, and whether the application's root process must
    /// share ssi's own (the others may be the launcher's choice: a node's network namespace,
    /// the PID and mount namespaces ssi-init gives a cluster application, are compared with
    /// the root's only).
    static let namespaceKinds: [(name: String, withSSI: Bool)] = [
        ("ipc", true), ("mnt", false), ("net", false), ("pid", false), ("user", false), ("cgroup", false), ("time", false),
    ]

    static func refuseOwnNamespaces(root: Int32, pids: [Int32]) throws {
        func ns(_ pid: Int32, _ kind: String) -> String? { try? ProcFS.readLink("/proc/\(pid)/ns/\(kind)") }
        let me = getpid()
        // A cluster application's root is ssi-init, process 1 of the PID namespace the
        // launcher made, with a mount namespace of its own for that namespace's /proc
        // (docs/migration.md): both are the launcher's, and restored as such.
        let launched = PIDNamespace.isOwnInit(root)
        for kind in namespaceKinds {
            guard let rootNS = ns(root, kind.name) else { continue }
            if kind.withSSI, !(launched && kind.name == "mnt"), let mine = ns(me, kind.name), mine != rootNS {
                throw refusal(root, kind.name, rootNS)
            }
            for pid in pids where pid != root {
                if let theirs = ns(pid, kind.name), theirs != rootNS { throw refusal(pid, kind.name, theirs) }
            }
        }
    }

    /// The namespaces of `pid` that restart makes again, nil when it shares ssi's.
    static func savedNamespaces(_ pid: Int32) throws -> ProcessNamespaces? {
        var out = ProcessNamespaces()
        var mine = stat(), theirs = stat()
        if stat("/proc/self/ns/uts", &mine) == 0, stat("/proc/\(pid)/ns/uts", &theirs) == 0, mine.st_ino != theirs.st_ino {
            guard let names = AppNamespaces.utsNames(of: pid) else {
                throw SSIError(.system, "could not read the host name of PID \(pid)'s UTS namespace (uts:[\(theirs.st_ino)]); nothing was written and the application goes on",
                               hint: "run ssi as root")
            }
            out.uts = UTSNamespace(id: UInt64(theirs.st_ino), hostname: names.host, domainname: names.domain)
        }
        return out.isEmpty ? nil : out
    }

    private static func refusal(_ pid: Int32, _ kind: String, _ ns: String) -> SSIError {
        let what = ["uts": "UTS (hostname)", "ipc": "IPC", "mnt": "mount", "net": "network", "pid": "PID", "user": "user", "cgroup": "cgroup", "time": "time"][kind] ?? kind
        let article = what.hasPrefix("IPC") ? "an" : "a"
        return SSIError(.unsupported, "PID \(pid) is in \(article) \(what) namespace of its own (\(ns)), made by the application; namespaces are not saved yet, so a restart would lose it; nothing was written and the application goes on",
                        hint: "run the application without creating a \(what) namespace to checkpoint it")
    }
}

enum AppNamespaces {
    /// The host and domain names of `pid`'s UTS namespace, read by a thread of ssi that
    /// enters it (setns(2) moves only the calling thread, which ends right after).
    static func utsNames(of pid: Int32) -> (host: String, domain: String)? {
        let fd = open("/proc/\(pid)/ns/uts", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        nonisolated(unsafe) var result: (String, String)? = nil   // written by the thread, read after the semaphore
        let done = DispatchSemaphore(value: 0)
        Thread {
            defer { done.signal() }
            guard ThreadFS.enter(fd, type: 0x0400_0000 /* CLONE_NEWUTS */) == 0 else { return }
            var u = utsname()
            guard uname(&u) == 0 else { return }
            func text<T>(_ field: T) -> String {
                withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            result = (text(u.nodename), text(u.__domainname))   // glibc names it so without _GNU_SOURCE
        }.start()
        done.wait()
        return result
    }
}

extension ProcessRestorer {
    /// Puts the process in the namespaces it had, before it forks its children (who inherit
    /// them) and before anything that depends on them is rebuilt. `made` maps a saved
    /// namespace to the process (our PID) that made it again; `parent`: the parent's saved
    /// namespaces (nil for the root, whose parent is ssi).
    func enterNamespaces(parent: ProcessNamespaces?, made: inout [String: Int32]) throws {
        let want = image.namespaces?.uts
        guard want?.id != parent?.uts?.id else { return }      // inherited from the parent
        guard let want else {
            // Back in ssi's namespace, after a parent that had one of its own.
            try joinNamespace(path: "/proc/self/ns/uts", type: 0x0400_0000, what: "ssi's UTS namespace")
            return
        }
        let key = "uts:\(want.id)"
        if let holder = made[key] {
            try joinNamespace(path: "/proc/\(holder)/ns/uts", type: 0x0400_0000, what: "the UTS namespace uts:[\(want.id)] of PID \(holder)")
            return
        }
        // unshare(2) CLONE_NEWUTS: a copy of the current names, then set to the saved ones
        // (sethostname(2), setdomainname(2): the length, no NUL needed).
        try inj.call("unshare(CLONE_NEWUTS) in PID \(pid)", .unshare, 0x0400_0000)
        let host = try putString(want.hostname)
        try inj.call("sethostname in PID \(pid)", .sethostname, host, UInt64(want.hostname.utf8.count))
        let dom = try putString(want.domainname, 512)
        try inj.call("setdomainname in PID \(pid)", .setdomainname, dom, UInt64(want.domainname.utf8.count))
        made[key] = pid
    }

    /// setns(2) into the namespace of file `path` (opened by ssi, taken by the process with
    /// pidfd_getfd(2)), then closes the fd.
    private func joinNamespace(path: String, type: UInt64, what: String) throws {
        let mine = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard mine >= 0 else { throw SSIError.sys("open \(path) (\(what)) for PID \(pid)", errno: errno) }
        defer { close(mine) }
        let fd = try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: what)
        try inj.call("setns to \(what) in PID \(pid)", .setns, fd, type)
        try inj.call("close", .close, fd)
    }
}
