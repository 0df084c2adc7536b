import Foundation
import Logging
import NIOHTTP1
import NIOPosix
import SSIMembership
import SSIObserve
import SSISystem
import SSITestSupport
import SSITransport
import Testing

/// A Prometheus text exposition parsed back: every sample by its series ("name{labels}"),
/// and each metric family's TYPE. Throws on a line that is neither a comment nor a sample.
struct PromText {
    var samples: [String: Double] = [:]
    var types: [String: String] = [:]

    init(_ text: String) throws {
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let f = line.split(separator: " ")
                guard f.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(f[3]) else {
                    throw TestFailure("bad TYPE line: \(line)")
                }
                types[String(f[2])] = String(f[3])
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let sp = line.lastIndex(of: " "), let v = Double(line[line.index(after: sp)...]) else {
                throw TestFailure("not a sample: \(line)")
            }
            let series = String(line[..<sp])
            let name = series.split(separator: "{").first.map(String.init) ?? series
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }) else { throw TestFailure("bad metric name: \(name)") }
            samples[series] = v
        }
    }

    /// The sample of `name` whose labels include all of `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { k, _ in
            k.split(separator: "{").first.map(String.init) == name && labels.allSatisfy { k.contains("\($0.key)=\"\($0.value)\"") }
        }?.value
    }
}

@Suite struct EventRingTests {
    @Test func keepsTheLastCapacityEventsNumberedFromOne() {
        let ring = EventRing(capacity: 3)
        for i in 1...5 { ring.append(ObserveEvent(kind: .note, message: "e\(i)"), node: 7) }
        #expect(ring.all.map(\.message) == ["e3", "e4", "e5"])
        #expect(ring.all.map(\.seq) == [3, 4, 5])
        #expect(ring.all.allSatisfy { $0.node == 7 })
        #expect(ring.recorded == 5)
        #expect(ring.events(after: 4).map(\.message) == ["e5"])
        #expect(ring.events(limit: 2).map(\.message) == ["e4", "e5"])
    }

    @Test func mergesNodesByTimeThenNodeThenNumber() {
        let a = [ObserveEvent(kind: .note, message: "a1", time: 10, node: 2, seq: 1), ObserveEvent(kind: .note, message: "a2", time: 30, node: 2, seq: 2)]
        let b = [ObserveEvent(kind: .note, message: "b1", time: 10, node: 1, seq: 1), ObserveEvent(kind: .note, message: "b2", time: 20, node: 1, seq: 2)]
        #expect(ObserveEvent.merge([a, b], limit: 10).map(\.message) == ["b1", "a1", "b2", "a2"])
        #expect(ObserveEvent.merge([a, b], limit: 2).map(\.message) == ["b2", "a2"])
    }

    @Test func eventJSONUsesPlainKindsAndFieldNames() throws {
        let e = ObserveEvent(kind: .checkpointDone, app: 42, seconds: 0.5, bytes: 4096, version: 2, message: "m", time: 1, node: 3, seq: 9)
        let text = String(decoding: try JSONEncoder().encode(e), as: UTF8.self)
        #expect(text.contains(#""kind":"checkpoint-done""#))
        #expect(text.contains(#""app":42"#) && text.contains(#""version":2"#) && text.contains(#""bytes":4096"#))
        #expect(try JSONDecoder().decode(ObserveEvent.self, from: Data(text.utf8)) == e)
        #expect(ObserveEvent.Kind.checkpointFailed.isFailure && !ObserveEvent.Kind.checkpointDone.isFailure)
    }
}

@Suite struct MetricsTests {
    @Test func textParsesAndCountersMoveWithEvents() throws {
        let m = NodeMetrics(node: 4)
        let before = try PromText(m.text())
        #expect(before.value("ssi_checkpoints_total", ["node": "4", "result": "ok"]) == 0)
        m.record(ObserveEvent(kind: .checkpointDone, app: 1, seconds: 0.2, bytes: 1 << 20, version: 1, message: ""))
        m.record(ObserveEvent(kind: .checkpointFailed, app: 1, message: ""))
        m.record(ObserveEvent(kind: .nodeFailed, message: ""))
        m.rpcCall(service: 701, seconds: 0.001, ok: true)
        m.rpcCall(service: 101, seconds: 0.002, ok: false)
        m.kddmOperation("get")
        m.refresh(.init(host: HostSample(load: [1, 2, 3], memoryTotalBytes: 1000, memoryAvailableBytes: 400),
                        nodesByState: ["online": 3, "failed": 1], applicationsByState: ["running": 2], rejectedPeers: 5, eventsKept: 3))
        let p = try PromText(m.text())
        #expect(p.value("ssi_checkpoints_total", ["result": "ok"]) == 1)
        #expect(p.value("ssi_checkpoints_total", ["result": "failed"]) == 1)
        #expect(p.value("ssi_checkpoint_bytes_total") == Double(1 << 20))
        #expect(p.value("ssi_checkpoint_duration_seconds_count") == 1)
        #expect(p.value("ssi_membership_failures_total") == 1)
        #expect(p.value("ssi_rpc_requests_total") == 2)
        #expect(p.value("ssi_rpc_errors_total") == 1)
        #expect(p.value("ssi_rpc_latency_seconds_count") == 2)
        #expect(p.value("ssi_rpc_requests_by_block_total", ["block": "observe"]) == 1)
        #expect(p.value("ssi_kddm_operations_total", ["op": "get"]) == 1)
        #expect(p.value("ssi_node_up") == 1)
        #expect(p.value("ssi_node_load", ["window": "5m"]) == 2)
        #expect(p.value("ssi_node_memory_available_bytes") == 400)
        #expect(p.value("ssi_nodes", ["state": "online"]) == 3 && p.value("ssi_nodes", ["state": "present"]) == 0)
        #expect(p.value("ssi_applications", ["state": "running"]) == 2)
        #expect(p.value("ssi_rpc_rejected_peers_total") == 5)
        #expect(p.types["ssi_checkpoints_total"] == "counter" && p.types["ssi_node_up"] == "gauge")
        #expect(p.types["ssi_rpc_latency_seconds"] == "histogram")
        // A counter read from elsewhere only adds its increase.
        m.refresh(.init(host: HostSample(load: [0, 0, 0], memoryTotalBytes: 0, memoryAvailableBytes: 0),
                        nodesByState: [:], applicationsByState: [:], rejectedPeers: 7, eventsKept: 0))
        #expect(try PromText(m.text()).value("ssi_rpc_rejected_peers_total") == 7)
        #expect(try PromText(m.text()).value("ssi_nodes", ["state": "online"]) == 0)
    }

    @Test func hostSampleParsesProcFiles() {
        let s = HostSample.parse(loadavg: "0.52 0.58 0.59 1/467 12345\n",
                                 meminfo: "MemTotal:       16314388 kB\nMemFree:  1 kB\nMemAvailable:    8157194 kB\n")
        #expect(s.load == [0.52, 0.58, 0.59])
        #expect(s.memoryTotalBytes == 16314388 * 1024 && s.memoryAvailableBytes == 8157194 * 1024)
        #expect(HostSample.read().memoryTotalBytes > 0)
    }
}

@Suite struct TokenTests {
    @Test func tokenIsAnHMACOfTheSecretAndOnlyItIsAccepted() {
        let secret = Array(repeating: UInt8(7), count: 32)
        let t = DashboardToken.derive(secret: secret)
        #expect(t.count == 64 && t == DashboardToken.derive(secret: secret))
        #expect(t != DashboardToken.derive(secret: Array(repeating: UInt8(8), count: 32)))
        #expect(DashboardToken.accepts("Bearer \(t)", secret: secret))
        #expect(!DashboardToken.accepts("Bearer \(t.dropLast())0", secret: secret))
        #expect(!DashboardToken.accepts(t, secret: secret))
        #expect(!DashboardToken.accepts(nil, secret: secret))
        #expect(!DashboardToken.accepts("Bearer ", secret: secret))
    }

    @Test func queryStringsAreSplitAndDecoded() {
        let a = HTTPAsk(method: .GET, uri: "/api/events?limit=5&x=a%20b", authorization: nil, fromLoopback: true, body: [])
        #expect(a.path == "/api/events" && a.query["limit"] == "5" && a.query["x"] == "a b")
    }
}
