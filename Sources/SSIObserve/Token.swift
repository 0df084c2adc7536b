import Crypto
import Foundation

/// The dashboard's bearer token: HMAC-SHA256 of a fixed label under the cluster secret, in hex.
/// Every node derives the same token from the same secret, so `ssi dashboard token` on any
/// machine that holds the secret prints the token every node accepts, and nothing new has to
/// be stored or distributed. The label keeps it apart from the RPC handshake's MACs, which
/// use the same secret (SSITransport/Auth.swift).
public enum DashboardToken {
    static let label = Array("swiftssi dashboard token v1".utf8)

    public static func derive(secret: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: label, using: SymmetricKey(data: secret))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    /// Whether an `Authorization` header carries the token. The comparison takes the same time
    /// wherever the first difference is, so the token cannot be guessed byte by byte.
    public static func accepts(_ header: String?, secret: [UInt8]) -> Bool {
        guard let header, header.hasPrefix("Bearer ") else { return false }
        let given = Array(header.dropFirst("Bearer ".count).trimmingCharacters(in: .whitespaces).utf8)
        let want = Array(derive(secret: secret).utf8)
        guard given.count == want.count else { return false }
        var diff: UInt8 = 0
        for (a, b) in zip(given, want) { diff |= a ^ b }
        return diff == 0
    }
}
