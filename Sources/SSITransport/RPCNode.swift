import Logging
import NIOCore
import NIOPosix
import SSISystem
import Synchronization

/// A service's entry point: the caller's node and the request payload in, the reply out.
public typealias RPCHandler = @Sendable (NodeID, [UInt8]) async throws -> [UInt8]

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
    /// so can callers that want their calls to cross no thread (the benchmark does).
    public let taskExecutor: EventLoopTaskExecutor
    let logger: Logger
    private let services = Mutex<[UInt16: RPCHandler]>([:])
    private let inlineServices = Mutex<[UInt16: @Sendable (NodeID, [UInt8]) -> [UInt8]]>([:])
    private let onewayServices = Mutex<[UInt16: @Sendable (NodeID, [UInt8]) async -> Void]>([:])
    private let addresses = Mutex<[NodeID: (String, Int)]>([:])
    private let outgoing = Mutex<[NodeID: RPCConnection]>([:])
    private let all = Mutex<[ObjectIdentifier: RPCConnection]>([:])
    private let listener = Mutex<Channel?>(nil)
    private let callObserver = ClosureCell<(@Sendable (UInt16, Duration, Bool) -> Void)?>(nil)
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
        registerInline(TransportService.ping) { _, p in p }
    }

    public func register(_ service: UInt16, _ handler: @escaping RPCHandler) {
        services.withLock { s in
            precondition(s[service] == nil, "RPC service \(service) registered twice")
            s[service] = handler
        }
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

    /// Reads of up to 1 MiB (NIO's default stops at 64 KiB), up to 16 before the loop looks
    /// at its other channels: a migration's image comes as frames of megabytes, and each
    /// read is a pass through the decoder, on a loop that shares two CPUs with the dump.
    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 1 << 20)

    public func listen(host: String, port: Int) async throws -> Int {
        let ch = try await ServerBootstrap(group: group, childGroup: loop)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: Self.reads)
            .childChannelOption(.maxMessagesPerRead, value: 16)
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
            throw SSIError.peerUnreachable(node, "its address is unknown (is it a member of this cluster?)")
        }
        let ch: Channel
        let made = loop.makePromise(of: RPCConnection.self)
        do {
            // The handlers go in before the connection completes: the peer's hello may arrive
            // at once, and a frame read before them would be lost.
            ch = try await ClientBootstrap(group: loop)
                .connectTimeout(.seconds(1))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.recvAllocator, value: Self.reads)
                .channelOption(.maxMessagesPerRead, value: 16)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture { made.succeed(try self.install(on: ch, outgoing: true, expect: node)) }
                }
                .connect(host: host, port: port).get()
        } catch {
            made.fail(error)
            throw SSIError.peerUnreachable(node, "connect to \(host):\(port): \(error)")
        }
        let conn = try await made.futureResult.get()
        // The handler sent our hello on install; wait for the peer's proof.
        let timeout = ch.eventLoop.scheduleTask(in: .seconds(3)) {
            conn.authenticated.fail(SSIError.peerUnreachable(node, "no handshake within 3 s"))
            ch.close(promise: nil)
        }
        do {
            _ = try await conn.authenticated.futureResult.get()
            timeout.cancel()
        } catch {
            ch.close(promise: nil)
            throw error
        }
        // Two calls may have connected at once: keep the first. The loser is closed outside
        // the lock: on the event loop close() runs channelInactive at once, whose forget()
        // takes this same lock (a recursive lock is a crash).
        let kept = outgoing.withLock { o -> RPCConnection in
            if let existing = o[node] { return existing }
            o[node] = conn
            return conn
        }
        if kept !== conn { ch.close(promise: nil) }
        return kept
    }

    /// A request/response call. Self-calls run the handler directly. It runs on the caller's
    /// executor (`isolation`), so a caller on `loop` crosses no thread.
    public func call(_ node: NodeID, service: UInt16, _ payload: [UInt8], timeout: Duration = .seconds(5),
                     isolation: isolated (any Actor)? = #isolation) async throws -> [UInt8] {
        if node == nodeID {
            if let h = inlineServices.withLock({ $0[service] }) { return h(nodeID, payload) }
            guard let h = services.withLock({ $0[service] }) else { throw SSIError.noSuchService(service, on: nodeID) }
            return try await h(nodeID, payload)
        }
        let t0 = ContinuousClock.now
        do {
            let c = try await connection(to: node)
            callsSent.add(1, ordering: .relaxed)
            let r = try await c.call(service: service, payload: payload, timeout: timeout)
            callObserver.value?(service, ContinuousClock.now - t0, true)
            return r
        } catch {
            callObserver.value?(service, ContinuousClock.now - t0, false)
            throw error
        }
    }

    /// Told of every call to another node: its service, how long it took (connecting
    /// included) and whether it succeeded. The metrics (SSIObserve) set it.
    public func observeCalls(_ f: @escaping @Sendable (UInt16, Duration, Bool) -> Void) {
        callObserver.set(f)
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
