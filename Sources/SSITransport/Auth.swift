import Crypto

/// The handshake's proof: each side MACs the nonce the other chose, with both node ids in a
/// fixed order so that a proof cannot be reflected back to its sender.
public struct RPCAuth: Sendable {
    /// The secret's bytes; a SymmetricKey is made per proof (it is not Sendable in Crypto 3).
    let secret: [UInt8]
    public let session: UInt64

    public init(secret: [UInt8], session: UInt64) {
        self.secret = secret
        self.session = session
    }

    func proof(from: NodeID, to: NodeID, challenge: [UInt8], own: [UInt8]) -> [UInt8] {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        mac.update(data: Array("ssi-rpc-v1".utf8))
        mac.update(data: withUnsafeBytes(of: session.bigEndian) { Array($0) })
        mac.update(data: [from, to])
        mac.update(data: challenge)
        mac.update(data: own)
        return Array(mac.finalize())
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }
}
