import Foundation

// The snapshot format (Schema.swift), memory: an mm's fields, its areas and their saved page runs.

/// The mm_struct fields restored with prctl(PR_SET_MM, PR_SET_MM_MAP) (prctl(2)).
public struct MMFields: Codable, Sendable, Equatable {
    public var startCode: UInt64 = 0, endCode: UInt64 = 0, startData: UInt64 = 0, endData: UInt64 = 0
    public var startBrk: UInt64 = 0, brk: UInt64 = 0, startStack: UInt64 = 0
    public var argStart: UInt64 = 0, argEnd: UInt64 = 0, envStart: UInt64 = 0, envEnd: UInt64 = 0
    public var auxv: [UInt64] = []
    public init() {}
}

/// An area's page runs in a core file: a JSON array of `[address, count, fileOffset]` while
/// they are few (a person reads them), packed into one string from `packedFrom` runs on. A
/// pre-copied process has one run per page written during the rounds, tens of thousands:
/// encoding and decoding them as JSON arrays took 60 and 66 ms of a 1 GiB migration's frozen
/// time. Format 9 packed them as base64 of little-endian u64 triples (24 bytes a run: still
/// 15-20 ms each way for 1 GiB, most of it the JSON string's size); format 10 writes "d:" and
/// base64 of three LEB128 varints per run, each the zigzag-encoded difference from where the
/// previous run ended (address, then count, then file offset): a page written during the
/// rounds is 4 to 6 bytes instead of 24. Both forms are read.
public enum PageRuns {
    public static let packedFrom = 64
    static let deltaPrefix = "d:"

    static func encode(_ runs: [PageRun], to c: inout KeyedEncodingContainer<VMA.CodingKeys>, forKey key: VMA.CodingKeys, sink: BlobSink?) throws {
        guard runs.count >= packedFrom else { try c.encode(runs, forKey: key); return }
        // Version 12: the packed bytes go, as they are, to the process's blob file, and the
        // core file names them: `{"blob": [offset, length]}`. As base64 inside the JSON, a
        // pre-copied 1 GiB process's 290 KB string cost 2 ms to encode on the source and
        // 3.5-8 ms to decode on the target (Foundation's JSONDecoder scans it byte by byte),
        // both inside a migration's frozen time.
        let packed = packDeltas(runs)
        if let sink {
            try c.encode(Blobs.Reference(blob: sink.add(packed)), forKey: key)
            return
        }
        try c.encode(deltaPrefix + Data(packed).base64EncodedString(), forKey: key)
    }

    static func decode(from c: KeyedDecodingContainer<VMA.CodingKeys>, forKey key: VMA.CodingKeys, blobs: BlobSource?) throws -> [PageRun]? {
        guard c.contains(key), !(try c.decodeNil(forKey: key)) else { return nil }
        if let ref = try? c.decode(Blobs.Reference.self, forKey: key) {
            switch Blobs.bytes(of: ref, in: blobs) {
            case .failure(let p): throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "page runs: \(p.what)")
            case .success(let b):
                guard let runs = unpackDeltas(b) else {
                    throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "page runs at \(ref.blob) of \(blobs?.name ?? "the blob file") are not varint triples")
                }
                return runs
            }
        }
        guard let text = try? c.decode(String.self, forKey: key) else { return try c.decode([PageRun].self, forKey: key) }
        if text.hasPrefix(deltaPrefix) {
            guard let data = Data(base64Encoded: String(text.dropFirst(deltaPrefix.count))), let runs = unpackDeltas([UInt8](data)) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "packed page runs are not base64 of varint triples")
            }
            return runs
        }
        guard let data = Data(base64Encoded: text), data.count % 24 == 0 else {
            throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "packed page runs are not base64 of 24-byte records")
        }
        return data.withUnsafeBytes { b in
            (0..<(data.count / 24)).map { i in
                PageRun(address: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24, as: UInt64.self)),
                        count: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24 + 8, as: UInt64.self)),
                        fileOffset: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i * 24 + 16, as: UInt64.self)))
            }
        }
    }

    /// Three varints per run: zigzag(address - end of the previous run), count,
    /// zigzag(fileOffset - end of the previous run in the file). Wrapping arithmetic: any
    /// u64 values come back exactly.
    static func packDeltas(_ runs: [PageRun]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(runs.count * 6)
        func put(_ v: UInt64) {
            var v = v
            while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
            out.append(UInt8(v))
        }
        func zigzag(_ d: UInt64) -> UInt64 { let s = Int64(bitPattern: d); return UInt64(bitPattern: (s << 1) ^ (s >> 63)) }
        var (addressEnd, fileEnd) = (UInt64(0), UInt64(0))
        for r in runs {
            put(zigzag(r.address &- addressEnd))
            put(r.count)
            put(zigzag(r.fileOffset &- fileEnd))
            addressEnd = r.address &+ r.count &* SnapshotFormat.pageSize
            fileEnd = r.fileOffset &+ r.count &* SnapshotFormat.pageSize
        }
        return out
    }

    /// The runs of `packDeltas`; nil if the bytes end inside a run or a varint is too long.
    static func unpackDeltas(_ bytes: some RandomAccessCollection<UInt8>) -> [PageRun]? {
        // Arrays and their slices always have contiguous storage; anything else is copied.
        guard let r = bytes.withContiguousStorageIfAvailable({ unpackDeltas(buffer: $0) }) else { return unpackDeltas(Array(bytes)) }
        return r
    }

    private static func unpackDeltas(buffer b: UnsafeBufferPointer<UInt8>) -> [PageRun]? {
        var i = 0
        func get() -> UInt64? {
            var v: UInt64 = 0, shift: UInt64 = 0
            while i < b.count, shift < 64 {
                let byte = b[i]
                i += 1
                v |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return v }
                shift += 7
            }
            return nil
        }
        func unzigzag(_ z: UInt64) -> UInt64 { UInt64(bitPattern: Int64(bitPattern: z >> 1) ^ -Int64(bitPattern: z & 1)) }
        var runs = [PageRun]()
        runs.reserveCapacity(b.count / 4)
        var (addressEnd, fileEnd) = (UInt64(0), UInt64(0))
        while i < b.count {
            guard let da = get(), let count = get(), let df = get() else { return nil }
            let r = PageRun(address: addressEnd &+ unzigzag(da), count: count, fileOffset: fileEnd &+ unzigzag(df))
            runs.append(r)
            addressEnd = r.address &+ r.count &* SnapshotFormat.pageSize
            fileEnd = r.fileOffset &+ r.count &* SnapshotFormat.pageSize
        }
        return runs
    }
}

/// One virtual memory area, as /proc/PID/maps and smaps describe it.
public struct VMA: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case anonymous, file, vdso, vvar, vvarVclock = "vvar_vclock", sysvShm = "sysv_shm"
    }
    public var start: UInt64
    public var end: UInt64
    public var read: Bool, write: Bool, exec: Bool, shared: Bool
    public var kind: Kind
    /// "[heap]", "[stack]", a file path, "/SYSV0000002a (deleted)"...
    public var name: String
    public var path: String?
    public var fileOffset: UInt64
    /// smaps VmFlags we restore: gd (grows down), dc (dontfork), dd (dontdump), hg/nh (huge page advice), wf (wipe on fork).
    public var vmFlags: [String]
    public var sysvShmID: Int32?
    /// A SysV segment that had been removed (IPC_RMID) while attached, in ssi's own IPC
    /// namespace: it dies with the application, so its content is in this snapshot file
    /// (SSIIPC's format), made again for the restart and removed again once attached.
    public var removedSegmentFile: String?
    /// Version 2: set when the mapped file was unlinked or is a memfd: the DeletedFile id.
    public var deletedFileID: String?
    /// The mapped file's size and modification time (seconds) at checkpoint, for the files
    /// of executable areas (programs and libraries): a restart refuses to map a file that has
    /// changed since (a package upgrade), whose code and data would not be the process's.
    /// Nil in older snapshots and for other files.
    public var fileSize: Int64?
    public var fileMTime: Int64?
    /// Version 2: the same area exists in the parent, and the pages the two still share
    /// copy-on-write are not saved here: restart forks this process from its restored parent
    /// and keeps the area, so they stay shared. `pages` are this process's own pages;
    /// `dropPages` are pages the parent has and this process does not (zero or file content).
    public var inherited: Bool?
    public var dropPages: [PageRun]?
    /// Saved pages: runs of consecutive pages and where they start in the pages file.
    public var pages: [PageRun]
    /// Guard regions (madvise(2) MADV_GUARD_INSTALL, Linux 6.13): [address, page count] of
    /// each run, where a touch raises SIGSEGV; installed again at restart. nil: none.
    public var guardPages: [[UInt64]]?

    public init(start: UInt64, end: UInt64, read: Bool, write: Bool, exec: Bool, shared: Bool, kind: Kind, name: String,
                path: String?, fileOffset: UInt64, vmFlags: [String]) {
        self.start = start; self.end = end; self.read = read; self.write = write; self.exec = exec; self.shared = shared
        self.kind = kind; self.name = name; self.path = path; self.fileOffset = fileOffset; self.vmFlags = vmFlags
        self.sysvShmID = nil; self.pages = []
    }

    public enum CodingKeys: String, CodingKey {
        case start, end, read, write, exec, shared, kind, name, path, fileOffset, vmFlags, sysvShmID, deletedFileID, inherited, dropPages, pages
        case fileSize, fileMTime, guardPages, removedSegmentFile
    }

    /// As the synthesized coding (absent optionals left out), the runs as PageRuns says.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        start = try c.decode(UInt64.self, forKey: .start)
        end = try c.decode(UInt64.self, forKey: .end)
        read = try c.decode(Bool.self, forKey: .read)
        write = try c.decode(Bool.self, forKey: .write)
        exec = try c.decode(Bool.self, forKey: .exec)
        shared = try c.decode(Bool.self, forKey: .shared)
        kind = try c.decode(Kind.self, forKey: .kind)
        name = try c.decode(String.self, forKey: .name)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        fileOffset = try c.decode(UInt64.self, forKey: .fileOffset)
        vmFlags = try c.decode([String].self, forKey: .vmFlags)
        sysvShmID = try c.decodeIfPresent(Int32.self, forKey: .sysvShmID)
        deletedFileID = try c.decodeIfPresent(String.self, forKey: .deletedFileID)
        inherited = try c.decodeIfPresent(Bool.self, forKey: .inherited)
        fileSize = try c.decodeIfPresent(Int64.self, forKey: .fileSize)
        fileMTime = try c.decodeIfPresent(Int64.self, forKey: .fileMTime)
        guardPages = try c.decodeIfPresent([[UInt64]].self, forKey: .guardPages)
        removedSegmentFile = try c.decodeIfPresent(String.self, forKey: .removedSegmentFile)
        let blobs = decoder.userInfo[Blobs.key] as? BlobSource
        dropPages = try PageRuns.decode(from: c, forKey: .dropPages, blobs: blobs)
        guard let p = try PageRuns.decode(from: c, forKey: .pages, blobs: blobs) else {
            throw DecodingError.keyNotFound(CodingKeys.pages, .init(codingPath: c.codingPath, debugDescription: "an area without its pages"))
        }
        pages = p
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(start, forKey: .start)
        try c.encode(end, forKey: .end)
        try c.encode(read, forKey: .read)
        try c.encode(write, forKey: .write)
        try c.encode(exec, forKey: .exec)
        try c.encode(shared, forKey: .shared)
        try c.encode(kind, forKey: .kind)
        try c.encode(name, forKey: .name)
        try c.encodeIfPresent(path, forKey: .path)
        try c.encode(fileOffset, forKey: .fileOffset)
        try c.encode(vmFlags, forKey: .vmFlags)
        try c.encodeIfPresent(sysvShmID, forKey: .sysvShmID)
        try c.encodeIfPresent(deletedFileID, forKey: .deletedFileID)
        try c.encodeIfPresent(inherited, forKey: .inherited)
        try c.encodeIfPresent(fileSize, forKey: .fileSize)
        try c.encodeIfPresent(fileMTime, forKey: .fileMTime)
        try c.encodeIfPresent(guardPages, forKey: .guardPages)
        try c.encodeIfPresent(removedSegmentFile, forKey: .removedSegmentFile)
        let sink = encoder.userInfo[Blobs.key] as? BlobSink
        if let dropPages { try PageRuns.encode(dropPages, to: &c, forKey: .dropPages, sink: sink) }
        try PageRuns.encode(pages, to: &c, forKey: .pages, sink: sink)
    }
}

public struct PageRun: Codable, Sendable, Equatable {
    public var address: UInt64
    public var count: UInt64
    /// Byte offset in the pages file.
    public var fileOffset: UInt64
    public init(address: UInt64, count: UInt64, fileOffset: UInt64) { self.address = address; self.count = count; self.fileOffset = fileOffset }

    enum CodingKeys: String, CodingKey { case address, count, fileOffset }

    /// Written as `[address, count, fileOffset]` since format version 8: a process's index
    /// can hold tens of thousands of runs, and JSONDecoder read them three times faster as
    /// arrays than as objects (decoding the core files was most of a migration target's
    /// "verify snapshot" step). Versions up to 7 wrote objects, still read.
    public init(from decoder: any Decoder) throws {
        if var a = try? decoder.unkeyedContainer() {
            (address, count, fileOffset) = (try a.decode(UInt64.self), try a.decode(UInt64.self), try a.decode(UInt64.self))
        } else {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            (address, count, fileOffset) = (try c.decode(UInt64.self, forKey: .address), try c.decode(UInt64.self, forKey: .count), try c.decode(UInt64.self, forKey: .fileOffset))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var a = encoder.unkeyedContainer()
        try a.encode(address); try a.encode(count); try a.encode(fileOffset)
    }
}
