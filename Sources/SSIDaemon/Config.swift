import Foundation
import SSISystem
import SSITransport

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
///     dashboard= HOST:PORT|off           the dashboard and /metrics (default 127.0.0.1:7180;
///                                        GETs are open to loopback peers only: docs/observe.md)
///
/// and each subsystem's section, `SECTION.KEY = VALUE` (`Subsystem.configuration`), e.g.
///
///     kddm.sets = counters processes applications ports streams
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
    /// Where the dashboard listens (docs/observe.md); nil: not served.
    public var dashboard: (host: String, port: Int)? = ("127.0.0.1", 7180)
    /// Subsystem name -> its keys as set (defaults are filled in by `settings(for:)`).
    public var sections: [String: [String: String]] = [:]

    public init() {}

    public static let keys = ["node", "session", "listen", "advertise", "secret", "etcd", "control", "join", "log", "dashboard"]

    public mutating func set(_ key: String, _ value: String) throws {
        switch key {
        case "node":
            guard let n = NodeID(value) else { throw Self.bad("node must be 0..255, not '\(value)'") }
            node = n
        case "session":
            guard let s = UInt64(value), s > 0 else { throw Self.bad("session must be a positive integer, not '\(value)'") }
            session = s
        case "listen":
            guard let colon = value.lastIndex(of: ":"), let p = Int(value[value.index(after: colon)...]), (0...65535).contains(p) else {
                throw Self.bad("listen must be HOST:PORT, not '\(value)'")
            }
            listenHost = String(value[..<colon])
            listenPort = p
        case "advertise": advertise = value
        case "secret": secretPath = value
        case "etcd": etcd = value
        case "control": control = value
        case "join": join = ["yes", "true", "1", "on"].contains(value.lowercased())
        case "log": logLevel = value
        case "dashboard":
            if value == "off" { dashboard = nil; return }
            guard let colon = value.lastIndex(of: ":"), let p = Int(value[value.index(after: colon)...]), (0...65535).contains(p) else {
                throw Self.bad("dashboard must be HOST:PORT or off, not '\(value)'")
            }
            dashboard = (String(value[..<colon]), p)
        default: try setSection(key, value)
        }
    }

    static func bad(_ what: String, hint: String? = nil) -> SSIError {
        SSIError(.invalidArgument, "configuration: \(what)", hint: hint ?? "see docs/cluster.md for ssid's keys")
    }

    /// Every key a file may set: the core's, then each subsystem's as SECTION.KEY.
    static var allKeys: [String] {
        keys + NodeDaemon.subsystems.flatMap { s in s.configuration.map { "\(s.name).\($0.name)" } }
    }

    private mutating func setSection(_ key: String, _ value: String) throws {
        let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2, let s = NodeDaemon.subsystems.first(where: { $0.name == parts[0] }),
              s.configuration.contains(where: { $0.name == parts[1] }) else {
            throw Self.bad("unknown key '\(key)' (keys: \(Self.allKeys.joined(separator: ", ")))")
        }
        sections[parts[0], default: [:]][parts[1]] = value
    }

    /// A subsystem's section: what the configuration set, else the defaults.
    public func settings(for s: any Subsystem.Type) -> [String: String] {
        var out = Dictionary(uniqueKeysWithValues: s.configuration.map { ($0.name, $0.defaultValue) })
        for (k, v) in sections[s.name] ?? [:] { out[k] = v }
        return out
    }

    public mutating func load(file path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SSIError(.notFound, "configuration: cannot read the file \(path)", hint: "ssid --config FILE; see scripts/ssid.service")
        }
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let kv = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2 else { throw Self.bad("\(path):\(i + 1): expected key = value") }
            do { try set(kv[0], kv[1]) } catch let e as SSIError {
                throw SSIError(e.kind, "\(path):\(i + 1): \(e.message)", hint: e.hint)
            }
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
                throw Self.bad("unexpected argument '\(a)'", hint: "usage: ssid [--config FILE] [--KEY VALUE]...")
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
            throw SSIError(.notFound, "configuration: cannot read the cluster secret \(secretPath)",
                           hint: "create it: head -c 32 /dev/urandom > \(secretPath); chmod 600")
        }
        guard d.count >= 16 else {
            throw Self.bad("the cluster secret \(secretPath) is shorter than 16 bytes", hint: "make it 32 random bytes, the same on every node")
        }
        return Array(d)
    }
}
