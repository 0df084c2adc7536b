#if canImport(Glibc)
import Glibc
#endif

/// The one error type users see. Its text names what failed, on what (pid, path, node) and,
/// when there is one, what to do about it.
public struct SSIError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A struct over a private enum, so that kinds can be added without breaking callers.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, CaseIterable {
            case busy, notFound, invalidArgument, permission, unsupported, corrupt, state, system
            case unreachable, disconnected, timeout, unknownOutcome, conflict
            case notOwner, otherView, untrustedView, ownerMoved, setChanged
        }
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

        // The cluster's kinds. Each says whether the request may have been done, which is
        // what a caller decides on (send it elsewhere, read to know, or do it again).

        /// A node, etcd or a daemon could not be reached: the request never left, so it may
        /// be sent elsewhere.
        public static let unreachable = Kind(value: .unreachable)
        /// The peer went away during the call: the request may have been handled.
        public static let disconnected = Kind(value: .disconnected)
        /// No answer within the deadline: the request may have been handled.
        public static let timeout = Kind(value: .timeout)
        /// A write that may or may not have been done: read to know before doing it again.
        public static let unknownOutcome = Kind(value: .unknownOutcome)
        /// A write lost a race (a stale revision, a view that changed under it): nothing was
        /// done; do it again from a fresh read.
        public static let conflict = Kind(value: .conflict)
        /// KDDM: the asked node does not own the object in its view.
        public static let notOwner = Kind(value: .notOwner)
        /// KDDM: the owner sees another membership view than the asker.
        public static let otherView = Kind(value: .otherView)
        /// KDDM: the owner does not trust its own view (its lease or its last read of etcd is
        /// too old).
        public static let untrustedView = Kind(value: .untrustedView)
        /// KDDM: the view changed while the request waited at the owner.
        public static let ownerMoved = Kind(value: .ownerMoved)
        /// KDDM: the owner knows another incarnation of the set than the asker.
        public static let setChanged = Kind(value: .setChanged)

        public var description: String { value.rawValue }

        /// The kind named `name` (its `description`), as it crosses the wire.
        public init?(named name: String) {
            guard let v = Value(rawValue: name) else { return nil }
            value = v
        }

        private init(value: Value) { self.value = value }
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

    /// `error` itself when it is an SSIError, else an error of `kind` with its text.
    public static func wrapping(_ error: any Error, as kind: Kind = .system) -> SSIError {
        error as? SSIError ?? SSIError(kind, "\(error)")
    }
}

/// The JSON form (the control socket's): `{"kind":"notOwner","message":...,"hint":...,"errno":...}`.
/// A kind this build does not know (a newer peer's) reads as `system`, its text intact.
extension SSIError: Codable {
    private enum CodingKeys: String, CodingKey { case kind, message, hint, errno }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(Kind(named: try c.decode(String.self, forKey: .kind)) ?? .system, try c.decode(String.self, forKey: .message),
                  hint: try c.decodeIfPresent(String.self, forKey: .hint), errno: try c.decodeIfPresent(Int32.self, forKey: .errno))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind.description, forKey: .kind)
        try c.encode(message, forKey: .message)
        try c.encodeIfPresent(hint, forKey: .hint)
        try c.encodeIfPresent(errno, forKey: .errno)
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
