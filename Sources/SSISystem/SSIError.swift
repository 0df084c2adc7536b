#if canImport(Glibc)
import Glibc
#endif

/// The one error type users see. Its text names what failed, on what (pid, path, node) and,
/// when there is one, what to do about it.
public struct SSIError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A struct over a private enum, so that kinds can be added without breaking callers.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String { case busy, notFound, invalidArgument, permission, unsupported, corrupt, state, system }
        private let value: Value
        public static let busy = Kind(value: .busy)
        public static let notFound = Kind(value: .notFound)
        public static let invalidArgument = Kind(value: .invalidArgument)
        public static let permission = Kind(value: .permission)
        public static let unsupported = Kind(value: .unsupported)
        public static let corrupt = Kind(value: .corrupt)
        /// The object is in the wrong state for the operation (not frozen, already frozen...).
        public static let state = Kind(value: .state)
        public static let system = Kind(value: .system)
        public var description: String { value.rawValue }
    }

    public let kind: Kind
    public let message: String
    public let hint: String?
    public let errno: Int32?

    public init(_ kind: Kind, _ message: String, hint: String? = nil, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.hint = hint
        self.errno = errno
    }

    /// A failed system call: `what` says which call on which object.
    public static func sys(_ what: String, errno e: Int32, hint: String? = nil) -> SSIError {
        let kind: Kind
        switch e {
        case EPERM, EACCES: kind = .permission
        case ENOENT, ESRCH: kind = .notFound
        case EEXIST, EBUSY: kind = .busy
        default: kind = .system
        }
        return SSIError(kind, "\(what): \(String(cString: strerror(e)))", hint: hint, errno: e)
    }

    public var description: String {
        if let hint { return "\(message)\n  hint: \(hint)" }
        return message
    }
}

/// Throws SSIError.sys when a shim call returned -errno.
@discardableResult
@inline(__always)
public func check(_ r: Int, _ what: @autoclosure () -> String, hint: String? = nil) throws -> Int {
    if r < 0 { throw SSIError.sys(what(), errno: Int32(-r), hint: hint) }
    return r
}

/// Throws for a libc call that returns -1 and sets errno; retries on EINTR.
@discardableResult
@inline(__always)
public func checkLibc(_ what: @autoclosure () -> String, hint: String? = nil, _ body: () -> Int) throws -> Int {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Glibc.errno
        if e == EINTR { continue }
        throw SSIError.sys(what(), errno: e, hint: hint)
    }
}

/// Programs that need root call this first, so that non-root users get one plain sentence.
public func requireRoot(_ what: String) throws {
    if geteuid() != 0 {
        throw SSIError(.permission, "\(what) needs root (it uses ptrace on other users' processes, clone3 with set_tid and cgroups)",
                       hint: "run it with sudo, or as root")
    }
}
