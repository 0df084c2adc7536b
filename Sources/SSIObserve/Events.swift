import Foundation
import SSITransport
import Synchronization

/// One thing that happened on a node, as the dashboard, `ssi events` and the metrics see it.
/// Subsystems add theirs with `Observer.record`; the CLI reports its checkpoints and restarts
/// over the control socket. JSON field names are part of the API (docs/observe.md).
public struct ObserveEvent: Codable, Sendable, Equatable {
    /// What kind of thing happened. A struct over a string, so that later subsystems
    /// (migration, scheduler) add kinds without touching this file.
    public struct Kind: RawRepresentable, Codable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
        public init(from decoder: Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(rawValue)
        }

        public static let nodeJoined = Kind(rawValue: "node-joined")
        public static let nodeLeft = Kind(rawValue: "node-left")
        public static let nodeFailed = Kind(rawValue: "node-failed")
        public static let applicationStarted = Kind(rawValue: "application-started")
        public static let checkpointDone = Kind(rawValue: "checkpoint-done")
        public static let checkpointFailed = Kind(rawValue: "checkpoint-failed")
        public static let restartDone = Kind(rawValue: "restart-done")
        public static let restartFailed = Kind(rawValue: "restart-failed")
        public static let note = Kind(rawValue: "note")
        public static let error = Kind(rawValue: "error")

        /// A failure kind: shown in red on the page, counted as an error.
        public var isFailure: Bool { rawValue.hasSuffix("-failed") || self == .error }
    }

    /// Seconds since the epoch (wall clock: events of several nodes are merged by it).
    public var time: Double
    /// The node that recorded it.
    public var node: NodeID
    /// Its number on that node, from 1: with `node`, names the event uniquely.
    public var seq: UInt64
    public var kind: Kind
    /// The application it is about, if any.
    public var app: Int32?
    /// How long the operation took, in seconds.
    public var seconds: Double?
    /// Bytes the operation wrote or read.
    public var bytes: UInt64?
    /// A snapshot version, for checkpoints and restarts.
    public var version: Int?
    public var message: String

    public init(kind: Kind, app: Int32? = nil, seconds: Double? = nil, bytes: UInt64? = nil, version: Int? = nil,
                message: String, time: Double = Date().timeIntervalSince1970, node: NodeID = 0, seq: UInt64 = 0) {
        (self.kind, self.app, self.seconds, self.bytes, self.version) = (kind, app, seconds, bytes, version)
        (self.message, self.time, self.node, self.seq) = (message, time, node, seq)
    }

    /// One line for `ssi events`: time, node, kind, message.
    public var line: String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
        f.timeZone = TimeZone(identifier: "UTC")
        let when = f.string(from: Date(timeIntervalSince1970: time))
        return "\(when)  node \(node)  \(kind.rawValue.padding(toLength: 19, withPad: " ", startingAt: 0))  \(message)"
    }
}

/// The last `capacity` events of one node, oldest first. A fixed ring: a node that runs for
/// months keeps a bounded history, and the count of everything recorded stays in the metrics.
public final class EventRing: Sendable {
    public let capacity: Int
    private struct State {
        var items: [ObserveEvent] = []
        /// Where the next event goes once the ring is full.
        var head = 0
        var nextSeq: UInt64 = 1
    }
    private let state = Mutex(State())

    public init(capacity: Int = 1000) {
        precondition(capacity > 0, "an event ring holds at least one event")
        self.capacity = capacity
    }

    /// Stamps the event with this node's next number and keeps it; returns it stamped.
    @discardableResult
    public func append(_ e: ObserveEvent, node: NodeID) -> ObserveEvent {
        state.withLock { s in
            var e = e
            e.node = node
            e.seq = s.nextSeq
            s.nextSeq += 1
            if s.items.count < capacity {
                s.items.append(e)
            } else {
                s.items[s.head] = e
                s.head = (s.head + 1) % capacity
            }
            return e
        }
    }

    /// Every event kept, oldest first.
    public var all: [ObserveEvent] {
        state.withLock { s in Array(s.items[s.head...] + s.items[..<s.head]) }
    }

    /// The events after `seq` (0: all), oldest first, at most `limit` of the newest.
    public func events(after seq: UInt64 = 0, limit: Int = .max) -> [ObserveEvent] {
        Array(all.filter { $0.seq > seq }.suffix(limit))
    }

    /// Events recorded since start (the ring keeps only the last `capacity`).
    public var recorded: UInt64 { state.withLock { $0.nextSeq - 1 } }
}

extension ObserveEvent {
    /// Several nodes' events as one history: by time, then node and number so that the order
    /// is the same on every node that merges them; the newest `limit`.
    public static func merge(_ lists: [[ObserveEvent]], limit: Int) -> [ObserveEvent] {
        let all = lists.joined().sorted { a, b in
            a.time != b.time ? a.time < b.time : (a.node != b.node ? a.node < b.node : a.seq < b.seq)
        }
        return Array(all.suffix(limit))
    }
}
