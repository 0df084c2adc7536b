import NIOCore
import SSISystem

/// A node of the cluster: 0...255, as in Kerrighed.
public typealias NodeID = UInt8

/// The RPC wire format. Every frame is
///
///     u32 length (big endian, of what follows) | u8 kind | body
///
/// and the bodies are:
///
///     hello   "SSI1" | u64 session | u8 node | 32-byte nonce
///     auth    32-byte HMAC-SHA256 (see `RPCAuth`)
///     request u64 call id | u16 service | u32 deadline ms | payload
///     oneway  u16 service | payload
///     reply   u64 call id | u8 status (0 ok, 1 error) | payload (error: `SSIError`'s wire form)
///
/// An error's wire form is `u16 n | kind name | u32 n | message | u32 n | hint | i32 errno`,
/// the hint's length being 0xffffffff when there is none and errno 0 when there is none; the
/// caller rebuilds the same typed error, so that it decides on its kind, never on its text.
/// docs/cluster.md explains the choices.
public enum FrameKind: UInt8, Sendable {
    case hello = 1, auth = 2, request = 3, oneway = 4, reply = 5
}

public enum Wire {
    public static let magic: [UInt8] = Array("SSI1".utf8)
    /// The largest frame accepted after authentication.
    public static let maxFrame = 16 << 20
    /// The largest frame accepted before it: a peer that has not proved it knows the secret
    /// cannot make us allocate more than this.
    public static let maxHandshakeFrame = 64
}

/// Splits the byte stream into frames; rejects oversized lengths before reading them.
final class FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    /// Raised to `Wire.maxFrame` by the handler once the peer is authenticated.
    var limit = Wire.maxHandshakeFrame

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard length >= 1, Int(length) <= limit else { throw SSIError.protocolViolation("frame of \(length) bytes (limit \(limit))") }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

extension ByteBuffer {
    /// Writes a whole frame (length prefix included).
    mutating func writeFrame(_ kind: FrameKind, _ body: (inout ByteBuffer) -> Void) {
        let start = writerIndex
        writeInteger(UInt32(0))
        writeInteger(kind.rawValue)
        body(&self)
        setInteger(UInt32(writerIndex - start - 4), at: start)
    }

    /// An error reply's payload.
    mutating func writeError(_ e: SSIError) {
        let kind = Array(e.kind.description.utf8), message = Array(e.message.utf8)
        writeInteger(UInt16(kind.count)); writeBytes(kind)
        writeInteger(UInt32(message.count)); writeBytes(message)
        if let hint = e.hint.map({ Array($0.utf8) }) {
            writeInteger(UInt32(hint.count)); writeBytes(hint)
        } else {
            writeInteger(UInt32.max)
        }
        writeInteger(e.errno ?? 0)
    }

    /// The error an error reply carries; nil when it does not parse.
    mutating func readError() -> SSIError? {
        guard let kn = readInteger(as: UInt16.self), let kind = readString(length: Int(kn)),
              let mn = readInteger(as: UInt32.self), let message = readString(length: Int(mn)),
              let hn = readInteger(as: UInt32.self) else { return nil }
        var hint: String? = nil
        if hn != UInt32.max {
            guard let h = readString(length: Int(hn)) else { return nil }
            hint = h
        }
        guard let errno = readInteger(as: Int32.self) else { return nil }
        return SSIError(SSIError.Kind(named: kind) ?? .system, message, hint: hint, errno: errno == 0 ? nil : errno)
    }
}

/// The transport's failures, as the one error type users see.
extension SSIError {
    static func protocolViolation(_ what: String) -> SSIError {
        SSIError(.corrupt, "RPC protocol violation: \(what)")
    }

    static func authenticationFailed(_ what: String) -> SSIError {
        SSIError(.permission, "RPC authentication failed: \(what)", hint: "every node needs the same cluster secret and session")
    }

    /// The request never left: it may be sent elsewhere.
    public static func peerUnreachable(_ node: NodeID, _ why: String) -> SSIError {
        SSIError(.unreachable, "node \(node) is unreachable: \(why)", hint: "ssi nodes status shows which nodes are online")
    }

    /// The request left; the peer may have handled it.
    public static func peerFailed(_ node: NodeID) -> SSIError {
        SSIError(.disconnected, "node \(node) failed or closed the connection during the call")
    }

    public static func deadlineExceeded(_ node: NodeID, service: UInt16) -> SSIError {
        SSIError(.timeout, "call to service \(service) (\(ServiceBlock.owner(of: service)?.name ?? "unknown")) on node \(node) passed its deadline")
    }

    static func noSuchService(_ service: UInt16, on node: NodeID) -> SSIError {
        SSIError(.unsupported, "no RPC service \(service) (\(ServiceBlock.owner(of: service)?.name ?? "unknown block")) on node \(node)",
                 hint: "are all the nodes running the same ssid?")
    }
}
