// ssi-bench: benchmarks that print numbers (they are not tests). Run with -c release:
//   swift run -c release ssi-bench checkpoint [--mib 1024] [--dir /dev/shm/ssi-bench]
import Foundation

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "checkpoint":
        try CheckpointBenchmark(args: Array(args.dropFirst())).run()
    default:
        print("usage: ssi-bench checkpoint [--mib N] [--dir DIR] [--runs N]")
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("ssi-bench: \(error)\n".utf8))
    exit(1)
}
