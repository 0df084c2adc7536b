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

enum PIDNamespace {
    /// NSpid of /proc/PID/status (proc(5), Linux 4.1): the task's id in each PID namespace
    /// it belongs to, outermost first. `task` reads a thread's entry.
    static func nsIDs(_ pid: Int32, task: Int32? = nil, field: String = "NSpid") -> [Int32] {
        let path = task.map { "/proc/\(pid)/task/\($0)/status" } ?? "/proc/\(pid)/status"
        guard let s = try? ProcFS.read(path) else { return [] }
        for line in s.split(separator: "\n") where line.hasPrefix("\(field):") {
            return line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int32($0) }
        }
        return []
    }

    /// True when `root` is process 1 of a PID namespace below ours.
    static func isOwnInit(_ root: Int32) -> Bool {
        let ids = nsIDs(root), mine = nsIDs(getpid())
        return ids.count > mine.count && ids.last == 1
    }

    /// Rewrites every id of the images (taken under our PIDs) into the namespace's ids, and
    /// marks the root. A PGID or SID of a process outside the namespace cannot be named
    /// inside it: it becomes 0 (ssi-init leads its own session, so none is).
    static func translate(_ images: inout [ProcessImage]) throws {
        var inner: [Int32: Int32] = [:]
        for img in images {
            guard let id = nsIDs(img.pid).last else {
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
            images[i].pgid = inner[images[i].pgid] ?? nsIDs(outer, field: "NSpgid").last ?? 0
            images[i].sid = inner[images[i].sid] ?? nsIDs(outer, field: "NSsid").last ?? 0
            images[i].foregroundGroup = images[i].foregroundGroup.map { inner[$0] ?? $0 }
            for t in images[i].threads.indices {
                let tid = images[i].threads[t].tid
                guard let id = tid == outer ? inner[outer] : nsIDs(outer, task: tid).last else {
                    throw SSIError(.state, "thread \(tid) of PID \(outer) has no NSpid; nothing was written")
                }
                images[i].threads[t].tid = id
            }
        }
        if !images.isEmpty { images[0].pidNamespaceInit = true }
    }
}

extension ProcessRestorer {
    /// Our id of this process's thread `inner` (its id inside the namespace).
    func taskID(_ inner: Int32) throws -> Int32 {
        guard ownNamespace else { return inner }
        for t in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            if let tid = Int32(t), PIDNamespace.nsIDs(pid, task: tid).last == inner { return tid }
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
            where PIDNamespace.nsIDs(c).last == inner {
                return c
            }
        }
        throw SSIError(.system, "child \(inner) of PID \(image.pid) (PID \(pid) here) was not found after its creation")
    }
}
