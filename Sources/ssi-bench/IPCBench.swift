import CSSILinux
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
    var dir = "/dev/shm/ssi-bench-ipc", runs = 5, messages = 10_000, messageBytes = 100
    var shmMiB = 1024, touchedPercent = 1.0, sems = 1000
    var i = 0
    while i < args.count {
        let v = i + 1 < args.count ? args[i + 1] : ""
        switch args[i] {
        case "--dir": dir = v
        case "--runs": runs = Int(v) ?? runs
        case "--messages": messages = Int(v) ?? messages
        case "--message-bytes": messageBytes = Int(v) ?? messageBytes
        case "--shm-mib": shmMiB = Int(v) ?? shmMiB
        case "--touched-percent": touchedPercent = Double(v) ?? touchedPercent
        case "--sems": sems = Int(v) ?? sems
        default: throw SSIError(.invalidArgument, "unknown option \(args[i])", hint: "options: --dir --runs --messages --message-bytes --shm-mib --touched-percent --sems")
        }
        i += 2
    }
    let r = cssi_ipc_unshare_namespace()
    if r < 0 { throw SSIError.sys("ssi-bench ipc needs its own IPC namespace (unshare CLONE_NEWIPC)", errno: -r, hint: "run it as root") }
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let file = "\(dir)/object-\(getpid()).dat"
    defer { unlink(file) }
    var bench = IPCBench(file: file, runs: runs)

    // Message queue: the namespace is ours, so its msgmnb can be raised for the queue's size.
    let qbytes = max(messages * messageBytes, messages) * 2
    try "\(qbytes)\n".write(toFile: "/proc/sys/kernel/msgmnb", atomically: false, encoding: .utf8)
    let q = cssi_ipc_msgget(0x5151, Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600))
    if q < 0 { throw SSIError.sys("msgget", errno: -q) }
    let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 + messageBytes, alignment: 8)
    defer { buf.deallocate() }
    for m in 0..<messages {
        buf.storeBytes(of: m % 17 + 1, as: Int.self)
        memset(buf + 8, Int32(m & 0xff), messageBytes)
        let s = cssi_ipc_msgsnd(q, buf, messageBytes)
        if s < 0 { throw SSIError.sys("msgsnd \(m)", errno: -s) }
    }
    try bench.measure("message queue, \(messages) messages of \(messageBytes) bytes", kind: .messageQueue, id: q,
                      contentBytes: UInt64(messages * messageBytes))
    var st = cssi_ipc_msq_stat()
    _ = cssi_ipc_msq_stat(q, &st)
    guard st.qnum == UInt64(messages) else { throw SSIError(.state, "restored queue has \(st.qnum) messages, not \(messages)") }

    // Semaphore array.
    let s = cssi_ipc_semget(0x5353, Int32(sems), Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600))
    if s < 0 { throw SSIError.sys("semget", errno: -s) }
    let values = (0..<sems).map { UInt16($0 % 32768) }
    _ = values.withUnsafeBufferPointer { cssi_ipc_sem_setall(s, $0.baseAddress!) }
    try bench.measure("semaphore array, \(sems) semaphores", kind: .semaphoreArray, id: s, contentBytes: UInt64(sems * 2))
    var back = [UInt16](repeating: 0, count: sems)
    _ = back.withUnsafeMutableBufferPointer { cssi_ipc_sem_getall(s, $0.baseAddress!) }
    guard back == values else { throw SSIError(.state, "restored semaphore values differ") }

    // Shared memory: touch a spread of pages with distinct content.
    let size = UInt64(shmMiB) << 20
    let pages = Int(size / 4096)
    let touched = max(1, Int(Double(pages) * touchedPercent / 100))
    let m = cssi_ipc_shmget(0x6d6d, size, Int32(CSSI_IPC_CREAT | CSSI_IPC_EXCL | 0o600))
    if m < 0 { throw SSIError.sys("shmget \(size) bytes", errno: -m) }
    var addr: UnsafeMutableRawPointer? = nil
    var a = cssi_ipc_shmat(m, 0, &addr)
    if a < 0 { throw SSIError.sys("shmat", errno: -a) }
    var generator = SystemRandomNumberGenerator()
    var chosen = Set<Int>()
    while chosen.count < touched { chosen.insert(Int.random(in: 0..<pages, using: &generator)) }
    let order = chosen.sorted()
    for p in order {
        let page = addr! + p * 4096
        for w in 0..<512 { page.storeBytes(of: UInt64(p) &* 0x9e3779b97f4a7c15 &+ UInt64(w), toByteOffset: w * 8, as: UInt64.self) }
    }
    let crcBefore = order.reduce(UInt32(0)) { cssi_crc32c($0, addr! + $1 * 4096, 4096) }
    _ = cssi_ipc_shmdt(addr!)
    let touchedBytes = UInt64(touched * 4096)
    let fileBytes = try bench.measure("shared memory, \(shmMiB) MiB, \(touched) pages touched (\(String(format: "%.2f", touchedPercent))%)",
                                      kind: .sharedMemory, id: m, contentBytes: touchedBytes)
    a = cssi_ipc_shmat(m, Int32(CSSI_IPC_SHM_RDONLY), &addr)
    if a < 0 { throw SSIError.sys("shmat", errno: -a) }
    let crcAfter = order.reduce(UInt32(0)) { cssi_crc32c($0, addr! + $1 * 4096, 4096) }
    _ = cssi_ipc_shmdt(addr!)
    let ratio = Double(fileBytes) / Double(touchedBytes)
    print(String(format: "shared memory: bytes written / touched bytes = %d / %d = %.4f (limit 1.02): %@; content CRC-32C after restore %@",
                 Int(fileBytes), Int(touchedBytes), ratio, ratio <= 1.02 ? "ok" : "TOO HIGH", crcBefore == crcAfter ? "matches" : "DIFFERS"))
    if ratio > 1.02 || crcBefore != crcAfter { throw SSIError(.state, "shared memory benchmark check failed") }
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
            let rm: Int32 = kind == .messageQueue ? cssi_ipc_msq_rmid(id) : kind == .semaphoreArray ? cssi_ipc_sem_rmid(id) : cssi_ipc_shm_rmid(id)
            if rm < 0 { throw SSIError.sys("IPC_RMID \(id)", errno: -rm) }
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
