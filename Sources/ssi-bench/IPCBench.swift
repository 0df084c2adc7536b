import Foundation
import SSIIPC
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench ipc [--dir DIR] [--runs N] [--messages N] [--shm-mib N] [--touched-percent P] [--sems N]`:
/// checkpoint and restore times of a message queue of 10,000 messages, a 1 GiB shared
/// memory segment with 1% of its pages touched (and bytes written / touched bytes, which
/// must be <= 1.02), and a 1,000-semaphore array. Median of --runs (default 5). Runs in a
/// private IPC namespace of its own (unshare(CLONE_NEWIPC)), so it needs root and leaves
/// the host's IPC objects alone.
public func runIPCBenchmark(args: [String]) throws {
    let o = try IPCBenchOptions(args)
    try IPCObjects.unshareNamespace()
    try FileManager.default.createDirectory(atPath: o.dir, withIntermediateDirectories: true)
    let file = "\(o.dir)/object-\(getpid()).dat"
    defer { unlink(file) }
    var bench = IPCBench(file: file, runs: o.runs)
    try bench.messageQueue(o)
    try bench.semaphores(o)
    try bench.sharedMemory(o)
}

struct IPCBenchOptions {
    static let usage = "ipc [--dir DIR] [--runs 5] [--messages 10000] [--message-bytes 100] [--shm-mib 1024] [--touched-percent 1] [--sems 1000]"
    var dir: String, runs: Int, messages: Int, messageBytes: Int
    var shmMiB: Int, touchedPercent: Double, sems: Int

    init(_ args: [String]) throws {
        var o = BenchOptions(args, usage: Self.usage)
        dir = try o.text("--dir") ?? "/dev/shm/ssi-bench-ipc"
        runs = try o.int("--runs", default: 5, in: 1...10_000)
        messages = try o.int("--messages", default: 10_000, in: 1...1_000_000)
        messageBytes = try o.int("--message-bytes", default: 100, in: 1...65_536)
        shmMiB = try o.int("--shm-mib", default: 1024, in: 1...1 << 20)
        touchedPercent = try o.double("--touched-percent", default: 1, above: 0)
        sems = try o.int("--sems", default: 1000, in: 1...32_000)
        try o.finish()
    }
}

extension IPCBench {
    /// Message queue: the namespace is ours, so its msgmnb can be raised for the queue's size.
    mutating func messageQueue(_ o: IPCBenchOptions) throws {
        let qbytes = max(o.messages * o.messageBytes, o.messages) * 2
        try "\(qbytes)\n".write(toFile: "/proc/sys/kernel/msgmnb", atomically: false, encoding: .utf8)
        let q = try IPCObjects.create(.messageQueue, key: 0x5151)
        var text = [UInt8](repeating: 0, count: o.messageBytes)
        for m in 0..<o.messages {
            for k in text.indices { text[k] = UInt8(m & 0xff) }
            try text.withUnsafeBytes { try IPCObjects.send(queue: q, type: m % 17 + 1, text: $0) }
        }
        try measure("message queue, \(o.messages) messages of \(o.messageBytes) bytes", kind: .messageQueue, id: q,
                    contentBytes: UInt64(o.messages * o.messageBytes))
        let count = try IPCObjects.messageCount(queue: q)
        guard count == UInt64(o.messages) else { throw SSIError(.state, "restored queue has \(count) messages, not \(o.messages)") }
    }

    mutating func semaphores(_ o: IPCBenchOptions) throws {
        let s = try IPCObjects.create(.semaphoreArray, key: 0x5353, count: UInt64(o.sems))
        let values = (0..<o.sems).map { UInt16($0 % 32768) }
        try IPCObjects.setValues(semaphores: s, values)
        try measure("semaphore array, \(o.sems) semaphores", kind: .semaphoreArray, id: s, contentBytes: UInt64(o.sems * 2))
        guard try IPCObjects.values(semaphores: s, count: o.sems) == values else { throw SSIError(.state, "restored semaphore values differ") }
    }

    /// Shared memory: touch a spread of pages with distinct content.
    mutating func sharedMemory(_ o: IPCBenchOptions) throws {
        let size = UInt64(o.shmMiB) << 20
        let pages = Int(size / 4096)
        let touched = max(1, Int(Double(pages) * o.touchedPercent / 100))
        let m = try IPCObjects.create(.sharedMemory, key: 0x6d6d, count: size)
        var addr = try IPCObjects.attach(segment: m, readOnly: false)
        var generator = SystemRandomNumberGenerator()
        var chosen = Set<Int>()
        while chosen.count < touched { chosen.insert(Int.random(in: 0..<pages, using: &generator)) }
        let order = chosen.sorted()
        for p in order {
            let page = addr + p * 4096
            for w in 0..<512 { page.storeBytes(of: UInt64(p) &* 0x9e3779b97f4a7c15 &+ UInt64(w), toByteOffset: w * 8, as: UInt64.self) }
        }
        func crc(_ base: UnsafeMutableRawPointer) -> UInt32 {
            order.reduce(UInt32(0)) { CRC32C.update($0, UnsafeRawBufferPointer(start: base + $1 * 4096, count: 4096)) }
        }
        let crcBefore = crc(addr)
        IPCObjects.detach(addr)
        let touchedBytes = UInt64(touched * 4096)
        let fileBytes = try measure("shared memory, \(o.shmMiB) MiB, \(touched) pages touched (\(String(format: "%.2f", o.touchedPercent))%)",
                                    kind: .sharedMemory, id: m, contentBytes: touchedBytes)
        addr = try IPCObjects.attach(segment: m, readOnly: true)
        let crcAfter = crc(addr)
        IPCObjects.detach(addr)
        let ratio = Double(fileBytes) / Double(touchedBytes)
        print(String(format: "shared memory: bytes written / touched bytes = %d / %d = %.4f (limit 1.02): %@; content CRC-32C after restore %@",
                     Int(fileBytes), Int(touchedBytes), ratio, ratio <= 1.02 ? "ok" : "TOO HIGH", crcBefore == crcAfter ? "matches" : "DIFFERS"))
        if ratio > 1.02 || crcBefore != crcAfter { throw SSIError(.state, "shared memory benchmark check failed") }
    }
}

struct IPCBench {
    let file: String
    let runs: Int

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

    /// Checkpoints, removes and restores the object `runs` times; prints the medians and
    /// returns the file size.
    @discardableResult
    mutating func measure(_ what: String, kind: IPCKind, id: Int32, contentBytes: UInt64) throws -> UInt64 {
        var ck: [Double] = [], rs: [Double] = []
        var size: UInt64 = 0
        for _ in 0..<max(runs, 1) {
            unlink(file)
            var t = IPCBench.now()
            let r = try SysVIPC.checkpoint(kind: kind, id: id, to: file)
            ck.append(IPCBench.now() - t)
            size = r.fileBytes
            try IPCObjects.remove(kind, id: id)
            t = IPCBench.now()
            try SysVIPC.restore(from: file, kind: kind)
            rs.append(IPCBench.now() - t)
        }
        print(String(format: "%@: checkpoint %.2f ms, restore %.2f ms (median of %d), file %d bytes for %d bytes of content",
                     what, IPCBench.median(ck) * 1000, IPCBench.median(rs) * 1000, ck.count, Int(size), Int(contentBytes)))
        fflush(nil)
        return size
    }
}
