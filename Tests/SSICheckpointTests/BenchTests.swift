import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The benchmarks refuse bad options before they start anything, through one option reader
/// (BenchOptions); no CRIU binary is installed here: --compare-criu is tested for its
/// argument errors only.
@Suite struct BenchArgumentTests {
    static var bench: String { "\(TestEnv.productsDir)/ssi-bench" }

    @Test("bad options are refused with what to type", arguments: [
        (["checkpoint", "--compare-criu", "/nonexistent/criu"], "--compare-criu /nonexistent/criu: no such file"),
        (["checkpoint", "--compare-criu", "/etc"], "--compare-criu /etc: not an executable file"),
        (["checkpoint", "--compare-criu", "/dev/null"], "--compare-criu /dev/null: not an executable file"),
        (["checkpoint", "--compare-criu"], "option --compare-criu needs a value"),
        (["checkpoint", "--rounds", "0"], "--rounds 0: not a whole number from 1 to 10000"),
        (["checkpoint", "--rounds"], "option --rounds needs a value"),
        (["checkpoint", "--sizes", "0,abc"], "--sizes 0,abc: not a list of sizes in MiB"),
        (["checkpoint", "--sizes", "-5"], "--sizes -5: not a list of sizes in MiB"),
        (["checkpoint", "--frobnicate"], "unknown argument '--frobnicate'"),
        (["migrate", "--moves", "x"], "--moves x: not a whole number from 1 to 1000"),
        (["balance", "--min", "2", "--max", "1"], "--max 1.0 is below --min 2.0"),
        (["cluster-ip", "--window", "0"], "--window 0: not a whole number from 1 to 1024"),
        (["streams", "--seconds", "-1"], "--seconds -1: not a number above 0.999"),
        (["ipc", "--touched-percent", "abc"], "--touched-percent abc: not a number above 0.0"),
    ])
    func refused(args: [String], message: String) throws {
        let r = try run([BenchArgumentTests.bench] + args)
        #expect(r.status != 0, "\(args) accepted: \(r.output)")
        #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
        #expect(r.stderr.contains("hint:"), "\(args): no hint: \(r.stderr)")
    }

    @Test("--compare-criu refuses a file that is not executable")
    func notExecutable() throws {
        let dir = try TestEnv.makeTempDir("bench")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/criu"
        try Data("not a program".utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o644)
        let r = try run([BenchArgumentTests.bench, "checkpoint", "--compare-criu", path])
        #expect(r.status != 0 && r.stderr.contains("--compare-criu \(path): not an executable file"), "\(r.output)")
    }
}
