import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

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

/// A service's entry point: the caller's node and the request payload in, the reply out.
public typealias RPCHandler = @Sendable (NodeID, [UInt8]) async throws -> [UInt8]

/// Runs a task's nonisolated code on an event loop (SE-0417 task executor preference).
///
/// The RPC path's cost on a quiet machine is mostly thread wake-ups: a caller on the global
/// pool must wake the loop to write (eventfd), and the loop must wake a pool thread to resume
/// the caller. A caller whose code runs on the connection's own loop writes inline and is
/// resumed by the loop's next job, with no wake-up at all beyond the socket's.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let loop: any EventLoop

    public init(_ loop: any EventLoop) { self.loop = loop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// One authenticated TCP connection to a peer, either direction. Its mutable state is behind
/// a Mutex, so the event loop and callers' tasks can both touch it: hence `@unchecked`.
final class RPCConnection: @unchecked Sendable {
    let channel: Channel
    let outgoing: Bool
    let authenticated: EventLoopPromise<NodeID>
    private struct State {
        var nextCall: UInt64 = 1
        var pending: [UInt64: CheckedContinuation<[UInt8], Error>] = [:]
        var timers: [UInt64: Scheduled<Void?>] = [:]
        var peer: NodeID?
        var closed = false
    }
    private let state = Mutex(State())

    init(channel: Channel, outgoing: Bool) {
        self.channel = channel
        self.outgoing = outgoing
        authenticated = channel.eventLoop.makePromise(of: NodeID.self)
    }

    var peer: NodeID? { state.withLock { $0.peer } }
    func setPeer(_ n: NodeID) { state.withLock { $0.peer = n } }

    /// Runs on the caller's executor (`isolation`): when that is the connection's loop the
    /// frame is written at once, and the reply resumes the caller on the same thread.
    func call(service: UInt16, payload: [UInt8], timeout: Duration, isolation: isolated (any Actor)? = #isolation) async throws -> [UInt8] {
        let peer = self.peer ?? 255
        let ms = UInt32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        return try await withCheckedThrowingContinuation(isolation: isolation) { (k: CheckedContinuation<[UInt8], Error>) in
            let id: UInt64? = state.withLock { s in
                if s.closed { return nil }
                let id = s.nextCall
                s.nextCall += 1
                s.pending[id] = k
                return id
            }
            guard let id else { k.resume(throwing: RPCError.peerFailed(peer)); return }
            var buf = channel.allocator.buffer(capacity: payload.count + 20)
            buf.writeFrame(.request) { b in
                b.writeInteger(id); b.writeInteger(service); b.writeInteger(ms); b.writeBytes(payload)
            }
            channel.writeAndFlush(buf, promise: nil)
            // The deadline: whichever of the reply and this timer comes first resumes `k`.
            let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(ms))) { [weak self] in
                self?.complete(id, .failure(RPCError.deadlineExceeded(peer, service: service)))
            }
            state.withLock { s in if s.pending[id] != nil { s.timers[id] = timer } else { timer.cancel() } }
        }
    }

    func send(service: UInt16, payload: [UInt8]) {
        var buf = channel.allocator.buffer(capacity: payload.count + 8)
        buf.writeFrame(.oneway) { b in b.writeInteger(service); b.writeBytes(payload) }
        channel.writeAndFlush(buf, promise: nil)
    }

    func complete(_ id: UInt64, _ r: Result<[UInt8], Error>) {
        let (k, t) = state.withLock { ($0.pending.removeValue(forKey: id), $0.timers.removeValue(forKey: id)) }
        t?.cancel()
        k?.resume(with: r)
    }

    /// Every call in flight ends now with an error: a failed peer never leaves a caller hanging.
    func failAll() {
        let (ks, peer) = state.withLock { s -> ([CheckedContinuation<[UInt8], Error>], NodeID?) in
            s.closed = true
            let ks = Array(s.pending.values)
            s.pending = [:]
            for t in s.timers.values { t.cancel() }
            s.timers = [:]
            return (ks, s.peer)
        }
        for k in ks { k.resume(throwing: RPCError.peerFailed(peer ?? 255)) }
    }
}

/// The RPC layer of one node: a listener, connections to peers (one outgoing per peer, made
/// on first use), and services registered by id.
public final class RPCNode: Sendable {
    public let nodeID: NodeID
    let auth: RPCAuth
    let group: EventLoopGroup
    /// The one loop that every connection of this node runs on, so that a caller on it (see
    /// `taskExecutor`) never crosses threads.
    public let loop: any EventLoop
    /// Nonisolated async code with this preference runs on `loop`: request handlers do, and
    /// so can callers (KDDM's actor runs on `loop` itself).
    public let taskExecutor: EventLoopTaskExecutor
    let logger: Logger
    private let services = Mutex<[UInt16: RPCHandler]>([:])
    private let inlineServices = Mutex<[UInt16: @Sendable (NodeID, [UInt8]) -> [UInt8]]>([:])
    private let onewayServices = Mutex<[UInt16: @Sendable (NodeID, [UInt8]) async -> Void]>([:])
    private let addresses = Mutex<[NodeID: (String, Int)]>([:])
    private let outgoing = Mutex<[NodeID: RPCConnection]>([:])
    private let all = Mutex<[ObjectIdentifier: RPCConnection]>([:])
    private let listener = Mutex<Channel?>(nil)
    /// Requests sent to other nodes (self-calls excluded): the benchmark reads it.
    public let callsSent = Atomic<Int>(0)
    /// Peers dropped for garbage or failed authentication: tests read it.
    public let rejectedPeers = Atomic<Int>(0)

    public init(nodeID: NodeID, auth: RPCAuth, group: EventLoopGroup, logger: Logger) {
        self.nodeID = nodeID
        self.auth = auth
        self.group = group
        self.loop = group.next()
        self.taskExecutor = EventLoopTaskExecutor(loop)
        self.logger = logger
    }

    public func register(_ service: UInt16, _ handler: @escaping RPCHandler) {
        services.withLock { $0[service] = handler }
    }

    /// A service cheap enough to run on the event loop itself, with no hop to the task pool
    /// and back: it must not block (ping, counters).
    public func registerInline(_ service: UInt16, _ handler: @escaping @Sendable (NodeID, [UInt8]) -> [UInt8]) {
        inlineServices.withLock { $0[service] = handler }
    }

    public func registerOneway(_ service: UInt16, _ handler: @escaping @Sendable (NodeID, [UInt8]) async -> Void) {
        onewayServices.withLock { $0[service] = handler }
    }

    /// Where a peer listens (from the membership view).
    public func setAddress(_ node: NodeID, host: String, port: Int) {
        addresses.withLock { $0[node] = (host, port) }
    }

    public func listen(host: String, port: Int) async throws -> Int {
        let ch = try await ServerBootstrap(group: group, childGroup: loop)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] ch in
                ch.eventLoop.makeCompletedFuture { try self.install(on: ch, outgoing: false, expect: nil) }
            }
            .bind(host: host, port: port).get()
        listener.withLock { $0 = ch }
        return ch.localAddress?.port ?? port
    }

    @discardableResult
    func install(on ch: Channel, outgoing: Bool, expect: NodeID?) throws -> RPCConnection {
        let conn = RPCConnection(channel: ch, outgoing: outgoing)
        let decoder = FrameDecoder()
        let handler = RPCChannelHandler(node: self, conn: conn, decoder: decoder, expect: expect)
        try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(decoder))
        try ch.pipeline.syncOperations.addHandler(handler)
        all.withLock { $0[ObjectIdentifier(conn)] = conn }
        return conn
    }

    func forget(_ conn: RPCConnection) {
        all.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(conn)) }
        outgoing.withLock { o in
            if let p = conn.peer, o[p] === conn { o[p] = nil }
        }
    }

    private func connection(to node: NodeID, isolation: isolated (any Actor)? = #isolation) async throws -> RPCConnection {
        if let c = outgoing.withLock({ $0[node] }) { return c }
        guard let (host, port) = addresses.withLock({ $0[node] }) else {
            throw RPCError.peerUnreachable(node, "its address is unknown (is it a member of this cluster?)")
        }
        let ch: Channel
        let made = loop.makePromise(of: RPCConnection.self)
        do {
            // The handlers go in before the connection completes: the peer's hello may arrive
            // at once, and a frame read before them would be lost.
            ch = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(1))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture { made.succeed(try self.install(on: ch, outgoing: true, expect: node)) }
                }
                .connect(host: host, port: port).get()
        } catch {
            made.fail(error)
            throw RPCError.peerUnreachable(node, "connect to \(host):\(port): \(error)")
        }
        let conn = try await made.futureResult.get()
        // The handler sent our hello on install; wait for the peer's proof.
        let timeout = ch.eventLoop.scheduleTask(in: .seconds(3)) {
            conn.authenticated.fail(RPCError.peerUnreachable(node, "no handshake within 3 s"))
            ch.close(promise: nil)
        }
        do {
            _ = try await conn.authenticated.futureResult.get()
            timeout.cancel()
        } catch {
            ch.close(promise: nil)
            throw error
        }
        return outgoing.withLock { o in
            if let existing = o[node] { ch.close(promise: nil); return existing }
            o[node] = conn
            return conn
        }
    }

    /// A request/response call. Self-calls run the handler directly. It runs on the caller's
    /// executor (`isolation`), so a caller on `loop` crosses no thread.
    public func call(_ node: NodeID, service: UInt16, _ payload: [UInt8], timeout: Duration = .seconds(5),
                     isolation: isolated (any Actor)? = #isolation) async throws -> [UInt8] {
        if node == nodeID {
            if let h = inlineServices.withLock({ $0[service] }) { return h(nodeID, payload) }
            guard let h = services.withLock({ $0[service] }) else { throw RPCError.noSuchService(service) }
            return try await h(nodeID, payload)
        }
        let c = try await connection(to: node)
        callsSent.add(1, ordering: .relaxed)
        return try await c.call(service: service, payload: payload, timeout: timeout)
    }

    /// A one-way message; delivered in order per peer connection, or lost with it.
    public func send(_ node: NodeID, service: UInt16, _ payload: [UInt8], isolation: isolated (any Actor)? = #isolation) async throws {
        if node == nodeID {
            if let h = onewayServices.withLock({ $0[service] }) { await h(nodeID, payload) }
            return
        }
        try await connection(to: node).send(service: service, payload: payload)
    }

    /// The membership layer says `node` failed or left: drop its connections, so that every
    /// call in flight to it ends at once.
    public func peerFailed(_ node: NodeID) {
        let conns = all.withLock { Array($0.values) }.filter { $0.peer == node }
        for c in conns {
            c.failAll()
            c.channel.close(promise: nil)
        }
        outgoing.withLock { _ = $0.removeValue(forKey: node) }
    }

    public func shutdown() async {
        if let l = listener.withLock({ $0 }) { try? await l.close() }
        for c in all.withLock({ Array($0.values) }) {
            c.failAll()
            try? await c.channel.close()
        }
    }

    func handler(for service: UInt16) -> RPCHandler? { services.withLock { $0[service] } }
    func inlineHandler(for service: UInt16) -> (@Sendable (NodeID, [UInt8]) -> [UInt8])? { inlineServices.withLock { $0[service] } }
    func onewayHandler(for service: UInt16) -> (@Sendable (NodeID, [UInt8]) async -> Void)? {
        onewayServices.withLock { $0[service] }
    }
}

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
        conn.authenticated.fail(RPCError.peerUnreachable(expect ?? 255, "connection closed during the handshake"))
        onewayQueue?.finish()
        node.forget(conn)
        context.fireChannelInactive()
    }

    private func handle(context: ChannelHandlerContext, frame: inout ByteBuffer) throws {
        guard let raw = frame.readInteger(as: UInt8.self), let kind = FrameKind(rawValue: raw) else {
            throw RPCError.protocolViolation("unknown frame kind")
        }
        if !authenticated {
            switch kind {
            case .hello:
                guard peerHello == nil, let magic = frame.readBytes(length: 4), magic == Wire.magic,
                      let session = frame.readInteger(as: UInt64.self), let peer = frame.readInteger(as: UInt8.self),
                      let nonce = frame.readBytes(length: 32), frame.readableBytes == 0
                else { throw RPCError.protocolViolation("bad hello") }
                guard session == node.auth.session else {
                    throw RPCError.authenticationFailed("peer is in session \(session), we are in \(node.auth.session)")
                }
                if let expect, expect != peer { throw RPCError.authenticationFailed("expected node \(expect), peer says \(peer)") }
                guard peer != node.nodeID else { throw RPCError.authenticationFailed("peer claims our own node id \(peer)") }
                peerHello = (peer, nonce)
                let proof = node.auth.proof(from: node.nodeID, to: peer, challenge: nonce, own: myNonce)
                var buf = context.channel.allocator.buffer(capacity: 40)
                buf.writeFrame(.auth) { b in b.writeBytes(proof) }
                context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
            case .auth:
                guard let hello = peerHello, let proof = frame.readBytes(length: 32), frame.readableBytes == 0 else {
                    throw RPCError.protocolViolation("auth before hello")
                }
                let want = node.auth.proof(from: hello.node, to: node.nodeID, challenge: myNonce, own: hello.nonce)
                guard RPCAuth.constantTimeEqual(proof, want) else {
                    throw RPCError.authenticationFailed("node \(hello.node) does not know the cluster secret")
                }
                authenticated = true
                handshakeTimer?.cancel()
                decoder.limit = Wire.maxFrame
                conn.setPeer(hello.node)
                startOnewayQueue(peer: hello.node)
                conn.authenticated.succeed(hello.node)
            default:
                throw RPCError.protocolViolation("\(kind) frame before authentication")
            }
            return
        }
        guard let peer = conn.peer else { return }
        switch kind {
        case .request:
            guard let id = frame.readInteger(as: UInt64.self), let svc = frame.readInteger(as: UInt16.self),
                  let ms = frame.readInteger(as: UInt32.self) else { throw RPCError.protocolViolation("short request") }
            let payload = frame.readBytes(length: frame.readableBytes) ?? []
            let ch = context.channel
            if let inline = node.inlineHandler(for: svc) {
                let bytes = inline(peer, payload)
                var buf = ch.allocator.buffer(capacity: bytes.count + 16)
                buf.writeFrame(.reply) { b in b.writeInteger(id); b.writeInteger(UInt8(0)); b.writeBytes(bytes) }
                context.writeAndFlush(wrapOutboundOut(buf), promise: nil)
                return
            }
            let handler = node.handler(for: svc)
            // On this connection's loop: the handler's own code, its calls into an actor on the
            // same loop (KDDM) and the reply's write need no thread hop.
            Task(executorPreference: node.taskExecutor) {
                let result: Result<[UInt8], Error>
                if let handler {
                    do {
                        // The caller enforces the deadline (`ms`); the handler runs to completion so
                        // that it never leaves a half-done state change behind.
                        _ = ms
                        result = .success(try await handler(peer, payload))
                    } catch { result = .failure(error) }
                } else {
                    result = .failure(RPCError.noSuchService(svc))
                }
                var buf = ch.allocator.buffer(capacity: 16)
                buf.writeFrame(.reply) { b in
                    b.writeInteger(id)
                    switch result {
                    case .success(let bytes): b.writeInteger(UInt8(0)); b.writeBytes(bytes)
                    case .failure(let e): b.writeInteger(UInt8(1)); b.writeString("\(e)")
                    }
                }
                // A handler may outlive its connection (and, in tests, the event loop).
                if ch.isActive { ch.writeAndFlush(buf, promise: nil) }
            }
        case .reply:
            guard let id = frame.readInteger(as: UInt64.self), let status = frame.readInteger(as: UInt8.self) else {
                throw RPCError.protocolViolation("short reply")
            }
            let payload = frame.readBytes(length: frame.readableBytes) ?? []
            conn.complete(id, status == 0 ? .success(payload) : .failure(RPCError.remote(String(decoding: payload, as: UTF8.self))))
        case .oneway:
            guard let svc = frame.readInteger(as: UInt16.self) else { throw RPCError.protocolViolation("short oneway") }
            onewayQueue?.yield((peer, svc, frame.readBytes(length: frame.readableBytes) ?? []))
        case .hello, .auth:
            throw RPCError.protocolViolation("second handshake")
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

