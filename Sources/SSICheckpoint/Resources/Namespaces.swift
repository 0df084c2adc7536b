import Foundation
import SSIImage
import SSIInject
import SSIIPC
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Namespaces an application made for itself (unshare(2), clone(2) CLONE_NEW*,
// namespaces(7)). UTS namespaces are saved with their names and made again at restart, shared
// by the same processes. Network namespaces with only their loopback interface are saved
// with lo's state and their sysctls; ssi makes them again before the processes, builds
// their sockets inside them (Sockets.swift), and the processes enter them. PID namespaces
// are made again as the processes are created (PIDNamespace.swift), mount namespaces with
// their mounts (MountNamespaces.swift). The other kinds are not saved yet: a restart would put the processes
// back in ssi's own namespaces, where their IPC objects, network, mounts or PIDs are not, so
// such a checkpoint is refused, naming the process and the namespace, before anything is
// written.

extension ProcessDumper {
    /// The kinds of /proc/PID/ns/ checked, and whether the application's root process must
    /// share ssi's own (the others may be the launcher's choice: a node's network namespace,
    /// the PID and mount namespaces ssi-init gives a cluster application, are compared with
    /// the root's only).
    /// User, cgroup and time namespaces are never the launcher's: a root in one of its own
    /// (`unshare -U prog`, `unshare -C prog`) is refused too; it used to come back in ssi's,
    /// with ssi's capabilities (found by probing, December 2026).
    static let namespaceKinds: [(name: String, withSSI: Bool)] = [
        ("user", true), ("cgroup", true), ("time", true),
    ]

    /// The network namespace a root process's own is compared with: a cluster
    /// application's root (ssi-init) is in the one its node gave it, restored as such
    /// (RestartOptions.rootNetwork); any other root shares ssi's unless it made its own
    /// (`unshare -n prog`), which is then saved like any namespace the application made
    /// (it used to come back in ssi's: a sandboxed server reachable from the host).
    static func referenceNetwork(root: Int32) -> String {
        PIDNamespace.isOwnInit(root) ? "/proc/\(root)/ns/net" : "/proc/self/ns/net"
    }

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

/// Saves the namespaces of an application's processes during a checkpoint: each namespace
/// once (its content goes to the snapshot with the first process that has it).
final class NamespaceSaver {
    let root: Int32
    let writer: any ImageWriter
    private var nets = [UInt64: NetNamespace]()
    private var ipcs = [UInt64: IPCNamespace]()
    private var mnts = [UInt64: MountNamespace]()

    init(root: Int32, writer: any ImageWriter) { (self.root, self.writer) = (root, writer) }

    private static func inode(_ path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }

    /// The namespaces of `pid` that restart makes again, nil when it shares ssi's (the
    /// root's, for the network namespace: the launcher's choice).
    func namespaces(of pid: Int32) throws -> ProcessNamespaces? {
        var out = ProcessNamespaces()
        if let rootNet = Self.inode(ProcessDumper.referenceNetwork(root: root)), let id = Self.inode("/proc/\(pid)/ns/net"), rootNet != id {
            if nets[id] == nil { nets[id] = try AppNamespaces.network(of: pid, id: id) }
            out.net = nets[id]
        }
        if let mine = Self.inode("/proc/self/ns/ipc"), let id = Self.inode("/proc/\(pid)/ns/ipc"), mine != id {
            if ipcs[id] == nil { ipcs[id] = try AppNamespaces.ipc(of: pid, id: id, writer: writer) }
            out.ipc = ipcs[id]
        }
        // Compared with the root's; the root's with ssi's (`unshare -m prog` is the root),
        // except a cluster application's root: its mount namespace is the launcher's (for its
        // /proc), made again by restart.
        // The root's is compared with its parent's: a root that made its own (`unshare -m prog`)
        // differs from the process that started it; one started in another namespace than
        // ssi's (a service with PrivateTmp) is restored where the restart runs, as before.
        let parentOfRoot = pid == root ? ProcFS.parentPID(root) : nil
        let reference = pid != root ? root : PIDNamespace.isOwnInit(root) ? nil : parentOfRoot
        if let reference, let refMnt = Self.inode("/proc/\(reference)/ns/mnt"), let id = Self.inode("/proc/\(pid)/ns/mnt"), refMnt != id {
            if mnts[id] == nil { mnts[id] = try AppNamespaces.mounts(of: pid, root: reference, id: id, writer: writer) }
            out.mnt = mnts[id]
        }
        if let mine = Self.inode("/proc/self/ns/uts"), let id = Self.inode("/proc/\(pid)/ns/uts"), mine != id {
            guard let names = AppNamespaces.utsNames(of: pid) else {
                throw SSIError(.system, "could not read the host name of PID \(pid)'s UTS namespace (uts:[\(id)]); nothing was written and the application goes on",
                               hint: "run ssi as root")
            }
            out.uts = UTSNamespace(id: id, hostname: names.host, domainname: names.domain)
        }
        return out.isEmpty ? nil : out
    }
}

enum AppNamespaces {
    /// The host and domain names of `pid`'s UTS namespace, read on a thread inside it.
    static func utsNames(of pid: Int32) -> (host: String, domain: String)? {
        let fd = open("/proc/\(pid)/ns/uts", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let names: (String, String)?? = inside(fd, type: newUTS) {
            var u = utsname()
            guard uname(&u) == 0 else { return nil }
            func text<T>(_ field: T) -> String {
                withUnsafeBytes(of: field) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            return (text(u.nodename), text(u.__domainname))   // glibc names it so without _GNU_SOURCE
        }
        return names ?? nil
    }
}

extension AppNamespaces {
    /// Per-namespace sysctls (paths under /proc/sys) that programs set for themselves;
    /// saved and written back. Others keep a new namespace's defaults.
    static let netSysctls = [
        "net/ipv4/ip_default_ttl", "net/ipv4/ip_local_port_range", "net/ipv4/ip_local_reserved_ports", "net/ipv4/ip_unprivileged_port_start",
        "net/ipv4/ping_group_range", "net/ipv4/ip_forward", "net/ipv4/ip_no_pmtu_disc", "net/ipv4/tcp_keepalive_time", "net/ipv4/tcp_keepalive_intvl",
        "net/ipv4/tcp_keepalive_probes", "net/ipv4/tcp_fin_timeout", "net/ipv4/tcp_syncookies", "net/ipv4/tcp_timestamps", "net/ipv4/tcp_sack",
        "net/ipv4/tcp_window_scaling", "net/ipv4/tcp_tw_reuse", "net/ipv4/tcp_fastopen", "net/ipv4/tcp_syn_retries", "net/ipv4/tcp_synack_retries",
        "net/ipv4/tcp_retries2", "net/ipv4/tcp_ecn", "net/ipv4/tcp_congestion_control", "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/udp_rmem_min",
        "net/ipv4/udp_wmem_min", "net/core/somaxconn", "net/unix/max_dgram_qlen", "net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/lo/disable_ipv6",
    ]

    /// Runs `body` on a new thread of ssi and waits for it: what it does to its own
    /// namespaces (setns(2) and unshare(2) of the net, IPC and UTS kinds move only the
    /// calling thread) ends with it, and ssi's stay as they were.
    static func onThread<T>(_ body: @escaping () -> T) -> T { ThreadFS.onThread(body) }

    /// Runs `body` on a thread of ssi that has entered the namespace of `fd`; nil if it
    /// could not enter.
    static func inside<T>(_ fd: Int32, type: Int32, _ body: @escaping () -> T) -> T? {
        onThread { ThreadFS.enter(fd, type: type) == 0 ? body() : nil }
    }

    /// The values of sysctls `names` (paths under /proc/sys) as the calling thread's
    /// namespaces show them; those it cannot read are left out.
    static func readSysctls(_ names: [String]) -> [String: String] {
        var values = [String: String]()
        for name in names {
            if let v = try? ProcFS.read("/proc/sys/\(name)") { values[name] = v.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        return values
    }

    /// Writes the sysctls that differ; returns those the kernel refused, as "a.b.c = v".
    static func writeSysctls(_ values: [String: String]) -> [String] {
        var refused = [String]()
        for (name, value) in values.sorted(by: { $0.key < $1.key }) {
            let path = "/proc/sys/\(name)"
            if (try? ProcFS.read(path))?.trimmingCharacters(in: .whitespacesAndNewlines) == value { continue }
            if (try? ProcFS.write(path, value)) == nil { refused.append("\(name.replacingOccurrences(of: "/", with: ".")) = \(value)") }
        }
        return refused
    }

    /// A private directory for the files SSIIPC reads and writes, removed after `body`.
    static func withScratchDirectory<T>(_ name: String, _ body: (String) throws -> T) throws -> T {
        let dir = NSTemporaryDirectory() + "\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try body(dir)
    }

    static let newNet: Int32 = 0x4000_0000   // CLONE_NEWNET
    static let newIPC: Int32 = 0x0800_0000   // CLONE_NEWIPC
    static let newUTS: Int32 = 0x0400_0000   // CLONE_NEWUTS

    /// IPC limits, per IPC namespace (ipc_namespaces(7) lists them), by path under /proc/sys.
    static let ipcLimits = [
        "kernel/msgmax", "kernel/msgmnb", "kernel/msgmni", "kernel/sem", "kernel/shmmax", "kernel/shmall", "kernel/shmmni",
        "kernel/shm_rmid_forced", "fs/mqueue/msg_max", "fs/mqueue/msgsize_max", "fs/mqueue/queues_max",
        "fs/mqueue/msg_default", "fs/mqueue/msgsize_default",
    ]

    /// The IPC namespace of `pid`: its limits and its SysV objects, each saved by SSIIPC
    /// (on a thread inside the namespace: the SysV calls and /proc/sysvipc act on the
    /// calling thread's) into a file of the snapshot.
    static func ipc(of pid: Int32, id: UInt64, writer: any ImageWriter) throws -> IPCNamespace {
        let fd = open("/proc/\(pid)/ns/ipc", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SSIError.sys("open /proc/\(pid)/ns/ipc", errno: errno) }
        defer { close(fd) }
        return try withScratchDirectory("ssi-ipcns-\(id)") { dir in
            typealias Saved = (limits: [String: String], objects: [(IPCKind, Int32, String)])
            let read: Result<Saved, Error>? = inside(fd, type: newIPC) {
                Result {
                    var objects = [(IPCKind, Int32, String)]()
                    for kind in IPCKind.allCases {
                        for oid in try SysVIPC.ids(kind) {
                            let path = "\(dir)/\(kind.rawValue)-\(oid)"
                            try SysVIPC.checkpoint(kind: kind, id: oid, to: path)
                            objects.append((kind, oid, path))
                        }
                    }
                    return (readSysctls(ipcLimits), objects)
                }
            }
            guard let read else { throw SSIError(.system, "could not enter the IPC namespace ipc:[\(id)] of PID \(pid); nothing was written", hint: "run ssi as root") }
            let saved: Saved
            do { saved = try read.get() } catch {
                throw SSIError(.system, "saving the IPC objects of PID \(pid)'s IPC namespace ipc:[\(id)] failed: \(error); nothing was written and the application goes on",
                               hint: "ipcs shows the namespace's objects from inside it (nsenter -t \(pid) -i ipcs); checkpoint again once they are settled")
            }
            var objects = [IPCNamespace.Object]()
            for (kind, oid, path) in saved.objects {
                let name = "ipcns-\(id)-\(kind.rawValue)-\(oid).img"
                try writer.addFile(name, Array(try Data(contentsOf: URL(fileURLWithPath: path))), sync: false)
                objects.append(IPCNamespace.Object(kind: kind.rawValue, id: oid, file: name))
            }
            return IPCNamespace(id: id, limits: saved.limits, objects: objects)
        }
    }

    /// Makes the IPC namespace `ns` again, held by an fd of ssi: a thread of ssi unshares
    /// one, writes the limits, then recreates every object with its key and id (SSIIPC).
    /// Returns ssi's fd on it and the segments that had been removed while attached (made
    /// again unmarked so that the processes can attach them; removed again once they have:
    /// Restart).
    static func makeIPC(_ ns: IPCNamespace, from snapshot: any ImageReader) throws -> (fd: Int32, removedSegments: [Int32]) {
        try withScratchDirectory("ssi-ipcns-restore-\(ns.id)") { dir in
            var files = [(IPCKind, String)]()
            for o in ns.objects {
                guard let kind = IPCKind(rawValue: o.kind) else { throw SSIError(.corrupt, "\(snapshot.location): IPC object of unknown kind \(o.kind)") }
                let path = "\(dir)/\(o.kind)-\(o.id)"
                try Data(try snapshot.open(o.file).readAll()).write(to: URL(fileURLWithPath: path))
                files.append((kind, path))
            }
            let limits = ns.limits, toRestore = files
            let made: Result<(fd: Int32, removedSegments: [Int32]), Error> = onThread {
                Result {
                    try IPCObjects.unshareNamespace()
                    let fd = open("/proc/thread-self/ns/ipc", O_RDONLY | O_CLOEXEC)
                    guard fd >= 0 else { throw SSIError.sys("open /proc/thread-self/ns/ipc", errno: errno) }
                    var removed = [Int32]()
                    do {
                        for f in writeSysctls(limits) { warn("IPC namespace ipc:[\(ns.id)]: could not set \(f); it keeps the kernel's default") }
                        for (kind, path) in toRestore {
                            let r = try SysVIPC.restore(from: path, kind: kind)
                            if r.info.segment?.markedForRemoval == true { removed.append(r.info.id) }
                        }
                    } catch {
                        close(fd)
                        throw error
                    }
                    return (fd, removed)
                }
            }
            do { return try made.get() } catch {
                throw SSIError(.system, "making the IPC namespace ipc:[\(ns.id)] again failed: \(error); nothing was restarted",
                               hint: "the snapshot is untouched: restart again once the cause is fixed")
            }
        }
    }

    /// The network namespace of `pid`: only "lo" (interfaces, addresses and routes of others
    /// are not saved, so the checkpoint is refused), its state and the sysctls.
    static func network(of pid: Int32, id: UInt64) throws -> NetNamespace {
        let fd = open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SSIError.sys("open /proc/\(pid)/ns/net", errno: errno) }
        defer { close(fd) }
        let names = NamespaceFiles.interfaces(inNetworkNamespace: fd) ?? []
        guard names == ["lo"] else {
            throw SSIError(.unsupported, "PID \(pid) is in a network namespace of its own (net:[\(id)]) with interfaces \(names.joined(separator: ", ")); only a namespace with its loopback alone can be saved (the others' addresses and routes are not); nothing was written and the application goes on",
                           hint: "checkpoint it before it adds interfaces to its namespace")
        }
        let read: (Bool, [String: String])? = inside(fd, type: newNet) {
            let up = ThreadFS.interfaceFlags("lo")
            return ((up ?? 0) & 0x1 /* IFF_UP */ != 0, readSysctls(netSysctls))
        }
        guard let read else { throw SSIError(.system, "could not enter the network namespace net:[\(id)] of PID \(pid); nothing was written", hint: "run ssi as root") }
        return NetNamespace(id: id, loopbackUp: read.0, sysctls: read.1)
    }

    /// Makes the network namespace `ns` again, held by an fd of ssi: lo brought up if it
    /// was, the sysctls written (a value the kernel refuses is said, not fatal).
    static func makeNetwork(_ ns: NetNamespace) throws -> Int32 {
        let fd = try NamespaceFiles.makeNetworkNamespace()
        let failed: (loUp: Bool, refused: [String])? = inside(fd, type: newNet) {
            var loUp = true
            if ns.loopbackUp {
                if let f = ThreadFS.interfaceFlags("lo"), ThreadFS.setInterfaceFlags("lo", f | 0x1 /* IFF_UP */) == 0 {} else { loUp = false }
            }
            return (loUp, writeSysctls(ns.sysctls))
        }
        guard let failed, failed.loUp else {
            close(fd)
            throw SSIError(.system, "could not \(failed == nil ? "enter" : "bring lo up in") the network namespace made for net:[\(ns.id)]; nothing was restarted",
                           hint: "restart as root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
        }
        for f in failed.refused { warn("network namespace net:[\(ns.id)]: could not set \(f); it keeps the kernel's default") }
        return fd
    }
}

extension ProcessRestorer {
    /// Puts the process in the namespaces it had, before it forks its children (who inherit
    /// them) and before anything that depends on them is rebuilt. `made` maps a saved
    /// namespace to the process (our PID) that made it again; `parent`: the parent's saved
    /// namespaces (nil for the root, whose parent is ssi).
    func enterNamespaces(parent: ProcessNamespaces?, isRoot: Bool, made: inout [String: Int32]) throws {
        // Network and IPC namespaces were made by ssi before the tree (sockets are built
        // inside theirs before the root forks; SysV segments are attached by id in theirs
        // while memory is rebuilt).
        // The root of an application whose own network namespace the node made again
        // (RestartOptions.rootNetwork) enters it first; its children inherit it.
        if isRoot, let rootNetwork { try setns(to: rootNetwork, type: AppNamespaces.newNet, what: "the application's network namespace") }
        try enterMade("network", type: AppNamespaces.newNet, want: image.namespaces?.net?.id, parent: parent?.net?.id, fds: netNamespaces)
        try enterMade("IPC", type: AppNamespaces.newIPC, want: image.namespaces?.ipc?.id, parent: parent?.ipc?.id, fds: ipcNamespaces)
        try enterMount(parent: parent, isRoot: isRoot, made: &made)
        try mountPending()
        let want = image.namespaces?.uts
        guard want?.id != parent?.uts?.id else { return }      // inherited from the parent
        guard let want else {
            // Back in ssi's namespace, after a parent that had one of its own.
            try joinNamespace(path: "/proc/self/ns/uts", type: AppNamespaces.newUTS, what: "ssi's UTS namespace")
            return
        }
        let key = "uts:\(want.id)"
        if let holder = made[key] {
            try joinNamespace(path: "/proc/\(holder)/ns/uts", type: AppNamespaces.newUTS, what: "the UTS namespace uts:[\(want.id)] of PID \(holder)")
            return
        }
        // unshare(2) CLONE_NEWUTS: a copy of the current names, then set to the saved ones
        // (sethostname(2), setdomainname(2): the length, no NUL needed).
        try inj.call("unshare(CLONE_NEWUTS) in PID \(pid)", .unshare, UInt64(AppNamespaces.newUTS))
        let host = try putString(want.hostname)
        try inj.call("sethostname in PID \(pid)", .sethostname, host, UInt64(want.hostname.utf8.count))
        let dom = try putString(want.domainname, 512)
        try inj.call("setdomainname in PID \(pid)", .setdomainname, dom, UInt64(want.domainname.utf8.count))
        made[key] = pid
    }

    /// The mount namespace: the parent's (inherited), one made already (joined), the root's
    /// (joined back), or a new one made here.
    private func enterMount(parent: ProcessNamespaces?, isRoot: Bool, made: inout [String: Int32]) throws {
        defer { if isRoot { made["mnt:root"] = pid } }
        let want = image.namespaces?.mnt
        // No record: the root's namespace (the root's own is compared with its parent's).
        let mine = isRoot ? want?.id : want?.id ?? rootMountNamespace
        guard mine != (parent?.mnt?.id ?? (isRoot ? nil : rootMountNamespace)) else { return }
        // setns(2) CLONE_NEWNS: 0x20000.
        guard let want else {
            if let root = made["mnt:root"] { try joinNamespace(path: "/proc/\(root)/ns/mnt", type: 0x20000, what: "the application's mount namespace") }
            return
        }
        if let holder = made["mnt:\(want.id)"] {
            try joinNamespace(path: "/proc/\(holder)/ns/mnt", type: 0x20000, what: "the mount namespace mnt:[\(want.id)] of PID \(holder)")
            return
        }
        // The namespace was saved as what differs from the root's: made from the root's.
        if parent?.mnt != nil, let root = made["mnt:root"] {
            try joinNamespace(path: "/proc/\(root)/ns/mnt", type: 0x20000, what: "the application's mount namespace")
        }
        try makeMountNamespace(want)
        made["mnt:\(want.id)"] = pid
    }

    /// A namespace ssi made again (`fds`: saved id -> ssi's fd), entered unless the parent
    /// had it already; nil `want`: the root's, which is ssi's.
    private func enterMade(_ kind: String, type: Int32, want: UInt64?, parent: UInt64?, fds: [UInt64: Int32]) throws {
        guard want != parent else { return }
        guard let want else {
            // Back in the root's namespace, after a parent that had one of its own.
            if kind == "network", let rootNetwork {
                try setns(to: rootNetwork, type: type, what: "the application's network namespace")
                return
            }
            try joinNamespace(path: "/proc/self/ns/\(kind == "network" ? "net" : "ipc")", type: type, what: "ssi's \(kind) namespace")
            return
        }
        guard let mine = fds[want] else { throw SSIError(.corrupt, "PID \(image.pid): \(kind) namespace \(want) of the snapshot was not made") }
        try setns(to: mine, type: type, what: "\(kind) namespace [\(want)]")
    }

    /// setns(2) into the namespace of file `path` (opened by ssi, taken by the process with
    /// pidfd_getfd(2)), then closes the fd.
    func joinNamespace(path: String, type: Int32, what: String) throws {
        let mine = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard mine >= 0 else { throw SSIError.sys("open \(path) (\(what)) for PID \(pid)", errno: errno) }
        defer { close(mine) }
        try setns(to: mine, type: type, what: what)
    }

    /// setns(2) of the process into the namespace of ssi's fd `mine` (taken with
    /// pidfd_getfd(2)), then the taken fd closed.
    private func setns(to mine: Int32, type: Int32, what: String) throws {
        let fd = try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: what)
        try inj.call("setns to \(what) in PID \(pid)", .setns, fd, UInt64(type))
        try inj.call("close", .close, fd)
    }
}
