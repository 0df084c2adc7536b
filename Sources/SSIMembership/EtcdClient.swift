import Foundation
import NIOCore
import SSISystem

/// A small client of etcd's v3 API through its JSON gateway (`POST /v3/kv/range` ...), which
/// etcd 3.4 (Debian 12's etcd-server) serves on the client port. We use the gateway rather
/// than etcd's gRPC so that the daemon does not pull in gRPC and protobuf code generation;
/// keys and values travel base64-encoded, numbers as strings. Each endpoint keeps its
/// connections open between requests (`EtcdEndpoint`).
public final class EtcdClient: Sendable {
    let endpoints: [EtcdEndpoint]

    public struct KeyValue: Sendable {
        public var key: String
        public var value: [UInt8]
        public var modRevision: Int64
        public var lease: Int64
    }

    /// Conditions that make a transaction fail when the membership view it was decided on is
    /// no longer etcd's: each key that defines the view still has the mod revision we saw (a
    /// deleted key compares as revision 0; a key put again, as a daemon that restarted within
    /// its lease's TTL does, has a newer one), and no key under the given prefixes was created
    /// after the revision we read the view at (a new member). etcd's Compare takes a
    /// range_end, so one comparison covers a whole prefix. etcd refuses a transaction of more
    /// than --max-txn-ops (default 128) comparisons: 2 per online member + 2.
    public struct Fence: Sendable {
        /// key -> the mod revision it must still have.
        public var keys: [String: Int64]
        public var prefixes: [String]
        public var revision: Int64
        public static let none = Fence(keys: [:], prefixes: [], revision: 0)
        public init(keys: [String: Int64], prefixes: [String], revision: Int64) {
            self.keys = keys
            self.prefixes = prefixes
            self.revision = revision
        }

        var compares: [[String: Any]] {
            var c: [[String: Any]] = keys.sorted { $0.key < $1.key }.map {
                ["key": EtcdClient.b64($0.key), "target": "MOD", "mod_revision": String($0.value), "result": "EQUAL"]
            }
            for p in prefixes {
                c.append(["key": EtcdClient.b64(p), "range_end": EtcdClient.b64(EtcdClient.prefixEnd(p)), "target": "CREATE",
                          "create_revision": String(revision + 1), "result": "LESS"])
            }
            return c
        }
    }

    /// Parses "http://10.0.0.1:2379,http://..." or "host:port".
    public init(endpoints: String, group: EventLoopGroup) throws {
        var eps: [EtcdEndpoint] = []
        for e in endpoints.split(separator: ",") {
            var s = String(e)
            if s.hasPrefix("http://") { s.removeFirst(7) }
            let parts = s.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else {
                throw SSIError(.invalidArgument, "bad etcd endpoint '\(e)'", hint: "use http://HOST:PORT[,...] (the etcd key of ssid's configuration)")
            }
            eps.append(EtcdEndpoint(host: String(parts[0]), port: port, group: group))
        }
        guard !eps.isEmpty else { throw SSIError(.invalidArgument, "no etcd endpoint given", hint: "set etcd = http://HOST:PORT in ssid's configuration") }
        self.endpoints = eps
    }

    /// "host:port,..." of the endpoints, in the order they are tried.
    public var endpointNames: String { endpoints.map(\.name).joined(separator: ",") }

    /// Closes the idle connections (a request made afterwards opens new ones).
    public func shutdown() {
        for ep in endpoints { ep.shutdown() }
    }

    /// POSTs `body` to `path`, trying each endpoint in turn. A request that is not
    /// idempotent (a transaction) goes to the next endpoint only when the previous one could
    /// not be reached: once it was sent, it may have been done, and doing it again elsewhere
    /// would turn one write into a compare failure that hides it.
    func post(_ path: String, _ body: [String: Any], timeout: TimeAmount = .seconds(2), idempotent: Bool = true) async throws -> [String: Any] {
        let data = try EtcdJSON.encode(body) ?? Array(JSONSerialization.data(withJSONObject: body))
        var lastError: Error = SSIError(.unreachable, "no etcd endpoint to send \(path) to")
        for ep in endpoints {
            let bytes: [UInt8]
            do {
                bytes = try await ep.post(path, data, timeout: timeout, idempotent: idempotent)
            } catch let e as Unreached {
                lastError = e.error
                continue
            } catch {
                if !idempotent { throw Self.unknownOutcome(path, ep, "\(error)") }
                lastError = error is ClosedBeforeAnswer ? SSIError(.disconnected, "the membership service (etcd) at \(ep.name) closed the connection") : error
                continue
            }
            do {
                guard let obj = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                    if !idempotent { throw Self.unknownOutcome(path, ep, "a reply that does not parse") }
                    throw SSIError(.corrupt, "membership service (etcd) at \(ep.name): a reply to \(path) that does not parse")
                }
                if let err = obj["error"] as? String {
                    // An error from etcd itself ("request timed out", "leader changed") does
                    // not say that a write was not proposed: it may still be applied.
                    if !idempotent { throw Self.unknownOutcome(path, ep, err) }
                    throw Self.replyError(path, ep, err, code: Self.int(obj["code"]))
                }
                return obj
            } catch let e as SSIError where !idempotent {
                throw e
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// A write sent to `ep` whose fate etcd did not tell: it may be applied still.
    static func unknownOutcome(_ path: String, _ ep: EtcdEndpoint, _ why: String) -> SSIError {
        SSIError(.unknownOutcome, "etcd did not answer a write that it may have done (\(path) to \(ep.name): \(why))",
                 hint: "read the key to know whether it was done")
    }

    /// An error etcd answered, typed by its gRPC code (codes.proto: 4 deadline exceeded,
    /// 5 not found, 14 unavailable).
    static func replyError(_ path: String, _ ep: EtcdEndpoint, _ text: String, code: Int64) -> SSIError {
        let kind: SSIError.Kind = switch code {
        case 4: .timeout
        case 5: .notFound
        case 14: .unreachable
        default: .system
        }
        return SSIError(kind, "membership service (etcd) at \(ep.name): \(path): \(text)")
    }

    // MARK: the operations we use

    static func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
    static func b64(_ b: [UInt8]) -> String { Data(b).base64EncodedString() }
    static func unb64(_ any: Any?) -> [UInt8] {
        guard let s = any as? String, let d = Data(base64Encoded: s) else { return [] }
        return Array(d)
    }
    static func int(_ any: Any?) -> Int64 {
        if let s = any as? String { return Int64(s) ?? 0 }
        if let n = any as? NSNumber { return n.int64Value }
        return 0
    }

    /// The key just past every key that starts with `prefix`.
    static func prefixEnd(_ prefix: String) -> [UInt8] {
        var b = Array(prefix.utf8)
        b[b.count - 1] += 1
        return b
    }

    /// The store revision a reply was made at (a transaction's writes have this revision).
    static func revision(_ reply: [String: Any]) -> Int64 { int((reply["header"] as? [String: Any])?["revision"]) }

    /// What a failed transaction's one `request_range` found.
    static func failureRange(_ reply: [String: Any]) -> KeyValue? {
        kvs(((reply["responses"] as? [[String: Any]])?.first?["response_range"] as? [String: Any]) ?? [:]).first
    }

    static func kvs(_ obj: [String: Any]) -> [KeyValue] {
        ((obj["kvs"] as? [[String: Any]]) ?? []).map {
            KeyValue(key: String(decoding: unb64($0["key"]), as: UTF8.self), value: unb64($0["value"]),
                     modRevision: int($0["mod_revision"]), lease: int($0["lease"]))
        }
    }

    public func get(_ key: String) async throws -> KeyValue? {
        Self.kvs(try await post("/v3/kv/range", ["key": Self.b64(key)])).first
    }

    public func list(prefix: String) async throws -> [KeyValue] {
        Self.kvs(try await post("/v3/kv/range", ["key": Self.b64(prefix), "range_end": Self.b64(Self.prefixEnd(prefix))]))
    }

    /// The keys in [from, to) and the store's revision at which they were read.
    public func list(from: String, to: [UInt8]) async throws -> (kvs: [KeyValue], revision: Int64) {
        let r = try await post("/v3/kv/range", ["key": Self.b64(from), "range_end": Self.b64(to)])
        return (Self.kvs(r), Self.revision(r))
    }

    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws {
        var body: [String: Any] = ["key": Self.b64(key), "value": Self.b64(value)]
        if lease != 0 { body["lease"] = String(lease) }
        _ = try await post("/v3/kv/put", body)
    }

    public func delete(_ key: String) async throws {
        _ = try await post("/v3/kv/deleterange", ["key": Self.b64(key)])
    }

    public func delete(prefix: String) async throws {
        _ = try await post("/v3/kv/deleterange", ["key": Self.b64(prefix), "range_end": Self.b64(Self.prefixEnd(prefix))])
    }

    /// A write that can be told apart afterwards: `key` gets `value` (or is deleted when
    /// nil) and `tagKey` gets `tag`, in one transaction, only if `key`'s mod revision is still
    /// `expected`, `tagKey`'s is still `tagExpected` (0: missing) and the fence holds.
    /// Returns the new revision, or nil when a comparison failed. When the outcome is unknown
    /// (an error of kind `unknownOutcome`), `voidTag` settles it.
    public func taggedWrite(_ key: String, expected: Int64, _ value: [UInt8]?, tagKey: String, tagExpected: Int64, tag: String,
                            fence: Fence = .none) async throws -> Int64? {
        let k = Self.b64(key), t = Self.b64(tagKey)
        let change: [String: Any] = value.map { ["request_put": ["key": k, "value": Self.b64($0)]] } ?? ["request_delete_range": ["key": k]]
        let r = try await post("/v3/kv/txn", [
            "compare": [["key": k, "target": "MOD", "mod_revision": String(expected), "result": "EQUAL"],
                        ["key": t, "target": "MOD", "mod_revision": String(tagExpected), "result": "EQUAL"]] + fence.compares,
            "success": [change, ["request_put": ["key": t, "value": Self.b64(Array(tag.utf8))]]],
        ], idempotent: false)
        guard (r["succeeded"] as? Bool) == true else { return nil }
        return Self.revision(r)
    }

    /// Settles a `taggedWrite` whose outcome is unknown: if `tagKey` still has mod revision
    /// `tagExpected`, it is overwritten with `void`, so that the write, were it still pending,
    /// fails its comparison; returns (true, the new revision, nil). Otherwise returns (false,
    /// 0, what `tagKey` holds): the write was done if that is its tag.
    public func voidTag(_ tagKey: String, expected: Int64, void: String) async throws -> (voided: Bool, revision: Int64, tag: KeyValue?) {
        let t = Self.b64(tagKey)
        let r = try await post("/v3/kv/txn", [
            "compare": [["key": t, "target": "MOD", "mod_revision": String(expected), "result": "EQUAL"]],
            "success": [["request_put": ["key": t, "value": Self.b64(Array(void.utf8))]]],
            "failure": [["request_range": ["key": t]]],
        ], idempotent: false)
        if (r["succeeded"] as? Bool) == true { return (true, Self.revision(r), nil) }
        return (false, 0, Self.failureRange(r))
    }

    /// Creates the key only if it does not exist. Returns nil when it was created, else what
    /// is there.
    public func createIfAbsent(_ key: String, _ value: [UInt8]) async throws -> KeyValue? {
        let k = Self.b64(key)
        let r = try await post("/v3/kv/txn", [
            "compare": [["key": k, "target": "CREATE", "create_revision": "0", "result": "EQUAL"]],
            "success": [["request_put": ["key": k, "value": Self.b64(value)]]],
            "failure": [["request_range": ["key": k]]],
        ])
        if (r["succeeded"] as? Bool) == true { return nil }
        return Self.failureRange(r)
    }

    public func grantLease(ttl: Int) async throws -> Int64 {
        let r = try await post("/v3/lease/grant", ["TTL": String(ttl)])
        let id = Self.int(r["ID"])
        guard id != 0 else { throw SSIError(.corrupt, "membership service (etcd): a lease grant returned no id") }
        return id
    }

    /// Returns false when the lease has expired.
    public func keepAlive(_ lease: Int64) async throws -> Bool {
        let r = try await post("/v3/lease/keepalive", ["ID": String(lease)], timeout: .milliseconds(900))
        let result = r["result"] as? [String: Any]
        return Self.int(result?["TTL"]) > 0
    }

    /// Revokes a lease and deletes its keys. Returns false when etcd no longer has it (it
    /// expired or was revoked already).
    @discardableResult
    public func revoke(_ lease: Int64) async throws -> Bool {
        do {
            _ = try await post("/v3/lease/revoke", ["ID": String(lease)])
            return true
        } catch let e as SSIError where e.kind == .notFound {
            return false
        }
    }
}
