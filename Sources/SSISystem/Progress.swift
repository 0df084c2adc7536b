import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Progress of a long operation (checkpoint, restart, later migration) for the person at the
/// terminal: one line on stderr, rewritten in place, with the phase, the bytes moved and the
/// rate. It appears only once the operation has taken `delay` (1 s): a quick command prints
/// nothing more than before. Not on a terminal it is off, or plain lines, one per phase, with
/// `--progress`; with `--json` it is off.
///
/// The engine reports its phases through `PhaseClock.mark` (Profile.swift), which forwards
/// them to the operation in progress (`OperationProgress.current`), so the engine needs no
/// reference to it. Bytes are what this process read and wrote: rchar + wchar of
/// /proc/self/io (proc(5)), which a checkpoint moves as it writes the pages file.
public final class OperationProgress: Sendable {
    public enum Mode: Sendable, Equatable {
        case off
        /// One line rewritten with "\r" and erase-to-end-of-line (ECMA-48 EL, ESC [ K).
        case terminal
        /// One line per phase, for logs and pipes.
        case lines
    }

    /// The mode for output on `fd`: terminal when it is one (isatty(3)), else lines when
    /// asked, else off; always off with JSON output.
    public static func mode(fd: Int32 = 2, json: Bool, forced: Bool) -> Mode {
        if json { return .off }
        if isatty(fd) == 1 { return .terminal }
        return forced ? .lines : .off
    }

    /// The operation in progress in this process, if any: PhaseClock reports into it.
    public static let current = Mutex<OperationProgress?>(nil)

    public let title: String
    public let mode: Mode
    let fd: Int32
    let delay: Duration
    let bytes: @Sendable () -> UInt64
    private struct State {
        var phase = "starting"
        var shown = false
        var finished = false
        var lastBytes: UInt64 = 0
        var lastAt = ContinuousClock.now
        var rate: Double = 0
    }
    private let state = Mutex(State())
    private let started = ContinuousClock.now
    private let baseBytes: UInt64

    /// `delay` defaults to 1 s, or $SSI_PROGRESS_DELAY_MS.
    public init(_ title: String, mode: Mode, fd: Int32 = 2, delay: Duration? = nil,
                bytes: @escaping @Sendable () -> UInt64 = OperationProgress.ioBytes) {
        (self.title, self.mode, self.fd, self.bytes) = (title, mode, fd, bytes)
        let env = ProcessInfo.processInfo.environment["SSI_PROGRESS_DELAY_MS"].flatMap(Int.init)
        self.delay = delay ?? .milliseconds(env ?? 1000)
        baseBytes = bytes()
    }

    /// Makes this the current operation and, on a terminal, starts redrawing its line four
    /// times a second.
    public func start() {
        guard mode != .off else { return }
        Self.current.withLock { $0 = self }
        guard mode == .terminal else { return }
        let t = Thread { [self] in
            while !state.withLock({ $0.finished }) {
                draw()
                usleep(250_000)
            }
        }
        t.start()
    }

    /// The operation entered (or finished) a phase.
    public func phase(_ name: String) {
        let show = state.withLock { s -> Bool in
            s.phase = name
            return mode == .lines && !s.finished
        }
        if show { emit("ssi: \(title): \(name) (\(summary()))\n") }
    }

    /// Ends the operation: the terminal line is erased, so that the command's own output
    /// follows on a clean line.
    public func finish() {
        let wasShown = state.withLock { s -> Bool in
            defer { s.finished = true }
            return s.shown && !s.finished
        }
        Self.current.withLock { if $0 === self { $0 = nil } }
        if mode == .terminal && wasShown { emit("\r\u{1b}[K") }
    }

    private func draw() {
        guard ContinuousClock.now - started >= delay else { return }
        let (phase, go) = state.withLock { s -> (String, Bool) in
            if s.finished { return ("", false) }
            s.shown = true
            return (s.phase, true)
        }
        if go { emit("\r\u{1b}[K\(title): \(phase)  \(summary())") }
    }

    /// "12.3 MiB, 45.6 MiB/s, 2.3 s"
    func summary() -> String {
        let now = ContinuousClock.now
        let b = bytes() &- baseBytes
        let rate = state.withLock { s -> Double in
            let dt = Self.seconds(now - s.lastAt)
            if dt >= 0.2 {
                s.rate = Double(b &- s.lastBytes) / dt
                (s.lastBytes, s.lastAt) = (b, now)
            }
            return s.rate
        }
        return "\(Self.size(Double(b))), \(Self.size(rate))/s, " + String(format: "%.1f s", Self.seconds(now - started))
    }

    private func emit(_ s: String) {
        let bytes = Array(s.utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    public static func size(_ n: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = n, i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(Int(v)) B" : String(format: "%.1f %@", v, units[i])
    }

    /// rchar + wchar of /proc/self/io: bytes this process passed to read-like and write-like
    /// calls (proc(5)), whether or not they reached a disk.
    public static let ioBytes: @Sendable () -> UInt64 = {
        guard let text = try? ProcFS.read("/proc/self/io") else { return 0 }
        var total: UInt64 = 0
        for line in text.split(separator: "\n") where line.hasPrefix("rchar:") || line.hasPrefix("wchar:") {
            total &+= line.split(separator: " ").last.flatMap { UInt64($0) } ?? 0
        }
        return total
    }
}
