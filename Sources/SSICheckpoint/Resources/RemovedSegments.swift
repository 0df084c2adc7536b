import Foundation
import SSIImage
import SSIIPC
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// SysV shared memory segments removed (IPC_RMID) while still attached, the usual way to get
// a segment that goes away with its last user (X11's MIT-SHM, many servers' scratch
// memory). In ssi's own IPC namespace such a segment is not the application's to keep
// (`ssi ipc checkpoint` saves the others), but it dies when the checkpoint's kill detaches
// its last process, and the restart could attach nothing. So the process checkpoint saves
// its content with the snapshot (SSIIPC's file format); restart makes it again with its id
// before the processes attach it, and removes it again once every process has (a segment
// made again while its id is taken fails the restart, naming it). In an IPC namespace of the
// application's own, segments come with the namespace.

enum RemovedSegments {
    /// Saves the removed segments `image` has attached, each once (`done`: those saved
    /// already), and names its file in the area.
    static func save(_ image: inout ProcessImage, writer: any ImageWriter, done: inout Set<Int32>) throws {
        guard image.namespaces?.ipc == nil else { return }
        for i in image.vmas.indices where image.vmas[i].kind == .sysvShm {
            guard let id = image.vmas[i].sysvShmID, SysVIPC.segmentMarkedForRemoval(id) else { continue }
            let name = "shm-removed-\(id).img"
            image.vmas[i].removedSegmentFile = name
            guard done.insert(id).inserted else { continue }
            try AppNamespaces.withScratchDirectory("ssi-shm-\(id)") { dir in
                let path = "\(dir)/segment"
                do { try SysVIPC.checkpoint(kind: .sharedMemory, id: id, to: path) } catch {
                    throw SSIError(.system, "PID \(image.pid): saving the shared memory segment id \(id) it has attached at 0x\(String(image.vmas[i].start, radix: 16)) (removed with IPC_RMID while attached) failed: \(error); nothing was written and the application goes on",
                                   hint: "a segment whose pages keep changing is saved once its users are frozen: checkpoint again (ipcs -m -i \(id) shows it)")
                }
                try writer.addFile(name, Array(try Data(contentsOf: URL(fileURLWithPath: path))), sync: false)
            }
        }
    }
}

/// The removed segments of a restart: made again before the processes attach them, removed
/// again once they have.
final class RemovedSegmentRegistry {
    private var made: [Int32] = []

    func create(from images: [ProcessImage], source: any ImageReader) throws {
        var done = Set<String>()
        for image in images {
            for v in image.vmas where v.kind == .sysvShm {
                guard let file = v.removedSegmentFile, done.insert(file).inserted else { continue }
                let info = try AppNamespaces.withScratchDirectory("ssi-shm-restore") { dir -> IPCRestoreResult in
                    let path = "\(dir)/segment"
                    try Data(try source.open(file).readAll()).write(to: URL(fileURLWithPath: path))
                    do { return try SysVIPC.restore(from: path, kind: .sharedMemory) } catch {
                        throw SSIError(.busy, "PID \(image.pid) had the shared memory segment id \(v.sysvShmID ?? -1) attached at 0x\(String(v.start, radix: 16)) (removed with IPC_RMID while attached), and it cannot be made again: \(error); nothing was restarted",
                                       hint: "its id is taken by another segment in this IPC namespace (ipcs -m): remove that one, then restart again")
                    }
                }
                made.append(info.info.id)
            }
        }
    }

    /// Marks them removed again, as they were: they go when their last process detaches.
    func removeAll() {
        for id in made { SysVIPC.removeSegment(id) }
        made = []
    }
}
