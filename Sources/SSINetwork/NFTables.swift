import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// nftables rulesets applied by the node's daemon: steering, a migration's locks and holds.
public enum NFTables {
    /// Applies `ruleset` in one transaction (nft(8) `-f`: every line or none), from a file of
    /// its own under /tmp named after `tag`, removed afterwards. Returns nft's exit status and
    /// what it printed (its complaint, when it refused), for the caller to name what failed.
    public static func apply(_ ruleset: String, tag: String) throws -> (code: Int32, output: String) {
        let file = "/tmp/\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).nft"
        try ruleset.write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        let (code, out) = try Proc.run(["nft", "-f", file], check: false)
        return (code, out.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
