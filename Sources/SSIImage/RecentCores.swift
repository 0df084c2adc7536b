import Dispatch
import Foundation
import SSISystem
import Synchronization

/// Core files a migration's target has just received, decoded as they arrive, for the
/// restore that follows at once (`SnapshotFormat.decodeProcesses`): decoding JSON is
/// 1.5 ms for a two-process application and 5-7 ms for a large one, which the frozen time
/// paid after the commit; begun at each core file's finish, it runs while the source dumps
/// the next process and commits.
///
/// Keyed by content (name, size and CRC-32C of the core file and of its blob file, as the
/// manifest lists them): a decoded image is used only for the very bytes it came from. Each
/// is taken once; only the last few are kept.
public enum RecentCores {
    final class Decoding: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        var result: Result<ProcessImage, Error>?
    }

    private static let decodings = Mutex<[(key: String, decoding: Decoding)]>([])
    static let kept = 32

    static func key(core: FileEntry, blobs: FileEntry?) -> String {
        "\(core.name)|\(core.size)|\(core.crc32c)|\(blobs.map { "\($0.size)|\($0.crc32c)" } ?? "-")"
    }

    /// Begins decoding `core` (its bytes), with its blob file when it has one, on another
    /// thread.
    public static func decode(core: FileEntry, bytes: [UInt8], blobs: (entry: FileEntry, bytes: [UInt8])?) {
        let d = Decoding()
        let key = key(core: core, blobs: blobs?.entry)
        decodings.withLock { all in
            all.removeAll { $0.key == key }
            all.append((key, d))
            if all.count > kept { all.removeFirst(all.count - kept) }
        }
        DispatchQueue.global(qos: .userInitiated).async {
            let dec = JSONDecoder()
            if let blobs { dec.userInfo[Blobs.key] = BlobSource(bytes: blobs.bytes, name: blobs.entry.name) }
            d.result = Result { try dec.decode(ProcessImage.self, from: Data(bytes)) }
            d.done.signal()
        }
    }

    /// The image decoded from exactly these files, waiting for a decoding under way; nil
    /// when none was begun or it failed (the caller decodes the file itself and reports).
    static func take(core: FileEntry, blobs: FileEntry?) -> ProcessImage? {
        let key = key(core: core, blobs: blobs)
        guard let d = decodings.withLock({ all in all.firstIndex { $0.key == key }.map { all.remove(at: $0).decoding } }) else { return nil }
        d.done.wait()
        return try? d.result?.get()
    }

    /// Whether a decoding of exactly these files was begun and not taken yet (tests).
    static func holds(core: FileEntry, blobs: FileEntry?) -> Bool {
        let key = key(core: core, blobs: blobs)
        return decodings.withLock { $0.contains { $0.key == key } }
    }

    /// Whether a file of a snapshot is one that `decode` wants (core files and blob files).
    public static func wants(_ name: String) -> Bool {
        (name.hasPrefix("core-") && name.hasSuffix(".json")) || (name.hasPrefix("blobs-") && name.hasSuffix(".img"))
    }
}
