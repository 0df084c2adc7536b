import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// A userfaultfd of a stopped tracee's mm, held by ssi, to fill freshly mapped anonymous
/// memory of that process with UFFDIO_COPY (restore): the kernel allocates each page and
/// copies our bytes into it, without zeroing it first and without a page fault per page,
/// which made read(2) into fresh memory about twice as slow (docs/speed.md).
///
/// userfaultfd(2) acts on the mm of its caller, so it is created by an injected call and
/// taken with pidfd_getfd(2); no fault is ever delivered to it: an area is registered only
/// while we fill it, before the process runs, and unregistered right after.
public final class RemoteUserfaultfd {
    public let pid: ProcessID
    public private(set) var fd: Int32

    /// Creates it through `inj` (the process is stopped under our ptrace). Nil when the
    /// kernel refuses (no userfaultfd): the caller fills memory another way.
    public static func create(_ inj: Injector) throws -> RemoteUserfaultfd? {
        let r = try inj.raw(.userfaultfd, UInt64(O_CLOEXEC | O_NONBLOCK))
        guard r >= 0 else { return nil }
        defer { _ = try? inj.raw(.close, UInt64(r)) }
        let mine = try FDTransfer.copy(fd: Int32(r), from: inj.pid)
        guard Userfaultfd.enablePlain(mine) else { close(mine); return nil }
        return RemoteUserfaultfd(pid: inj.pid, fd: mine)
    }

    private init(pid: ProcessID, fd: Int32) { self.pid = pid; self.fd = fd }

    deinit { if fd >= 0 { close(fd) } }

    /// Registers [start, end) in missing mode. False if the kernel refuses the area (not
    /// anonymous or shmem): the caller writes it another way.
    public func register(_ start: UInt64, _ end: UInt64) -> Bool {
        Userfaultfd.registerMissing(fd, start, length: end - start)
    }

    public func unregister(_ start: UInt64, _ end: UInt64) {
        Userfaultfd.unregister(fd, start, length: end - start)
    }

    /// Copies `count` bytes from `bytes` to `address` of the process, inside a registered
    /// area whose pages there are not populated yet.
    public func copy(to address: UInt64, from bytes: UnsafeRawPointer, count: UInt64) throws {
        var done: UInt64 = 0
        while done < count {
            let n = Userfaultfd.copy(fd, to: address + done, from: bytes + Int(done), count: count - done)
            if n == -Int(EAGAIN) || n == -Int(EINTR) { continue }
            if n < 0 { throw SSIError.sys("UFFDIO_COPY into PID \(pid) at 0x\(String(address + done, radix: 16))", errno: Int32(-n)) }
            done += UInt64(n)
        }
    }
}
