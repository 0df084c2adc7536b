import Foundation
import SSISystem

/// What the benchmarks share before they start: root, the subreaper, a working directory;
/// and the check of a CRIU binary to compare with.
enum BenchArgs {
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
    static func criu(_ path: String) throws -> String {
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

/// A benchmark's options, asked for by name (`--name VALUE`, or a bare flag), each value
/// checked as it is read; `finish()` then refuses any argument nobody asked for. A bad value
/// or an unknown option is refused naming it, with the benchmark's usage.
struct BenchOptions {
    private let args: [String]
    private let usage: String
    private var used = Set<Int>()

    init(_ args: [String], usage: String) { self.args = args; self.usage = usage }

    private func refuse(_ what: String) -> SSIError {
        SSIError(.invalidArgument, what, hint: "usage: ssi-bench \(usage)")
    }

    /// The value after the last `name`, or nil if it is not given.
    mutating func text(_ name: String) throws -> String? {
        guard let i = args.lastIndex(of: name) else { return nil }
        guard i + 1 < args.count, !args[i + 1].hasPrefix("--") else { throw refuse("option \(name) needs a value") }
        used.insert(i); used.insert(i + 1)
        return args[i + 1]
    }

    mutating func int(_ name: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let t = try text(name) else { return value }
        guard let n = Int(t), range.contains(n) else { throw refuse("\(name) \(t): not a whole number from \(range.lowerBound) to \(range.upperBound)") }
        return n
    }

    mutating func double(_ name: String, default value: Double, above low: Double) throws -> Double {
        guard let t = try text(name) else { return value }
        guard let n = Double(t), n > low, n.isFinite else { throw refuse("\(name) \(t): not a number above \(low)") }
        return n
    }

    /// "0,256,1024": sizes in MiB.
    mutating func sizes(_ name: String, default value: [Int]) throws -> [Int] {
        guard let t = try text(name) else { return value }
        let parts = t.split(separator: ",", omittingEmptySubsequences: false)
        let sizes = parts.compactMap { Int($0) }.filter { $0 >= 0 && $0 <= 1 << 20 }
        guard !parts.isEmpty, sizes.count == parts.count else { throw refuse("\(name) \(t): not a list of sizes in MiB separated by commas") }
        return sizes
    }

    mutating func flag(_ name: String) -> Bool {
        guard let i = args.lastIndex(of: name) else { return false }
        used.insert(i)
        return true
    }

    /// Refuses the first argument no option took.
    func finish() throws {
        if let i = args.indices.first(where: { !used.contains($0) }) { throw refuse("unknown argument '\(args[i])'") }
    }
}
