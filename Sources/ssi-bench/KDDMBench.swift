// `ssi-bench kddm`: KDDM and RPC figures on the local cluster (ssi cluster up --nodes 3 first).
//   ssi-bench kddm [--from 1] [--to 2] [-n 2000]
import SSIDaemon

func runKDDMBenchmark(args: [String]) async throws {
    try KDDMBenchmark.run(args: args)
}
