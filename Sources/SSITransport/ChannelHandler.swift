import NIOCore
import SSISystem

/// Runs on the channel's event loop: the handshake, then dispatch of frames.
final class RPCChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let node: RPCNode
    let conn: RPCConnection
    let decoder: FrameDecoder
    let expect: NodeID?
    var myNonce: [UInt8] = (0..<32).map { _ in UInt8.random(in: 0...255) }
    var peerHello: (node: NodeID, nonce: [UInt8])?
    var authenticated = false
    var onewayQueue: AsyncStream<(NodeID, UInt16, [UInt8])>.Continuation?
    var handshakeTimer: Scheduled<Void>?

    init(node: RPCNode, conn: RPCConnection, decoder: FrameDecoder, expect: NodeID?) {
        self.node = node
        self.conn = conn
        self.decoder = decoder
        self.expect = expect
    }

    /// Both directions install us in their initializer, before the channel is active; the
    /// hello goes out on channelActive.
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private var started = false
    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        var buf = context.channel.allocator.buffer(capacity: 50)
        buf.writeFrame(.hello) { b in
            b.writeBytes(Wire.magic); b.writeInteger(node.auth.session); b.writeInteger(node.nodeID); b.writeBytes(myNonce)
        }
        context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
        let ch = context.channel
        let remote = "\(ch.remoteAddress.map { "\($0)" } ?? "?")"
        let logger = node.logger
        let rejected = node
        handshakeTimer = context.eventLoop.scheduleTask(in: .seconds(3)) {
            logger.warning("rpc: dropping peer \(remote): no authentication within 3 s")
            rejected.rejectedPeers.add(1, ordering: .relaxed)
            ch.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = unwrapInboundIn(data)
        do {
            try handle(context: context, frame: &frame)
        } catch {
            let remote = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
            node.logger.warning("rpc: dropping peer \(remote): \(error)")
            node.rejectedPeers.add(1, ordering: .relaxed)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let remote = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
        if !authenticated {
            node.logger.warning("rpc: dropping peer \(remote) before authentication: \(error)")
            node.rejectedPeers.add(1, ordering: .relaxed)
        } else {
            node.logger.info("rpc: connection to node \(conn.peer ?? 255) closed: \(error)")
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        conn.failAll()
        conn.authenticated.fail(SSIError.peerUnreachable(expect ?? 255, "connection closed during the handshake"))
        onewayQueue?.finish()
        node.forget(conn)
        context.fireChannelInactive()
    }

    private func handle(context: ChannelHandlerContext, frame: inout ByteBuffer) throws {
        guard let raw = frame.readInteger(as: UInt8.self), let kind = FrameKind(rawValue: raw) else {
            throw SSIError.protocolViolation("unknown frame kind")
        }
        guard authenticated else { return try handshake(context: context, kind: kind, frame: &frame) }
        guard let peer = conn.peer else { return }
        switch kind {
        case .request:
            guard let id = frame.readInteger(as: UInt64.self), let svc = frame.readInteger(as: UInt16.self),
                  frame.readInteger(as: UInt32.self) != nil else { throw SSIError.protocolViolation("short request") }
            serve(context: context, id: id, service: svc, from: peer, frame.readBytes(length: frame.readableBytes) ?? [])
        case .reply:
            guard let id = frame.readInteger(as: UInt64.self), let status = frame.readInteger(as: UInt8.self) else {
                throw SSIError.protocolViolation("short reply")
            }
            if status == 0 {
                conn.complete(id, .success(frame.readBytes(length: frame.readableBytes) ?? []))
            } else {
                // The handler's own typed error, rebuilt: the caller decides on its kind.
                guard let e = frame.readError() else { throw SSIError.protocolViolation("unreadable error reply") }
                conn.complete(id, .failure(e))
            }
        case .oneway:
            guard let svc = frame.readInteger(as: UInt16.self) else { throw SSIError.protocolViolation("short oneway") }
            onewayQueue?.yield((peer, svc, frame.readBytes(length: frame.readableBytes) ?? []))
        case .hello, .auth:
            throw SSIError.protocolViolation("second handshake")
        }
    }

    /// Before authentication only hello and auth are accepted: see Wire and RPCAuth.
    private func handshake(context: ChannelHandlerContext, kind: FrameKind, frame: inout ByteBuffer) throws {
        switch kind {
        case .hello:
            guard peerHello == nil, let magic = frame.readBytes(length: 4), magic == Wire.magic,
                  let session = frame.readInteger(as: UInt64.self), let peer = frame.readInteger(as: UInt8.self),
                  let nonce = frame.readBytes(length: 32), frame.readableBytes == 0
            else { throw SSIError.protocolViolation("bad hello") }
            guard session == node.auth.session else {
                throw SSIError.authenticationFailed("peer is in session \(session), we are in \(node.auth.session)")
            }
            if let expect, expect != peer { throw SSIError.authenticationFailed("expected node \(expect), peer says \(peer)") }
            guard peer != node.nodeID else { throw SSIError.authenticationFailed("peer claims our own node id \(peer)") }
            peerHello = (peer, nonce)
            let proof = node.auth.proof(from: node.nodeID, to: peer, challenge: nonce, own: myNonce)
            var buf = context.channel.allocator.buffer(capacity: 40)
            buf.writeFrame(.auth) { b in b.writeBytes(proof) }
            context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
        case .auth:
            guard let hello = peerHello, let proof = frame.readBytes(length: 32), frame.readableBytes == 0 else {
                throw SSIError.protocolViolation("auth before hello")
            }
            let want = node.auth.proof(from: hello.node, to: node.nodeID, challenge: myNonce, own: hello.nonce)
            guard RPCAuth.constantTimeEqual(proof, want) else {
                throw SSIError.authenticationFailed("node \(hello.node) does not know the cluster secret")
            }
            authenticated = true
            handshakeTimer?.cancel()
            decoder.limit = Wire.maxFrame
            conn.setPeer(hello.node)
            startOnewayQueue(peer: hello.node)
            conn.authenticated.succeed(hello.node)
        default:
            throw SSIError.protocolViolation("\(kind) frame before authentication")
        }
    }

    /// Runs a request's handler and writes its reply: an inline service on the loop at once,
    /// any other in a task. The caller enforces the deadline; the handler runs to completion
    /// so that it never leaves a half-done state change behind.
    private func serve(context: ChannelHandlerContext, id: UInt64, service svc: UInt16, from peer: NodeID, _ payload: [UInt8]) {
        let ch = context.channel
        if let inline = node.inlineHandler(for: svc) {
            let bytes = inline(peer, payload)
            var buf = ch.allocator.buffer(capacity: bytes.count + 16)
            buf.writeFrame(.reply) { b in b.writeInteger(id); b.writeInteger(UInt8(0)); b.writeBytes(bytes) }
            context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
            return
        }
        let handler = node.handler(for: svc)
        let me = node.nodeID
        // On this connection's loop: the handler's own code, its calls into an actor on the
        // same loop and the reply's write need no thread hop.
        Task(executorPreference: node.taskExecutor) {
            let result: Result<[UInt8], Error>
            if let handler {
                do { result = .success(try await handler(peer, payload)) } catch { result = .failure(error) }
            } else {
                result = .failure(SSIError.noSuchService(svc, on: me))
            }
            var buf = ch.allocator.buffer(capacity: 16)
            buf.writeFrame(.reply) { b in
                b.writeInteger(id)
                switch result {
                case .success(let bytes): b.writeInteger(UInt8(0)); b.writeBytes(bytes)
                case .failure(let e): b.writeInteger(UInt8(1)); b.writeError(SSIError.wrapping(e))
                }
            }
            // A handler may outlive its connection (and, in tests, the event loop).
            if ch.isActive { ch.writeAndFlush(buf, promise: nil) }
        }
    }

    /// One-way messages are handled one after the other, in arrival order.
    private func startOnewayQueue(peer: NodeID) {
        let (stream, k) = AsyncStream.makeStream(of: (NodeID, UInt16, [UInt8]).self)
        onewayQueue = k
        let node = self.node
        Task {
            for await (p, svc, payload) in stream {
                await node.onewayHandler(for: svc)?(p, payload)
            }
        }
    }
}
