import Foundation
import SSIControl
import SSILocalCluster
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .enabled(if: canRunCluster, Comment(rawValue: whyNot)),
       .enabled(if: Postgres.bin != nil && Postgres.user != nil, Comment(rawValue: Postgres.whyNot)))
struct RealProgramClusterTests {
    /// PostgreSQL (a postmaster and six workers sharing anonymous, SysV and POSIX shared
    /// memory, talking to clients on a unix socket in a directory every node sees) moved
    /// 1 -> 2 -> 3 -> 1 while it runs: after each move it has every row and takes a write,
    /// and every node's `ssi ps` says where it is.
    @Test(.timeLimit(.minutes(3))) func postgresMovesAroundTheCluster() throws {
        let bin = try #require(Postgres.bin), user = try #require(Postgres.user)
        let home = try TestEnv.makeTempDir("pgcluster")
        defer { try? FileManager.default.removeItem(atPath: home) }
        chmod(home, 0o755)
        chown(home, user.uid, user.gid)
        let asPostgres = Postgres.asUser
        let initdb = try Proc.run(asPostgres + ["\(bin)/initdb", "-D", "\(home)/data", "--no-sync"], check: false)
        try #require(initdb.0 == 0, "initdb: \(initdb.1)")
        try up()
        defer { try? down() }
        let port = "\(Int.random(in: 20000...29999))"
        let app = try #require(appID(try ssiOK(["run", "--node", "1", "-b", "--log", "--"] + asPostgres
            + ["\(bin)/postgres", "-D", "\(home)/data", "-k", home, "-p", port, "-c", "listen_addresses=", "-c", "fsync=off"])))
        defer { _ = try? ssi("kill", "\(app)", "--signal", "INT"); usleep(1_500_000) }
        func sql(_ text: String) throws -> String {
            var last = ""
            for _ in 0..<50 {
                let r = try Proc.run(asPostgres + ["psql", "-h", home, "-p", port, "-d", "postgres", "-Atc", text], check: false)
                if r.0 == 0 { return r.1.split(separator: "\n").last.map(String.init) ?? "" }
                last = r.1
                usleep(200_000)
            }
            return "psql failed: \(last)"
        }
        #expect(try sql("create table t (x int); insert into t select generate_series(1, 1000); select sum(x) from t") == "500500")
        _ = try ssiOK("caps", "\(app)", "+CAN_MIGRATE")
        var sum = 500500
        for (k, target) in [2, 3, 1].enumerated() {
            let out = try ssiOK("migrate", "\(app)", "\(target)")
            #expect(out.contains("to node \(target)"), "\(out)")
            sum += target
            #expect(try sql("insert into t values (\(target)); select sum(x), count(*) from t") == "\(sum)|\(1001 + k)", "after the move to node \(target)")
            for n in 1...3 { #expect(try psJSON(node: n).filter { $0.app == app }.map(\.node) == [UInt8(target)], "node \(n)'s ssi ps") }
        }
    }
}
