import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// A restart that takes over from a copy of the application that still exists, frozen: the
/// target of a migration, while the source copy waits to be killed or to go on
/// (RestartOptions.takeOver). On one machine, or on a file system the nodes share, that copy
/// still holds the names the restart needs:
/// - a unix socket's path: its socket file is renamed aside (rename(2) keeps the inode, so
///   the source copy's socket stays reachable by the backup name) and the new socket is
///   bound at the path itself, so that its address is what the application bound; a failed
///   restart puts the source's file back, a successful one removes it once the application
///   runs (`commit`);
/// - a FIFO's unread bytes: when the FIFO already holds exactly the bytes the snapshot saved,
///   they are the source copy's own (the same kernel object): nothing is added.
/// Without takeOver, a name in use is refused, as before: the program using it is another.
final class NameTakeover {
    let enabled: Bool
    private var moved: [(path: String, backup: String)] = []

    init(enabled: Bool) { self.enabled = enabled }

    /// Renames the socket file at `path` aside, for a new socket to be bound there.
    func moveAside(_ path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let times = FileTimes.get(dir)
        defer { FileTimes.set(dir, times) }
        let backup = "\(path).ssi-source-\(getpid())-\(moved.count)"
        if rename(path, backup) != 0 {
            throw SSIError.sys("move the source copy's socket \(path) aside", errno: errno, hint: "check the directory's permissions")
        }
        moved.append((path, backup))
    }

    /// The restart failed: the new sockets' files go, the source copy's come back.
    func undo() {
        for m in moved.reversed() {
            unlink(m.path)
            rename(m.backup, m.path)
        }
        moved = []
    }

    /// The restart succeeded: the source copy's files are no longer reachable.
    func commit() {
        for m in moved {
            // The directory's times are the ones the restart gave back (the application's):
            // removing the backup must not change them.
            let dir = (m.backup as NSString).deletingLastPathComponent
            let times = FileTimes.get(dir)
            unlink(m.backup)
            FileTimes.set(dir, times)
        }
        moved = []
    }
}
