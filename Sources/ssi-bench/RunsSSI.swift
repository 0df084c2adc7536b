import Foundation
import SSISystem

/// Benchmarks that drive the cluster with the `ssi` command next to ssi-bench (the same
/// build), as a user would.
protocol RunsSSI {}

extension RunsSSI {
    var ssiPath: String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("ssi").path
    }

    /// Scheduler settings with the policy `none` (no placement, no migration), written in
    /// `dir`: a benchmark that moves applications itself loads them on every node, so that
    /// load balancing does not move them meanwhile.
    func noScheduling(in dir: String) throws -> String {
        let path = "\(dir)/none.xml"
        try "<scheduler><probe name=\"cpu\" type=\"cpu\"/><configuration name=\"none\" selector=\"otherwise\"><policy name=\"none\" type=\"none\"/></configuration></scheduler>\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Runs `ssi ARGS`; its output, or an error carrying it when it fails.
    @discardableResult
    func ssi(_ args: [String]) throws -> String {
        let r = try Proc.run([ssiPath] + args, check: false)
        guard r.0 == 0 else { throw SSIError(.system, "ssi \(args.joined(separator: " ")) failed: \(r.1)") }
        return r.1
    }
}
