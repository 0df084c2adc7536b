import CSSILinux

/// CRC-32C (Castagnoli), the checksum of every snapshot and IPC file, computed with the
/// SSE4.2 crc32 instruction (`cssi_crc32c`).
public enum CRC32C {
    /// The CRC of `bytes` following data whose CRC was `crc` (start with 0).
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return cssi_crc32c(crc, base, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { update(0, $0) } }

    /// The CRC of A followed by B, from crc(A), crc(B) and the length of B.
    public static func combine(_ a: UInt32, _ b: UInt32, lengthOfB: UInt64) -> UInt32 { cssi_crc32c_combine(a, b, lengthOfB) }
}
