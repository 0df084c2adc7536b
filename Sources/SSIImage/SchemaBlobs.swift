import Foundation

// The snapshot format (Schema.swift), version 11: large byte strings out of the core file.
//
// A TCP connection's queues (up to the socket's buffer size: megabytes for a bulk sender), a
// pipe's buffered bytes and a socket pair's queue used to be base64 inside the core JSON:
// 4 MiB took 26 ms to encode and 23 ms to decode (Foundation's JSONEncoder/JSONDecoder,
// release build), 5.4 MiB of text, all of it inside a migration's frozen time. From version
// 11 the core file holds, for each such string of at least `Blobs.threshold` bytes, only
// `{"blob": [offset, length]}`, and the bytes themselves go, as they are, to the process's
// `blobs-<pid>.img` (listed in the manifest, CRC-checked like every file). Smaller strings,
// and every string of an older snapshot, stay inline (base64): readers take both.

/// Where the bytes of one core file go while it is encoded (`JSONEncoder.userInfo[Blobs.key]`).
public final class BlobSink: @unchecked Sendable {
    /// Everything appended so far: the blob file's content.
    public private(set) var bytes: [UInt8] = []
    public init() {}

    /// Appends `data`; returns where it went.
    func add(_ data: some Collection<UInt8>) -> [UInt64] {
        let at = UInt64(bytes.count)
        bytes.append(contentsOf: data)
        return [at, UInt64(data.count)]
    }
}

/// The blob file of one core file while it is decoded (`JSONDecoder.userInfo[Blobs.key]`).
public struct BlobSource: Sendable {
    public let bytes: [UInt8]
    /// The blob file's name, for errors.
    public let name: String
    public init(bytes: [UInt8], name: String) { self.bytes = bytes; self.name = name }
}

public enum Blobs {
    public static let key = CodingUserInfoKey(rawValue: "ssi.blobs")!
    /// Shorter strings stay inline: a reference costs about as much as 1 KiB of base64 saves.
    public static let threshold = 1024
    public static func fileName(_ pid: Int32) -> String { "blobs-\(pid).img" }

    struct Reference: Codable { var blob: [UInt64] }

    static func encode(_ data: Data, to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if data.count >= threshold, let sink = encoder.userInfo[key] as? BlobSink {
            try c.encode(Reference(blob: sink.add(data)))
        } else {
            try c.encode(data)
        }
    }

    static func decode(from decoder: any Decoder) throws -> Data {
        let c = try decoder.singleValueContainer()
        if let inline = try? c.decode(Data.self) { return inline }
        switch bytes(of: try c.decode(Reference.self), in: decoder.userInfo[key] as? BlobSource) {
        case .success(let b): return Data(b)
        case .failure(let p): throw DecodingError.dataCorruptedError(in: c, debugDescription: p.what)
        }
    }

    /// Why a reference names no bytes (each caller throws it from its own container).
    struct Unresolved: Error { let what: String }

    /// The bytes `ref` names in `source`: the one check of every reference (long byte
    /// strings, packed page runs).
    static func bytes(of ref: Reference, in source: BlobSource?) -> Result<ArraySlice<UInt8>, Unresolved> {
        guard ref.blob.count == 2 else { return .failure(Unresolved(what: "a blob reference is [offset, length], not \(ref.blob)")) }
        guard let source else { return .failure(Unresolved(what: "names bytes of a blob file the snapshot does not have")) }
        let (start, count) = (ref.blob[0], ref.blob[1])
        guard start <= UInt64(source.bytes.count), count <= UInt64(source.bytes.count) - start else {
            return .failure(Unresolved(what: "names bytes \(start)..<\(start &+ count) of \(source.name), which has \(source.bytes.count)"))
        }
        return .success(source.bytes[Int(start)..<Int(start + count)])
    }
}

/// A byte string kept in the blob file when long (version 11).
@propertyWrapper
public struct Blob: Codable, Sendable, Equatable {
    public var wrappedValue: Data
    public init(wrappedValue: Data) { self.wrappedValue = wrappedValue }
    public init(from decoder: any Decoder) throws { wrappedValue = try Blobs.decode(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try Blobs.encode(wrappedValue, to: encoder) }
}

/// The same for an optional byte string: absent from the JSON when nil, as before.
@propertyWrapper
public struct OptionalBlob: Codable, Sendable, Equatable {
    public var wrappedValue: Data?
    public init(wrappedValue: Data?) { self.wrappedValue = wrappedValue }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        wrappedValue = c.decodeNil() ? nil : try Blobs.decode(from: decoder)
    }
    public func encode(to encoder: any Encoder) throws {
        if let v = wrappedValue { try Blobs.encode(v, to: encoder) } else { var c = encoder.singleValueContainer(); try c.encodeNil() }
    }
}

// The synthesized Codable of a struct calls these for an OptionalBlob property: a missing key
// (a snapshot written before the field, or a nil value) is nil, and nil is not written.
extension KeyedDecodingContainer {
    public func decode(_ type: OptionalBlob.Type, forKey key: Key) throws -> OptionalBlob {
        try decodeIfPresent(type, forKey: key) ?? OptionalBlob(wrappedValue: nil)
    }
}

extension KeyedEncodingContainer {
    public mutating func encode(_ value: OptionalBlob, forKey key: Key) throws {
        guard value.wrappedValue != nil else { return }
        try encodeIfPresent(value, forKey: key)
    }
}
