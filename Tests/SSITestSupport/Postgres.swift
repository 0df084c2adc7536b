import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// This Debian's PostgreSQL server, for the real-program tests of both test targets: the
/// newest /usr/lib/postgresql/N/bin with a `postgres` binary, and the `postgres` user the
/// server must run as (it refuses root). nil when either is missing.
public enum Postgres {
    public static let bin: String? = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        return versions.map { "\(root)/\($0)/bin" }.first { FileManager.default.isExecutableFile(atPath: "\($0)/postgres") }
    }()
    public static let user: (uid: uid_t, gid: gid_t)? = getpwnam("postgres").map { ($0.pointee.pw_uid, $0.pointee.pw_gid) }
    /// The argv prefix that runs a command as that user.
    public static let asUser = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    public static let whyNot = "needs PostgreSQL and its postgres user (scripts/setup.sh installs the postgresql package)"
}
