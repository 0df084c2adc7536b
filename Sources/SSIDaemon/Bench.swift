import SSIControl
import SSIKDDM
import SSISystem
import SSITransport

/// The measurements of `ssi-bench kddm` that must run inside a daemon, so that they use its
/// real RPC connections and caches. The raw TCP baseline is measured by ssi-bench itself,
/// from the same network namespace.
struct BenchSubsystem: Subsystem {
    static let name = "bench"
    let core: NodeCore

    init(core: NodeCore, settings: [String: String]) {
        self.core = core
    }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .bench(let r) = request else { throw misrouted(request) }
        return .bench(try await run(peer: r.peer, n: r.iterations))
    }

    static func time(_ body: () async throws -> Void) async rethrows -> Double {
        let t0 = ContinuousClock.now
        try await body()
        let d = ContinuousClock.now - t0
        return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
    }

    func measure(_ name: String, n: Int, before: () async throws -> Void = {}, _ op: () async throws -> Void) async throws -> BenchReport.Series {
        var micros: [Double] = []
        var rpcs = 0
        for _ in 0..<n {
            try await before()
            let c0 = core.rpc.callsSent.load(ordering: .relaxed)
            micros.append(try await Self.time(op))
            rpcs += core.rpc.callsSent.load(ordering: .relaxed) - c0
        }
        return BenchReport.Series(name: name, micros: micros, rpcs: rpcs)
    }

    func run(peer: NodeID, n: Int) async throws -> BenchReport {
        guard peer != core.config.node, let p = core.membership.view[peer], p.state == .online else {
            throw SSIError(.state, "bench needs another online node as peer (node \(peer) is not)", hint: "ssi nodes status lists them")
        }
        let set = "bench-\(peer)"
        let (k, rpc) = (core.kddm, core.rpc)
        try await k.createSet(set, rule: .fixed(peer))
        _ = try await k.grab(set, 1)
        try await k.put(set, 1, Array(repeating: UInt8(ascii: "x"), count: 64))
        _ = try await k.get(set, 1)
        var results: [BenchReport.Series] = []
        results.append(try await measure("get (cached)", n: n) { _ = try await k.get(set, 1) })
        results.append(try await measure("get (uncached)", n: n, before: { await k.flush() }) { _ = try await k.get(set, 1) })
        results.append(try await measure("grab+put", n: min(n, 1000)) {
            _ = try await k.grab(set, 2)
            try await k.put(set, 2, Array(repeating: UInt8(ascii: "y"), count: 64))
        })
        // The put alone (the grab taken before the clock starts), as a migration's take-over
        // of its record does; and the store's part of it, a write to etcd from this daemon.
        results.append(try await measure("put (grab held)", n: min(n, 1000), before: { _ = try await k.grab(set, 3) }) {
            try await k.put(set, 3, Array(repeating: UInt8(ascii: "z"), count: 64))
        })
        let etcd = core.etcd, benchKey = core.membership.prefix + "bench/\(core.config.node)"
        results.append(try await measure("etcd put (this daemon's client)", n: min(n, 1000)) {
            try await etcd.put(benchKey, Array(repeating: UInt8(ascii: "e"), count: 64))
        })
        try? await etcd.delete(benchKey)
        let ping = [UInt8](repeating: 7, count: 64)
        // The daemon's services (KDDM, request handlers) run on the RPC loop, so that is where
        // the round trip is measured; the second row is a caller on the global pool, which
        // pays two thread wake-ups more (loop to write, pool thread to resume).
        results.append(try await withTaskExecutorPreference(rpc.taskExecutor) {
            try await measure("rpc round trip (64 B)", n: n) { _ = try await rpc.call(peer, service: TransportService.ping, ping) }
        })
        results.append(try await measure("rpc rt, caller on the pool", n: n) {
            _ = try await rpc.call(peer, service: TransportService.ping, ping)
        })
        return BenchReport(from: core.config.node, to: peer, results: results)
    }
}
