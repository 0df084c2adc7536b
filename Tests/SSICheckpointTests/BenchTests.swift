import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ssi-bench checkpoint` refuses bad options before it starts anything (no CRIU binary is
/// installed here: --compare-criu is tested for its argument errors only).
@Suite struct BenchArgumentTests {
    static var bench: String { "\(TestEnv.productsDir)/ssi-bench" }

    @Test("bad options are refused with what to type", arguments: [
        (["--compare-criu", "/nonexistent/criu"], "--compare-criu /nonexistent/criu: no such file"),
        (["--compare-criu", "/etc"], "--compare-criu /etc: not an executable file"),
        (["--compare-criu", "/dev/null"], "--compare-criu /dev/null: not an executable file"),
        (["--compare-criu"], "option --compare-criu needs a value"),
        (["--rounds", "0"], "--rounds 0: not a whole number of at least 1"),
        (["--rounds"], "option --rounds needs a value"),
        (["--sizes", "0,abc"], "--sizes 0,abc: not a list of sizes in MiB"),
        (["--sizes", "-5"], "--sizes -5: not a list of sizes in MiB"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ])
    func refused(args: [String], message: String) throws {
        let r = try run([BenchArgumentTests.bench, "checkpoint"] + args)
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
