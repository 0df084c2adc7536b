import Foundation
import SSICluster

/// ssid's configuration: a file of `key = value` lines (# comments), then flags
/// `--key value` that override it. Keys:
///
///     node     = 0..255                  this node's id
///     session  = 1..2^64-1               clusters with different sessions never talk
///     listen   = HOST:PORT               the RPC address (default 0.0.0.0:7100)
///     advertise= HOST                    the address peers dial (default: listen's host)
///     secret   = PATH                    the cluster secret file (>= 16 bytes)
///     etcd     = http://HOST:PORT[,...]  the membership service
///     control  = PATH                    the local control socket (default /run/ssid.sock)
///     join     = yes|no                  become online at start (default yes)
///     log      = trace|debug|info|notice|warning|error
public struct DaemonConfig: Sendable {
    public var node: NodeID = 0
    public var session: UInt64 = 1
    public var listenHost = "0.0.0.0"
    public var listenPort = 7100
    public var advertise: String?
    public var secretPath = "/etc/ssi/secret"
    public var etcd = "http://127.0.0.1:2379"
    public var control = "/run/ssid.sock"
    public var join = true
    public var logLevel = "info"

    public init() {}

    public static let keys = ["node", "session", "listen", "advertise", "secret", "etcd", "control", "join", "log"]

    public mutating func set(_ key: String, _ value: String) throws {
        switch key {
        case "node":
            guard let n = NodeID(value) else { throw ClusterError.config("node must be 0..255, not '\(value)'") }
            node = n
        case "session":
            guard let s = UInt64(value), s > 0 else { throw ClusterError.config("session must be a positive integer, not '\(value)'") }
            session = s
        case "listen":
            guard let colon = value.lastIndex(of: ":"), let p = Int(value[value.index(after: colon)...]), (0...65535).contains(p) else {
                throw ClusterError.config("listen must be HOST:PORT, not '\(value)'")
            }
            listenHost = String(value[..<colon])
            listenPort = p
        case "advertise": advertise = value
        case "secret": secretPath = value
        case "etcd": etcd = value
        case "control": control = value
        case "join": join = ["yes", "true", "1", "on"].contains(value.lowercased())
        case "log": logLevel = value
        default: throw ClusterError.config("unknown key '\(key)' (keys: \(Self.keys.joined(separator: ", ")))")
        }
    }

    public mutating func load(file path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ClusterError.config("cannot read config file \(path)")
        }
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let kv = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { throw ClusterError.config("\(path):\(i + 1): expected key = value") }
            do { try set(kv[0], kv[1]) } catch { throw ClusterError.config("\(path):\(i + 1): \(error)") }
        }
    }

    /// `--config FILE` first, then every other `--key value`.
    public static func parse(arguments: [String]) throws -> DaemonConfig {
        var c = DaemonConfig()
        var pairs: [(String, String)] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            guard a.hasPrefix("--"), i + 1 < arguments.count else {
                throw ClusterError.config("unexpected argument '\(a)' (usage: ssid [--config FILE] [--KEY VALUE]...)")
            }
            pairs.append((String(a.dropFirst(2)), arguments[i + 1]))
            i += 2
        }
        for (k, v) in pairs where k == "config" { try c.load(file: v) }
        for (k, v) in pairs where k != "config" { try c.set(k, v) }
        return c
    }

    public func readSecret() throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: secretPath) else {
            throw ClusterError.config("cannot read the cluster secret \(secretPath) (create it: head -c 32 /dev/urandom > \(secretPath); chmod 600)")
        }
        guard d.count >= 16 else { throw ClusterError.config("the cluster secret \(secretPath) is shorter than 16 bytes") }
        return Array(d)
    }
}
