import CSSILinux

/// The userfaultfd(2) ioctls on a userfaultfd of ours (UFFDIO_API, UFFDIO_REGISTER in missing
/// mode, UFFDIO_COPY, UFFDIO_ZEROPAGE) and its messages. The numbered results are the bytes
/// done or -errno, as the kernel gives them: the callers tell EEXIST (a page there already),
/// EAGAIN (an mm change to read first) and ESRCH (the process is gone) apart.
public enum Userfaultfd {
    /// One message (struct uffd_msg), read without blocking.
    public enum Event: Sendable, Equatable {
        case fault(address: UInt64)
        /// The child's userfaultfd, an fd of ours (UFFD_EVENT_FORK).
        case fork(fd: Int32)
        case remap(from: UInt64, to: UInt64, length: UInt64)
        /// madvise(MADV_DONTNEED/REMOVE) or munmap over [start, end).
        case removed(start: UInt64, end: UInt64)
        case other
    }

    /// UFFDIO_API asking for fork, remap, remove and unmap events. False if refused.
    public static func enableEvents(_ fd: Int32) -> Bool { cssi_uffd_enable_events(fd) == 0 }

    /// UFFDIO_REGISTER in missing mode over [start, start+length). False if refused.
    public static func registerMissing(_ fd: Int32, _ start: UInt64, length: UInt64) -> Bool {
        cssi_uffd_register_missing(fd, start, length) == 0
    }

    /// UFFDIO_API without features (a restore filling fresh memory before the process runs).
    public static func enablePlain(_ fd: Int32) -> Bool { cssi_uffd_enable_plain(fd) == 0 }

    /// UFFDIO_UNREGISTER over [start, start+length).
    public static func unregister(_ fd: Int32, _ start: UInt64, length: UInt64) {
        _ = cssi_uffd_unregister(fd, start, length)
    }

    /// UFFDIO_COPY: bytes copied (possibly fewer than asked) or -errno.
    public static func copy(_ fd: Int32, to address: UInt64, from bytes: UnsafeRawPointer, count: UInt64) -> Int {
        cssi_uffd_copy(fd, address, bytes, count)
    }

    /// UFFDIO_ZEROPAGE: bytes done or -errno.
    public static func zeroPage(_ fd: Int32, at address: UInt64, count: UInt64) -> Int {
        cssi_uffd_zeropage(fd, address, count)
    }

    /// What a read of the userfaultfd gave.
    public enum Read: Sendable, Equatable {
        case event(Event)
        /// No message queued.
        case empty
        /// The read failed with this errno.
        case failed(Int32)
    }

    /// The next message, without blocking.
    public static func next(_ fd: Int32) -> Read {
        var ev = cssi_uffd_event()
        let r = cssi_uffd_read_event(fd, &ev)
        if r < 0 { return .failed(-r) }
        if r == 0 { return .empty }
        switch Int(ev.kind) {
        case Int(CSSI_UFFD_FAULT): return .event(.fault(address: ev.a))
        case Int(CSSI_UFFD_FORK): return .event(.fork(fd: Int32(truncatingIfNeeded: ev.a)))
        case Int(CSSI_UFFD_REMAP): return .event(.remap(from: ev.a, to: ev.b, length: ev.c))
        case Int(CSSI_UFFD_REMOVE), Int(CSSI_UFFD_UNMAP): return .event(.removed(start: ev.a, end: ev.b))
        default: return .event(.other)
        }
    }
}
