#if canImport(Glibc)
import Glibc
#endif

/// A signal number (signal(7)), with the names users type.
public struct Signal: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ raw: Int32) { rawValue = raw }

    public static let hangup = Signal(SIGHUP), interrupt = Signal(SIGINT), quit = Signal(SIGQUIT)
    public static let illegalInstruction = Signal(SIGILL), trap = Signal(SIGTRAP), bus = Signal(SIGBUS)
    public static let floatingPoint = Signal(SIGFPE), kill = Signal(SIGKILL), user1 = Signal(SIGUSR1)
    public static let segmentationFault = Signal(SIGSEGV), user2 = Signal(SIGUSR2), alarm = Signal(SIGALRM)
    public static let terminate = Signal(SIGTERM), child = Signal(SIGCHLD), `continue` = Signal(SIGCONT), stop = Signal(SIGSTOP)

    /// The short names `kill -l` prints, for parsing.
    static let names: [String: Signal] = ["HUP": .hangup, "INT": .interrupt, "QUIT": .quit, "KILL": .kill, "USR1": .user1,
                                          "USR2": .user2, "TERM": .terminate, "CONT": .continue, "STOP": .stop,
                                          "ALRM": .alarm, "CHLD": .child]

    /// A signal given as a number (9) or a name, with or without SIG (TERM, SIGKILL); nil if
    /// it is neither.
    public init?(parsing s: String) {
        if let n = Int32(s), n > 0, n < 65 { self.init(n); return }
        let upper = s.uppercased()
        guard let sig = Signal.names[upper.hasPrefix("SIG") ? String(upper.dropFirst(3)) : upper] else { return nil }
        self = sig
    }

    /// Sends the signal to a process (kill(2)).
    public func send(to pid: ProcessID) throws {
        if Glibc.kill(pid.rawValue, rawValue) != 0 { throw SSIError.sys("kill(\(pid), \(rawValue))", errno: errno) }
    }

    public var description: String { Signal.names.first { $0.value == self }.map { "SIG" + $0.key } ?? "signal \(rawValue)" }
}
