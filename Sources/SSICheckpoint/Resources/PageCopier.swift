import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Copies runs of pages of a process into the image, in batches of up to 8 MiB, reading
/// the next batch while the previous one is written (PipelinedAppender).
final class PageCopier {
    private let memFD: OwnedFileDescriptor
    private let mem: RemoteMemory
    private let out: PipelinedAppender
    private let bufSize = PipelinedAppender.bufferSize
    private var batch = [(UInt64, Int)]()
    private var batchBytes = 0

    init(pid: Int32, pages: any ImageFileWriter) throws {
        mem = RemoteMemory(pid: ProcessID(pid))
        memFD = try OwnedFileDescriptor(opening: "/proc/\(pid)/mem", O_RDONLY)
        out = PipelinedAppender(pages)
    }

    /// Appends the runs' pages to the image; returns where each run went.
    func copy(_ runs: [(UInt64, UInt64)]) throws -> [PageRun] {
        var result = [PageRun]()
        for (addr, count) in runs {
            result.append(PageRun(address: addr, count: count, fileOffset: out.size + UInt64(batchBytes)))
            var a = addr
            var left = Int(count * SnapshotFormat.pageSize)
            while left > 0 {
                let take = min(left, bufSize - batchBytes)
                batch.append((a, take))
                batchBytes += take
                a += UInt64(take)
                left -= take
                if batchBytes == bufSize { try flush() }
            }
        }
        // Not flushed here: the batch goes on with the next area's runs, so that a process
        // of many small areas costs one read pass and one write, not a thread hop per area
        // (the process is stopped: its pages are the same when the batch is read).
        return result
    }

    /// Reads and writes what is still batched, then waits until every batch is in the file
    /// (before the file is finished).
    func finish() throws {
        try flush()
        try out.drain()
    }

    private func flush() throws {
        guard batchBytes > 0 else { return }
        // Between two batches: a place where the dump may stop (Interrupts.swift).
        try CheckpointEngine.stopIfInterrupted()
        let buf = try out.acquire()
        // Through /proc/PID/mem, not process_vm_readv: the latter pins pages (FOLL_PIN), and
        // since Linux 5.19 pinning an anonymous page shared copy-on-write unshares it
        // (mm/gup.c, gup_must_unshare), so a checkpoint would copy every page a parent shares
        // with its children.
        var off = 0
        do {
            for (a, l) in batch {
                try mem.forcedRead(into: UnsafeMutableRawBufferPointer(rebasing: buf[off..<(off + l)]), at: a, fd: memFD.rawValue)
                off += l
            }
        } catch {
            out.giveBack()
            throw error
        }
        out.submit(buf, count: batchBytes)
        batch.removeAll(keepingCapacity: true)
        batchBytes = 0
    }
}

/// Appends buffers to an image file on a second thread while the caller fills the next one,
/// so that reading a process (/proc/PID/mem) and writing the image (CRC-32C, then write(2)
/// into the file) overlap on two cores instead of taking turns.
///
/// @unchecked Sendable: `pages` and `failure` are used only on `queue` (serial), and by the
/// caller once `drain()` has waited for it; each buffer is written by the caller between
/// `acquire()` and `submit()`, then read only by the queue until it gives the slot back.
final class PipelinedAppender: @unchecked Sendable {
    static let bufferSize = 8 << 20
    private let pages: any ImageFileWriter
    private let queue = DispatchQueue(label: "ssi.pages-writer")
    private let slots = DispatchSemaphore(value: 2)
    private let buffers: [UnsafeMutableRawBufferPointer]
    private var next = 0
    private var failure: Error? = nil
    /// Bytes appended or queued: the offset in the file of the next byte submitted.
    private(set) var size: UInt64

    init(_ pages: any ImageFileWriter) {
        self.pages = pages
        size = pages.size
        buffers = (0..<2).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: PipelinedAppender.bufferSize, alignment: 4096) }
    }

    // No wait for the queue here: every queued write holds the appender, so none is left
    // when it goes, and the last one may be what lets it go, on the queue itself, where a
    // sync would trap (a checkpoint that failed during the memory dump crashed ssi so).
    deinit {
        for b in buffers { b.deallocate() }
    }

    /// The next free buffer, once its previous write is done (writes complete in order, and
    /// the two buffers are used in turn).
    func acquire() throws -> UnsafeMutableRawBufferPointer {
        slots.wait()
        let b = buffers[next]
        next ^= 1
        return b
    }

    /// Returns an acquired buffer unused (its batch failed).
    func giveBack() {
        next ^= 1
        slots.signal()
    }

    func submit(_ buffer: UnsafeMutableRawBufferPointer, count: Int) {
        size += UInt64(count)
        let slot = buffers.firstIndex { $0.baseAddress == buffer.baseAddress }!
        queue.async {
            if self.failure == nil {
                let bytes = UnsafeRawBufferPointer(rebasing: self.buffers[slot][0..<count])
                do { try self.pages.append(bytes) } catch { self.failure = error }
            }
            self.slots.signal()
        }
    }

    /// Waits for every queued write; throws the first that failed.
    func drain() throws {
        queue.sync {}
        if let failure { throw failure }
    }
}
