import NIOCore

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
///     reply   u64 call id | u8 status (0 ok, 1 error) | payload (error: UTF-8 text)
///
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
        guard length >= 1, Int(length) <= limit else { throw RPCError.protocolViolation("frame of \(length) bytes (limit \(limit))") }
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
}

public enum RPCError: Error, CustomStringConvertible, Sendable, Equatable {
    case protocolViolation(String)
    case authenticationFailed(String)
    case peerUnreachable(NodeID, String)
    case peerFailed(NodeID)
    case deadlineExceeded(NodeID, service: UInt16)
    case noSuchService(UInt16)
    case remote(String)

    public var description: String {
        switch self {
        case .protocolViolation(let s): return "RPC protocol violation: \(s)"
        case .authenticationFailed(let s): return "RPC authentication failed: \(s)"
        case .peerUnreachable(let n, let s): return "node \(n) is unreachable: \(s)"
        case .peerFailed(let n): return "node \(n) failed or closed the connection during the call"
        case .deadlineExceeded(let n, let svc): return "call to service \(svc) on node \(n) passed its deadline"
        case .noSuchService(let s): return "no RPC service \(s) on the peer"
        case .remote(let s): return s
        }
    }
}
