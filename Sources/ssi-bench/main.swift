// ssi-bench: benchmarks that print numbers (they are not tests). Run with -c release, as root:
//   swift run -c release ssi-bench checkpoint [--sizes 0,256,1024] [--rounds 5] [--dirty PAGES_PER_MS] [--compare-criu PATH]
//   swift run -c release ssi-bench incremental [--mib 256] [--rounds 3]
//   swift run -c release ssi-bench trees
//   swift run -c release ssi-bench ipc
//   swift run -c release ssi-bench kddm
//   swift run -c release ssi-bench balance [--jobs 12] [--cpus 0.5]
//   swift run -c release ssi-bench migrate [--sizes 0,256,1024] [--dirty 20] [--moves 3]
//   swift run -c release ssi-bench cluster-ip [--seconds 3] [--rounds 3] [--window 1] [--migrate]
//   swift run -c release ssi-bench streams [--seconds 3] [--rounds 3]
import Foundation

/// Each benchmark by name: its usage and how it runs on the arguments after its name.
let benchmarks: [(name: String, usage: String, run: ([String]) async throws -> Void)] = [
    ("checkpoint", CheckpointBenchmark.usage, { try CheckpointBenchmark(args: $0).run() }),
    ("incremental", IncrementalBenchmark.usage, { try IncrementalBenchmark(args: $0).run() }),
    ("trees", TreeBenchmark.usage, { try TreeBenchmark(args: $0).run() }),
    ("ipc", IPCBenchOptions.usage, { try runIPCBenchmark(args: $0) }),
    ("kddm", "kddm", { try await runKDDMBenchmark(args: $0) }),
    ("balance", BalanceBenchmark.usage, { try BalanceBenchmark(args: $0).run() }),
    ("migrate", MigrateBenchmark.usage, { try MigrateBenchmark(args: $0).run() }),
    ("cluster-ip", ClusterIPBenchmark.usage, { try ClusterIPBenchmark(args: $0).run() }),
    ("streams", StreamsBenchmark.usage, { try StreamsBenchmark(args: $0).run() }),
]

let args = Array(CommandLine.arguments.dropFirst())
guard let bench = benchmarks.first(where: { $0.name == args.first }) else {
    print("usage: ssi-bench " + benchmarks.map(\.usage).joined(separator: "\n       ssi-bench "))
    exit(2)
}
do {
    try await bench.run(Array(args.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("ssi-bench: \(error)\n".utf8))
    exit(1)
}
