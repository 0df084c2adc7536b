import Foundation
import SSIImage
import SSIInject
import SSISystem

// Applications with a PID namespace of their own (cluster applications: ssi-init is their
// process 1; docs/migration.md). ssi sees their processes under the node's PIDs; they see
// themselves under the namespace's. The snapshot keeps the latter, since those are what the
// processes know (getpid, getppid, gettid, the ids in their memory); restart creates a new
// namespace whose init is created with set_tid [1], and every other task with set_tid of
// size 1, which sets the id in the innermost namespace only (clone(2)), so the node's own
// use of those numbers does not matter.
//
// PID namespaces the application makes itself (unshare(CLONE_NEWPID) then fork, as
// `unshare --pid --fork` and sandboxes do) sit below the application's level: a process there
// has one more id per level (NSpid). The snapshot keeps its id at the application's level
// (`pid`, what its parent and the rest of the application see) and the ones below
// (`nestedPIDs`). Restart creates such a process with set_tid holding all of them, innermost
// first, and CLONE_NEWPID for the first process of a namespace (set_tid[0] = 1); the process
// that made the namespace then joins it for its later children (setns(2) CLONE_NEWPID sets
// pid_for_children), or unshares again when nobody lived in it yet.

enum PIDNamespace {
    /// NSpid of /proc/PID/status (proc(5), Linux 4.1): the task's id in each PID namespace
    /// it belongs to, outermost first. `task` reads a thread's entry.
    static func nsIDs(_ pid: Int32, task: Int32? = nil, field: String = "NSpid") -> [Int32] {
        let path = task.map { "/proc/\(pid)/task/\($0)/status" } ?? "/proc/\(pid)/status"
        guard let s = try? ProcFS.read(path) else { return [] }
        return ProcStatus.parse(s).ints(field).map { Int32(truncatingIfNeeded: $0) }
    }

    /// True when `root` is process 1 of a PID namespace below ours.
    static func isOwnInit(_ root: Int32) -> Bool {
        let ids = nsIDs(root), mine = nsIDs(getpid())
        return ids.count > mine.count && ids.last == 1
    }

    /// The index in NSpid of the application's own level: its root's.
    static func appLevel(root: Int32) -> Int { max(nsIDs(root).count - 1, 0) }

    /// Notes, for the processes and threads in PID namespaces the application made, their ids
    /// below the application's level, and where each process's next children go; refuses
    /// what restart could not make again. `images` hold ssi's PIDs (before translate).
    static func recordNested(_ images: inout [ProcessImage], root: Int32) throws {
        let level = appLevel(root: root)
        func link(_ pid: Int32, _ kind: String) -> String? { try? ProcFS.readLink("/proc/\(pid)/ns/\(kind)") }
        func below(_ ids: [Int32]) -> [Int32]? { ids.count > level + 1 ? Array(ids[(level + 1)...]) : nil }
        var nsOf = [Int32: String]()
        for img in images { nsOf[img.pid] = link(img.pid, "pid") }
        // This runs while the application is stopped: the ids are read (a /proc status per
        // thread) only when some process is in another PID namespace than the root.
        if images.contains(where: { nsOf[$0.pid] != nsOf[root] }) {
            for i in images.indices {
                let pid = images[i].pid
                images[i].nestedPIDs = below(nsIDs(pid))
                for t in images[i].threads.indices { images[i].threads[t].nestedTIDs = below(nsIDs(pid, task: images[i].threads[t].tid)) }
            }
        }
        // A namespace's holder: the process of the snapshot nearest its top (its init).
        func holder(of ns: String) -> Int32? {
            images.filter { nsOf[$0.pid] == ns }.min { ($0.nestedPIDs?.last ?? $0.pid) < ($1.nestedPIDs?.last ?? $1.pid) }?.pid
        }
        var forChildren = [Int32: String]()
        for i in images.indices where images[i].zombieStatus == nil {
            let pid = images[i].pid
            // pid_for_children is kept with a task's other namespaces (its nsproxy), which an
            // exited task no longer has: read it on a live thread (a leader may have exited
            // while its threads run), one whose UTS namespace still resolves.
            func taskLink(_ tid: Int32, _ kind: String) -> String? { try? ProcFS.readLink("/proc/\(pid)/task/\(tid)/ns/\(kind)") }
            guard let own = nsOf[pid], let live = images[i].threads.map(\.tid).first(where: { taskLink($0, "uts") != nil }) else { continue }
            guard let next = taskLink(live, "pid_for_children") else {
                // The link does not resolve while the namespace has no init yet
                // (pidns_for_children_get, kernel/pid_namespace.c): unshare(CLONE_NEWPID) and
                // no fork since.
                images[i].childPIDNamespace = ChildPIDNamespace(holder: nil)
                continue
            }
            guard next != own else { continue }
            forChildren[pid] = next
            images[i].childPIDNamespace = ChildPIDNamespace(holder: holder(of: next))
        }
        let byPID = Dictionary(images.map { ($0.pid, $0) }, uniquingKeysWith: { a, _ in a })
        for c in images where c.pid != root {
            guard let p = byPID[c.ppid], let mine = nsOf[c.pid], mine != nsOf[p.pid] else { continue }
            let depth = (c.nestedPIDs?.count ?? 0) - (p.nestedPIDs?.count ?? 0)
            guard depth == 1, forChildren[p.pid] == mine else {
                throw SSIError(.unsupported, "PID \(c.pid) is in PID namespace \(mine), neither its parent's (PID \(p.pid)) nor the one its parent's children go to, one level below; restart could not create it there; nothing was written and the application goes on",
                               hint: "to checkpoint it, let the parent make the namespace for its children (unshare(CLONE_NEWPID) then fork, as unshare --pid --fork does)")
            }
        }
    }

    /// Rewrites every id of the images (taken under our PIDs) into the namespace's ids, and
    /// marks the root. A PGID or SID of a process outside the namespace cannot be named
    /// inside it: it becomes 0 (ssi-init leads its own session, so none is).
    static func translate(_ images: inout [ProcessImage]) throws {
        guard let root = images.first?.pid else { return }
        // The ids at the application's level (a process in a namespace it made has more).
        let level = appLevel(root: root)
        func at(_ ids: [Int32]) -> Int32? { ids.count > level ? ids[level] : nil }
        var inner: [Int32: Int32] = [:]
        for img in images {
            guard let id = at(nsIDs(img.pid)) else {
                throw SSIError(.state, "PID \(img.pid): no NSpid in /proc/\(img.pid)/status; nothing was written", hint: "needs Linux 4.1 or later")
            }
            inner[img.pid] = id
        }
        for i in images.indices {
            let outer = images[i].pid
            images[i].pid = inner[outer]!
            images[i].ppid = inner[images[i].ppid] ?? 0
            // A group or session may outlive its leader (not in the images): NSpgid and NSsid
            // of /proc/PID/status name it in the namespace all the same.
            images[i].pgid = inner[images[i].pgid] ?? at(nsIDs(outer, field: "NSpgid")) ?? 0
            images[i].sid = inner[images[i].sid] ?? at(nsIDs(outer, field: "NSsid")) ?? 0
            if let h = images[i].childPIDNamespace?.holder { images[i].childPIDNamespace?.holder = inner[h] }
            for k in (images[i].namespaces?.mnt?.mounts ?? []).indices {
                if let by = images[i].namespaces?.mnt?.mounts[k].mountedBy { images[i].namespaces?.mnt?.mounts[k].mountedBy = inner[by] }
            }
            images[i].foregroundGroup = images[i].foregroundGroup.map { inner[$0] ?? $0 }
            for t in images[i].threads.indices {
                let tid = images[i].threads[t].tid
                guard let id = tid == outer ? inner[outer] : at(nsIDs(outer, task: tid)) else {
                    throw SSIError(.state, "thread \(tid) of PID \(outer) has no NSpid; nothing was written")
                }
                images[i].threads[t].tid = id
            }
        }
        // Unix sockets' peers (SO_PEERCRED), by the same numbers.
        SocketOwners.keepApplicationCreators(&images, inner: inner)
        if !images.isEmpty { images[0].pidNamespaceInit = true }
    }
}

extension PIDNamespace {
    /// The level of a restored application's own PID namespace in NSpid: one below ssi's.
    static let restoredLevel = nsIDs(getpid()).count

    /// A task's id in the restored application's own namespace, from its NSpid.
    static func appID(_ ids: [Int32]) -> Int32? { ids.count > restoredLevel ? ids[restoredLevel] : nil }

    /// set_tid for clone3 (clone(2)): the ids from the innermost namespace out to the
    /// application's: `nested` (outermost first) reversed, then the id at its level.
    static func setTIDs(_ id: Int32, nested: [Int32]?) -> [Int32] { (nested ?? []).reversed() + [id] }
}

extension ProcessRestorer {
    /// The index in NSpid (as ssi reads it) of the application's level: one below ssi's when
    /// the application has a namespace of its own, ssi's otherwise.
    var appLevelIndex: Int { ownNamespace ? PIDNamespace.restoredLevel : PIDNamespace.restoredLevel - 1 }

    /// Our id of this process's thread `inner` (its id inside the namespace).
    func taskID(_ inner: Int32) throws -> Int32 {
        guard ownNamespace else { return inner }
        for t in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            if let tid = Int32(t), PIDNamespace.appID(PIDNamespace.nsIDs(pid, task: tid)) == inner { return tid }
        }
        throw SSIError(.system, "thread \(inner) of PID \(image.pid) (PID \(pid) here) was not found after its creation")
    }

    /// Our id of this process's child `inner`, from the children lists of its threads
    /// (/proc/PID/task/TID/children, proc(5)).
    func childID(_ inner: Int32) throws -> Int32 {
        guard ownNamespace else { return inner }
        for t in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            let kids = (try? ProcFS.read("/proc/\(pid)/task/\(t)/children")) ?? ""
            for c in kids.split(separator: " ").compactMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            where PIDNamespace.appID(PIDNamespace.nsIDs(c)) == inner {
                return c
            }
        }
        throw SSIError(.system, "child \(inner) of PID \(image.pid) (PID \(pid) here) was not found after its creation")
    }
}

extension ProcessRestorer {
    /// True when `child` is the first process of a PID namespace its parent made: one level
    /// below the parent's, with id 1 there.
    static func startsPIDNamespace(_ child: ProcessImage, parent: ProcessImage) -> Bool {
        (child.nestedPIDs?.count ?? 0) == (parent.nestedPIDs?.count ?? 0) + 1 && child.nestedPIDs?.last == 1
    }

    /// True when `child` lives in the namespace its parent's children go to, and is not the
    /// first there: the parent must have joined it before forking the child.
    static func needsChildPIDNamespace(_ child: ProcessImage, parent: ProcessImage) -> Bool {
        (child.nestedPIDs?.count ?? 0) > (parent.nestedPIDs?.count ?? 0) && !startsPIDNamespace(child, parent: parent)
    }

    /// This process's next children go to the PID namespace of `holder` (our PID of a
    /// restored process living in it): setns(2) with CLONE_NEWPID changes pid_for_children
    /// only, never the caller's own namespace.
    func joinChildPIDNamespace(holder: Int32) throws {
        try joinNamespace(path: "/proc/\(holder)/ns/pid", type: 0x2000_0000, what: "the PID namespace of PID \(holder) (for the children of PID \(image.pid))")
    }

    /// Nobody lived yet in the namespace this process's next children go to: unshare(2)
    /// CLONE_NEWPID makes a new one for them, as the process had.
    func unshareChildPIDNamespace() throws {
        try inj.call("unshare(CLONE_NEWPID) in PID \(pid)", .unshare, 0x2000_0000)
    }
}
