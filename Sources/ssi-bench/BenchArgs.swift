import Foundation
import SSISystem

/// Option parsing shared by the benchmarks: every bad value is refused with what to type.
enum BenchArgs {
    /// The value after option `args[i]`.
    static func value(_ args: [String], _ i: Int) throws -> String {
        guard i + 1 < args.count, !args[i + 1].hasPrefix("--") else {
            throw SSIError(.invalidArgument, "option \(args[i]) needs a value", hint: "run ssi-bench with no arguments to see the options")
        }
        return args[i + 1]
    }

    static func int(_ args: [String], _ i: Int, min: Int) throws -> Int {
        let text = try value(args, i)
        guard let n = Int(text), n >= min else {
            throw SSIError(.invalidArgument, "\(args[i]) \(text): not a whole number of at least \(min)", hint: "e.g. \(args[i]) \(max(min, 5))")
        }
        return n
    }

    /// "0,256,1024": sizes in MiB.
    static func sizes(_ args: [String], _ i: Int) throws -> [Int] {
        let text = try value(args, i)
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        let sizes = parts.compactMap { Int($0) }.filter { $0 >= 0 && $0 <= 1 << 20 }
        guard !parts.isEmpty, sizes.count == parts.count else {
            throw SSIError(.invalidArgument, "\(args[i]) \(text): not a list of sizes in MiB", hint: "give them separated by commas, e.g. \(args[i]) 0,256,1024")
        }
        return sizes
    }

    /// What a benchmark of processes needs first: root, to be the subreaper (restored
    /// processes and those of killed trees are reparented to us, and PID 1 may not reap
    /// them), and an empty working directory (the caller removes it at the end).
    static func prepare(_ what: String, directory dir: String) throws {
        try requireRoot(what)
        Prctl.becomeSubreaper()
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    /// A CRIU binary to compare with: an executable file.
    static func criu(_ args: [String], _ i: Int) throws -> String {
        let path = try value(args, i)
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw SSIError(.notFound, "--compare-criu \(path): no such file",
                           hint: "give the path of a CRIU binary (4.x built from source: Debian's 3.17 does not run on this kernel)")
        }
        guard st.st_mode & S_IFMT == S_IFREG, st.st_mode & 0o111 != 0, access(path, X_OK) == 0 else {
            throw SSIError(.invalidArgument, "--compare-criu \(path): not an executable file",
                           hint: "give the path of the criu binary itself (criu/criu in its build tree)")
        }
        return path
    }
}
