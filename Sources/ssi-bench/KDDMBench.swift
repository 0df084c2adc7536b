// `ssi-bench kddm`: KDDM and RPC figures on the local cluster (ssi cluster up --nodes 3 first).
//   ssi-bench kddm [--from 1] [--to 2] [-n 2000]
import Foundation
import SSICluster
import SSIDaemon

func runKDDMBenchmark(args: [String]) async throws {
    var from = 1, to = 2, n = 2000
    var i = 0
    while i < args.count {
        let v = i + 1 < args.count ? Int(args[i + 1]) : nil
        switch args[i] {
        case "--from": from = v ?? from
        case "--to": to = v ?? to
        case "-n": n = v ?? n
        default: throw ClusterError.config("usage: ssi-bench kddm [--from NODE] [--to NODE] [-n COUNT]")
        }
        i += 2
    }
    let lc = LocalCluster()
    guard lc.plan() != nil else { throw ClusterError.config("no local cluster: run ssi cluster up --nodes 3 first") }
    let r = try ControlClient.request(socket: lc.socket(node: from), ["op": "bench", "peer": to, "n": n], timeout: 600) as? [String: Any]
    print("kddm/rpc benchmark: node \(from) -> node \(to) (owner), \(n) iterations, \(lc.plan()!.netns ? "network namespaces" : "loopback")")
    print("operation".padding(toLength: 28, withPad: " ", startingAt: 0) + "     p50 us     p99 us      ops/s   RPCs/op")
    for row in (r?["results"] as? [[String: Any]]) ?? [] {
        let name = (row["name"] as? String ?? "").padding(toLength: 28, withPad: " ", startingAt: 0)
        func d(_ k: String) -> Double { (row[k] as? NSNumber)?.doubleValue ?? 0 }
        print(name + String(format: " %10.1f %10.1f %10.0f %9.2f", d("p50_us"), d("p99_us"), d("ops_per_s"), d("rpcs_per_op")))
    }
}
