import Foundation
import SSISystem
import SSITransport

// KDDM's protocol: what crosses the RPC between a node and an object's owner (ObjMsg, JSON
// encoded, on the services of `KDDMService`), the owner rules, and what is stored in etcd for
// a set (KDDMSetInfo). docs/cluster.md describes the coherence protocol they carry.

/// How a set picks the home (owner) node of an object.
public enum OwnerRule: Sendable, Codable, Equatable, CustomStringConvertible {
    /// A fixed node; when it is not online, the hash rule applies.
    case fixed(NodeID)
    /// A hash of the id over the online nodes.
    case hash

    public init(parsing s: String) throws {
        if s == "hash" { self = .hash; return }
        if s.hasPrefix("fixed:"), let n = NodeID(s.dropFirst(6)) { self = .fixed(n); return }
        throw SSIError(.invalidArgument, "kddm: bad owner rule '\(s)'", hint: "use hash or fixed:NODE")
    }

    public var description: String {
        switch self {
        case .hash: return "hash"
        case .fixed(let n): return "fixed:\(n)"
        }
    }

    public func owner(of id: UInt64, online: [NodeID]) -> NodeID? {
        guard !online.isEmpty else { return nil }
        if case .fixed(let n) = self, online.contains(n) { return n }
        let h = (id &* 0x9E37_79B9_7F4A_7C15) >> 32
        return online[Int(h % UInt64(online.count))]
    }
}

/// A set as stored in etcd (sets/<name>): its owner rule never changes.
public struct KDDMSetInfo: Sendable, Codable, Equatable {
    public var name: String
    public var rule: OwnerRule
    public init(name: String, rule: OwnerRule) {
        self.name = name
        self.rule = rule
    }
}

/// The RPC services of KDDM.
public enum KDDMService {
    public static let read = ServiceBlock.kddm.number(1)
    public static let grab = ServiceBlock.kddm.number(2)
    public static let put = ServiceBlock.kddm.number(3)
    public static let release = ServiceBlock.kddm.number(4)
    public static let invalidate = ServiceBlock.kddm.number(5)
    public static let remove = ServiceBlock.kddm.number(6)
    public static let state = ServiceBlock.kddm.number(7)
    public static let dropSet = ServiceBlock.kddm.number(8)
}

/// Names an object: its set and its 64-bit id.
public struct ObjKey: Hashable, Sendable, Codable, CustomStringConvertible {
    public var set: String
    public var id: UInt64
    public var description: String { "\(set)/\(id)" }
    public init(set: String, id: UInt64) {
        self.set = set
        self.id = id
    }
}

/// Every request and reply of the KDDM services.
public struct ObjMsg: Codable, Sendable {
    public var key: ObjKey
    public var value: [UInt8]? = nil
    public var rev: Int64 = 0
    /// The asker's view (ViewSnapshot.viewID); 0: any (inspection).
    public var view: UInt64 = 0
    /// The incarnation of the set the asker knows (the mod revision of its etcd key); 0: any.
    public var setRev: Int64 = 0
    /// Names one grab, so that a release meant for it never frees another (0: none).
    public var grab: UInt64 = 0

    public init(key: ObjKey, value: [UInt8]? = nil, rev: Int64 = 0, view: UInt64 = 0, setRev: Int64 = 0, grab: UInt64 = 0) {
        (self.key, self.value, self.rev, self.view, self.setRev, self.grab) = (key, value, rev, view, setRev, grab)
    }

    enum CodingKeys: String, CodingKey { case key, value, rev, view, setRev, grab }

    // The value as base64 text: synthesized, [UInt8] is a JSON array of numbers, which
    // JSONDecoder reads one generic element at a time (an application record of 600 bytes
    // took longer to decode than everything else in a KDDM write; perf). An array is still
    // read, from a daemon of an earlier version.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        key = try c.decode(ObjKey.self, forKey: .key)
        if let text = try? c.decodeIfPresent(String.self, forKey: .value) {
            guard let data = Data(base64Encoded: text) else {
                throw DecodingError.dataCorruptedError(forKey: .value, in: c, debugDescription: "value is not base64")
            }
            value = Array(data)
        } else {
            value = try c.decodeIfPresent([UInt8].self, forKey: .value)
        }
        rev = try c.decodeIfPresent(Int64.self, forKey: .rev) ?? 0
        view = try c.decodeIfPresent(UInt64.self, forKey: .view) ?? 0
        setRev = try c.decodeIfPresent(Int64.self, forKey: .setRev) ?? 0
        grab = try c.decodeIfPresent(UInt64.self, forKey: .grab) ?? 0
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(key, forKey: .key)
        try c.encodeIfPresent(value.map { Data($0).base64EncodedString() }, forKey: .value)
        try c.encode(rev, forKey: .rev)
        try c.encode(view, forKey: .view)
        try c.encode(setRev, forKey: .setRev)
        try c.encode(grab, forKey: .grab)
    }
}

/// What `ssi kddm show` prints: the owner's coherence state plus the asking node's.
public struct KDDMObjectState: Sendable, Codable {
    public var set: String
    public var id: UInt64
    public var owner: NodeID
    public var exists: Bool
    public var value: [UInt8]?
    public var revision: Int64
    public var readers: [NodeID]
    public var writer: NodeID?
    public var waiting: Int
    public var localCopy: String
}

/// The messages' encoding on the wire.
enum KDDMCoding {
    static func enc<T: Encodable>(_ v: T) throws -> [UInt8] { Array(try JSONEncoder().encode(v)) }
    static func dec<T: Decodable>(_ t: T.Type, _ b: [UInt8]) throws -> T { try JSONDecoder().decode(t, from: Data(b)) }
}
