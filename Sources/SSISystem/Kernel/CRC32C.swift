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

    /// For each 4096-byte page of `bytes` (a whole number of pages), its content hash into
    /// `hashes` (CRC-32C of the first half in the high 32 bits, of the second in the low);
    /// returns the CRC of `crc`'s data followed by `bytes`. One pass (`cssi_crc32c_pages`).
    public static func pages(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer, hashes: UnsafeMutableBufferPointer<UInt64>) -> UInt32 {
        let n = bytes.count / 4096
        precondition(n * 4096 == bytes.count && hashes.count >= n, "whole pages, one hash each")
        guard n > 0 else { return crc }
        return cssi_crc32c_pages(crc, bytes.baseAddress!, n, hashes.baseAddress!)
    }

    /// One 4096-byte page's content hash (what `pages` gives for it).
    public static func pageHash(_ page: UnsafeRawPointer) -> UInt64 { cssi_crc32c_page_hash(page) }

    /// What `pages` returns for pages whose hashes are `hashes`, without their bytes.
    public static func fromHashes(_ crc: UInt32, _ hashes: UnsafeBufferPointer<UInt64>) -> UInt32 {
        guard let base = hashes.baseAddress, hashes.count > 0 else { return crc }
        return cssi_crc32c_from_hashes(crc, base, hashes.count)
    }

    /// The CRC of A followed by B, from crc(A), crc(B) and the length of B.
    public static func combine(_ a: UInt32, _ b: UInt32, lengthOfB: UInt64) -> UInt32 { cssi_crc32c_combine(a, b, lengthOfB) }
}
