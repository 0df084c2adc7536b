import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Processes (not threads) created with CLONE_FILES or CLONE_FS share their fd table, or
/// their cwd, root and umask, with their parent. kcmp(2) KCMP_FILES / KCMP_FS tells whether
/// two processes share them. Restart forks such a child with the same flag from its restored
/// parent, which has already rebuilt that state, and the child leaves it alone.
///
/// Only sharing along parent links can be rebuilt that way; other sharing (with a process
/// whose parent left, with a process outside the application) fails the checkpoint, as does
/// memory shared between processes (CLONE_VM without CLONE_THREAD, a vfork child that has
/// not exec'd yet).
struct ProcessSharing {
    var filesWithParent: Set<Int32> = []
    var fsWithParent: Set<Int32> = []

    private static func kcmp(_ a: Int32, _ b: Int32, _ type: Kcmp.Kind) -> Int { Kcmp.compare(ProcessID(a), ProcessID(b), type) }

    /// `pids`: the live processes of the application, every parent before its children.
    static func detect(root: Int32, pids: [Int32], parent: [Int32: Int32]) throws -> ProcessSharing {
        var out = ProcessSharing()
        let what: [(Kcmp.Kind, String)] = [(.files, "its fd table (CLONE_FILES)"), (.fs, "its cwd, root and umask (CLONE_FS)"),
                                     (.vm, "its memory (CLONE_VM without CLONE_THREAD, or vfork before exec)")]
        let live = Set(pids)
        for (type, thing) in what {
            // The root's parent is outside the application and is not restored.
            if let outside = (try? ProcStat.read(pid: root))?.ppid, outside > 0, kcmp(root, outside, type) == 0 {
                throw SSIError(.unsupported, "PID \(root) shares \(thing) with its parent PID \(outside), which is outside the application; nothing was written",
                               hint: "checkpoint the parent's application instead")
            }
            // Groups of processes sharing the object: sorted by kcmp's order, sharers are
            // neighbours (n log n calls, not n²). Each group is led by its first member in
            // tree order.
            let order = Dictionary(uniqueKeysWithValues: pids.enumerated().map { ($1, $0) })
            var groups = [(lead: Int32, members: Set<Int32>)]()
            var previous: Int32? = nil
            for pid in pids.sorted(by: { kcmp($0, $1, type) == 1 }) {
                if let p = previous, kcmp(p, pid, type) == 0 {
                    groups[groups.count - 1].members.insert(pid)
                    if order[pid]! < order[groups[groups.count - 1].lead]! { groups[groups.count - 1].lead = pid }
                } else {
                    groups.append((pid, [pid]))
                }
                previous = pid
            }
            for g in groups where g.members.count > 1 {
                for m in g.members where m != g.lead {
                    if type == .vm {
                        throw SSIError(.unsupported, "PID \(m) shares \(thing) with PID \(g.lead): processes sharing memory are not supported; nothing was written",
                                       hint: "checkpoint once the vfork child has called exec")
                    }
                    guard let p = parent[m], live.contains(p), g.members.contains(p) else {
                        throw SSIError(.unsupported, "PID \(m) shares \(thing) with PID \(g.lead) but not with its own parent; only sharing between a parent and its children can be restored; nothing was written")
                    }
                    if type == .files { out.filesWithParent.insert(m) } else { out.fsWithParent.insert(m) }
                }
            }
        }
        return out
    }

    func apply(to image: inout ProcessImage) {
        image.sharesFilesWithParent = filesWithParent.contains(image.pid) ? true : nil
        image.sharesFSWithParent = fsWithParent.contains(image.pid) ? true : nil
    }
}

extension ProcessRestorer {
    /// clone3 flags for forking `child` (sched.h): CLONE_FS 0x200, CLONE_FILES 0x400.
    static func sharingFlags(_ child: ProcessImage) -> UInt64 {
        (child.sharesFilesWithParent == true ? 0x400 : 0) | (child.sharesFSWithParent == true ? 0x200 : 0)
    }
}

extension ProcessDumper {
    /// An epoll instance shared by several fds (after dup() or fork()) cannot be rebuilt yet:
    /// shared descriptions are opened once in the root before it forks, where the fds the
    /// instance watches do not exist. Without this check such a checkpoint succeeded and its
    /// restart failed, after `--kill` had ended the application. With `-i` the fds are
    /// restored closed.
    static func refuseSharedEpoll(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool) throws {
        for pid in tables.keys.sorted() {
            for f in tables[pid]! where f.kind == .epoll && f.sharedID != nil {
                if ignoreUnsupported { tables[pid]!.removeAll { $0.fd == f.fd }; continue }
                let holders = tables.flatMap { p, fds in fds.filter { $0.sharedID == f.sharedID }.map { "PID \(p) fd \($0.fd)" } }.sorted()
                throw SSIError(.unsupported, "PID \(pid) fd \(f.fd): an epoll instance shared by several fds (\(holders.joined(separator: ", ")), after dup or fork) is not supported yet; nothing was written and the application goes on",
                               hint: "use `ssi checkpoint -i` to restore it as a closed fd")
            }
        }
    }
}
