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

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "checkpoint":
        try CheckpointBenchmark(args: Array(args.dropFirst())).run()
    case "incremental":
        try IncrementalBenchmark(args: Array(args.dropFirst())).run()
    case "trees":
        try TreeBenchmark(args: Array(args.dropFirst())).run()
    case "ipc":
        try runIPCBenchmark(args: Array(args.dropFirst()))
    case "balance":
        try BalanceBenchmark(args: Array(args.dropFirst())).run()
    case "migrate":
        try MigrateBenchmark(args: Array(args.dropFirst())).run()
    case "cluster-ip":
        try ClusterIPBenchmark(args: Array(args.dropFirst())).run()
    case "streams":
        try StreamsBenchmark(args: Array(args.dropFirst())).run()
    case "kddm":
        try await runKDDMBenchmark(args: Array(args.dropFirst()))
    default:
        print("usage: \(CheckpointBenchmark.usage) | \(IncrementalBenchmark.usage) | trees [--dir DIR] | ipc | kddm | \(BalanceBenchmark.usage) | \(ClusterIPBenchmark.usage) | \(StreamsBenchmark.usage) | \(MigrateBenchmark.usage)")
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("ssi-bench: \(error)\n".utf8))
    exit(1)
}
