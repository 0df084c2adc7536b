#if canImport(Glibc)
import Glibc
#endif

/// An fd that this process owns: closed when the value goes, and only once (a noncopyable
/// type cannot be duplicated by accident). `take()` hands the raw number over to a new owner.
public struct OwnedFileDescriptor: ~Copyable {
    public let rawValue: Int32

    public init(taking raw: Int32) {
        precondition(raw >= 0, "an owned fd must be valid")
        rawValue = raw
    }

    /// open(2) with O_CLOEXEC, retried on EINTR; throws naming `path`.
    public init(opening path: String, _ flags: Int32, mode: mode_t = 0, hint: String? = nil) throws {
        rawValue = Int32(try checkLibc("open \(path)", hint: hint) { Int(open(path, flags | O_CLOEXEC, mode)) })
    }

    /// The number, for the caller to close (the value no longer closes it).
    public consuming func take() -> Int32 {
        let raw = rawValue
        discard self
        return raw
    }

    deinit { close(rawValue) }
}
