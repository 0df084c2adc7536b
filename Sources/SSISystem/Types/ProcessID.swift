#if canImport(Glibc)
import Glibc
#endif

/// A process or thread id (the kernel's pid_t: a thread's id is a pid of its own). Typed so
/// that a pid cannot be passed where a signal, an fd or a count is expected.
public struct ProcessID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: pid_t
    public init(rawValue: pid_t) { self.rawValue = rawValue }
    public init(_ raw: pid_t) { rawValue = raw }

    /// This process (getpid(2)).
    public static var current: ProcessID { ProcessID(getpid()) }

    public static func < (a: ProcessID, b: ProcessID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}
