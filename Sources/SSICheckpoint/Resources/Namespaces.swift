import Foundation
import SSIImage
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Namespaces an application made for itself (unshare(2), clone(2) CLONE_NEW*) are not saved
// yet: a restart would put its processes back in ssi's own namespaces, where their hostname,
// IPC objects, network, mounts or PIDs are not (namespaces(7)). Such a checkpoint is refused,
// naming the process and the namespace, before anything is written.

extension ProcessDumper {
    /// The kinds of /proc/PID/ns/ checked, and whether the application's root process must
    /// share ssi's own (the others may be the launcher's choice: a node's network namespace,
    /// the PID and mount namespaces ssi-init gives a cluster application, are compared with
    /// the root's only).
    static let namespaceKinds: [(name: String, withSSI: Bool)] = [
        ("uts", true), ("ipc", true), ("mnt", false), ("net", false), ("pid", false), ("user", false), ("cgroup", false), ("time", false),
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

    private static func refusal(_ pid: Int32, _ kind: String, _ ns: String) -> SSIError {
        let what = ["uts": "UTS (hostname)", "ipc": "IPC", "mnt": "mount", "net": "network", "pid": "PID", "user": "user", "cgroup": "cgroup", "time": "time"][kind] ?? kind
        let article = what.hasPrefix("IPC") ? "an" : "a"
        return SSIError(.unsupported, "PID \(pid) is in \(article) \(what) namespace of its own (\(ns)), made by the application; namespaces are not saved yet, so a restart would lose it; nothing was written and the application goes on",
                        hint: "run the application without creating a \(what) namespace to checkpoint it")
    }
}
