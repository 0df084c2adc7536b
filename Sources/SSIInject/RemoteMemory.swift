import CSSILinux
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Reads another process's memory. process_vm_readv(2) is the fast path; /proc/PID/mem
/// (which uses FOLL_FORCE) also reads pages the process itself cannot read (PROT_NONE).
public struct RemoteMemory {
    public let pid: ProcessID

    public init(pid: ProcessID) { self.pid = pid }

    /// Fills `buffer` from the remote ranges, in order. Returns bytes read.
    public func read(into buffer: UnsafeMutableRawBufferPointer, from ranges: [(UInt64, Int)]) throws -> Int {
        var local = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var done = 0
        var idx = 0
        while idx < ranges.count {
            // IOV_MAX is 1024 per call.
            let batch = ranges[idx..<min(ranges.count, idx + 1024)]
            var remote = batch.map { iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt($0.0)), iov_len: $0.1) }
            let want = batch.reduce(0) { $0 + $1.1 }
            local.iov_base = buffer.baseAddress! + done
            local.iov_len = want
            let n = cssi_process_vm_readv(pid.rawValue, &local, 1, &remote, UInt(remote.count))
            if n < 0 { throw SSIError.sys("process_vm_readv from PID \(pid)", errno: Int32(-n)) }
            if n != want { throw SSIError(.system, "short read of PID \(pid) memory (\(n) of \(want) bytes)") }
            done += want
            idx += batch.count
        }
        return done
    }

    public func write(_ bytes: UnsafeRawBufferPointer, to address: UInt64) throws {
        var local = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        var remote = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: bytes.count)
        let n = cssi_process_vm_writev(pid.rawValue, &local, 1, &remote, 1)
        if n < 0 { throw SSIError.sys("process_vm_writev to PID \(pid) at 0x\(String(address, radix: 16))", errno: Int32(-n)) }
        if n != bytes.count { throw SSIError(.system, "short write to PID \(pid) memory at 0x\(String(address, radix: 16)) (\(n) of \(bytes.count) bytes)") }
    }

    public func write(_ bytes: [UInt8], to address: UInt64) throws {
        try bytes.withUnsafeBytes { (b) throws in try write(b, to: address) }
    }

    /// Writes the bytes of a value (a word, a packed structure) at `address`.
    public func write<T>(words: [T], to address: UInt64) throws {
        try words.withUnsafeBytes { (b) throws in try write(b, to: address) }
    }

    public func readBytes(at address: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        _ = try out.withUnsafeMutableBytes { (b) throws in try read(into: b, from: [(address, count)]) }
        return out
    }

    /// Reads `count` values of a trivial type at `address` (process_vm_readv).
    public func read<T: FixedWidthInteger>(_ type: T.Type, count: Int = 1, at address: UInt64) throws -> [T] {
        try readBytes(at: address, count: count * MemoryLayout<T>.size).withUnsafeBytes { Array($0.bindMemory(to: T.self)) }
    }

    /// /proc/PID/mem read, for ranges process_vm_readv refuses.
    public func forcedRead(into buffer: UnsafeMutableRawBufferPointer, at address: UInt64, fd given: Int32? = nil) throws {
        let path = "/proc/\(pid)/mem"
        let fd = try given ?? Int32(checkLibc("open \(path)") { Int(open(path, O_RDONLY | O_CLOEXEC)) })
        defer { if given == nil { close(fd) } }
        var done = 0
        while done < buffer.count {
            let n = try checkLibc("read \(path) at 0x\(String(address, radix: 16))") {
                pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(Int64(bitPattern: address + UInt64(done))))
            }
            if n == 0 { throw SSIError(.system, "short read of \(path)") }
            done += n
        }
    }
}
