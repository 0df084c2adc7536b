import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// The inotify instances and FIFOs of an application being restarted, prepared in ssi before
/// any process is rebuilt and held until they all have their fds.
///
/// - An inotify instance is built here (makeInotifyInstance) and the process takes it with
///   pidfd_getfd(2), run in the process: the same open file description, not a copy. Each
///   fd (or each description shared after dup/fork) gets its own instance.
/// - A FIFO is created if needed, refilled and held open here (openFifo); the processes
///   reopen it by its path, which cannot block while ssi holds both ends.
final class FSObjects {
    private var inotify: [String: Int32] = [:]
    private var fifos: [String: Int32] = [:]

    /// Checks before anything is created (ProcessRestorer.preflight).
    static func preflight(_ image: ProcessImage) throws {
        for f in image.fds {
            switch f.kind {
            case .fifo:
                try preflightFifo(f, pid: image.pid)
            case .inotify:
                for w in f.inotifyWatches ?? [] where !w.path.hasSuffix(" (deleted)") {
                    var st = stat()
                    if lstat(w.path, &st) != 0 {
                        throw SSIError(.notFound, "PID \(image.pid) fd \(f.fd): inotify watch \(w.wd) was on \(w.path), which no longer exists; nothing was changed",
                                       hint: "recreate \(w.path), then restart again")
                    }
                }
            default:
                break
            }
        }
    }

    /// Which instance an inotify fd gets: one per shared description, else one per fd.
    static func key(_ f: FileDescriptorImage, pid: Int32) -> String { f.sharedID ?? "\(pid):\(f.fd)" }

    func create(from images: [ProcessImage], deletedFiles: DeletedFileRegistry? = nil, takeover: NameTakeover? = nil) throws {
        for image in images {
            for f in image.fds {
                switch f.kind {
                case .inotify:
                    let k = FSObjects.key(f, pid: image.pid)
                    if inotify[k] == nil { inotify[k] = try makeInotifyInstance(f, pid: image.pid, deletedFiles: deletedFiles) }
                case .fifo:
                    guard let id = f.fifoID, fifos[id] == nil else { continue }
                    fifos[id] = try openFifo(f, pid: image.pid, takeover: takeover)
                default:
                    break
                }
            }
        }
    }

    /// Gives process `pid` (driven by `inj`) the inotify instance of its fd `f`; returns the
    /// fd number it got, without FD_CLOEXEC (the caller sets the flags of the final fd).
    func receiveInotify(_ f: FileDescriptorImage, pid: Int32, inj: Injector, ssiPidFD: UInt64?) throws -> UInt64 {
        guard let mine = inotify[FSObjects.key(f, pid: pid)] else {
            throw SSIError(.corrupt, "PID \(pid) fd \(f.fd): no inotify instance was prepared for it")
        }
        return try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "inotify fd \(f.fd)")
    }

    /// Where a process opens the FIFO `id` that has no name any more.
    func fifoPath(_ id: String) -> String? { fifos[id].map { "/proc/\(getpid())/fd/\($0)" } }

    func closeAll() {
        for (_, fd) in inotify { close(fd) }
        for (_, fd) in fifos { close(fd) }
        inotify = [:]
        fifos = [:]
    }
}
