import NIOCore
import NIOHTTP1
import NIOPosix
import SSISystem
import Synchronization

/// One etcd endpoint's HTTP/1.1 connections, kept open between requests (keep-alive). A
/// request takes an idle connection, or opens one, and gives it back once its response is
/// complete; so in the steady state every request is one write and one read on an open
/// socket, with no TCP handshake, no accept in etcd and no TIME_WAIT socket left behind.
/// Connections are used for one request at a time (no pipelining: a slow transaction never
/// holds up the membership poll behind it). docs/cluster.md says why this rather than
/// async-http-client.
final class EtcdEndpoint: Sendable {
    let host: String
    let port: Int
    let group: EventLoopGroup
    /// More idle connections than this are closed: the daemon's steady concurrency (the
    /// keep-alive, the view poll, a few KDDM transactions) stays well under it.
    static let maxIdle = 8
    private let idle = Mutex<[Channel]>([])

    init(host: String, port: Int, group: EventLoopGroup) {
        self.host = host
        self.port = port
        self.group = group
    }

    var name: String { "\(host):\(port)" }

    /// POSTs `body` to `path`; returns the response body. Throws `Unreached` when the request
    /// never left (no connection could be made), so it may go to another endpoint. A request
    /// on a reused connection that etcd had closed meanwhile is sent again on a new one when
    /// it is idempotent; otherwise the failure is the caller's to judge (it may have been
    /// done).
    func post(_ path: String, _ body: [UInt8], timeout: TimeAmount, idempotent: Bool) async throws -> [UInt8] {
        let (ch, reused) = try await checkout(timeout: timeout)
        do {
            return try await exchange(on: ch, path, body, timeout: timeout)
        } catch is ClosedBeforeAnswer where reused && idempotent {
            let (fresh, _) = try await checkout(timeout: timeout, reuse: false)
            return try await exchange(on: fresh, path, body, timeout: timeout)
        }
    }

    /// Closes every idle connection.
    func shutdown() {
        for ch in idle.withLock({ i in defer { i = [] }; return i }) { ch.close(promise: nil) }
    }

    private func checkout(timeout: TimeAmount, reuse: Bool = true) async throws -> (Channel, reused: Bool) {
        while reuse, let ch = idle.withLock({ $0.popLast() }) {
            if ch.isActive { return (ch, true) }
        }
        do {
            let ch = try await ClientBootstrap(group: group)
                .connectTimeout(timeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try ch.pipeline.syncOperations.addHTTPClientHandlers()
                        try ch.pipeline.syncOperations.addHandler(EtcdHTTPHandler())
                    }
                }
                .connect(host: host, port: port).get()
            return (ch, false)
        } catch {
            throw Unreached(error: SSIError(.unreachable, "cannot reach the membership service (etcd) at \(name): \(error)",
                                            hint: "is etcd running there? (ssi cluster up starts one; scripts/setup-cluster.sh installs it)"))
        }
    }

    private func exchange(on ch: Channel, _ path: String, _ body: [UInt8], timeout: TimeAmount) async throws -> [UInt8] {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: name)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: "\(body.count)")
        let promise = ch.eventLoop.makePromise(of: EtcdHTTPResponse.self)
        let timer = ch.eventLoop.scheduleTask(in: timeout) {
            promise.fail(SSIError(.timeout, "the membership service (etcd) at \(self.name) did not answer \(path) within \(timeout.nanoseconds / 1_000_000) ms"))
            ch.close(promise: nil)
        }
        ch.writeAndFlush(EtcdHTTPRequest(head: head, body: ch.allocator.buffer(bytes: body), promise: promise), promise: nil)
        do {
            let r = try await promise.futureResult.get()
            timer.cancel()
            checkin(ch, reusable: r.keepAlive)
            return r.body
        } catch {
            timer.cancel()
            ch.close(promise: nil)
            throw error
        }
    }

    private func checkin(_ ch: Channel, reusable: Bool) {
        let kept = reusable && ch.isActive && idle.withLock { i in
            guard i.count < Self.maxIdle else { return false }
            i.append(ch)
            return true
        }
        if !kept { ch.close(promise: nil) }
    }
}

/// The request never left: safe to send elsewhere.
struct Unreached: Error { var error: SSIError }

/// The connection closed before any byte of the answer: on a reused connection, etcd may
/// have closed it before it read the request.
struct ClosedBeforeAnswer: Error {}

struct EtcdHTTPRequest {
    var head: HTTPRequestHead
    var body: ByteBuffer
    var promise: EventLoopPromise<EtcdHTTPResponse>
}

struct EtcdHTTPResponse {
    var keepAlive: Bool
    var body: [UInt8]
}

/// One request at a time on one connection: writes it, collects its response, completes its
/// promise. Runs on the channel's event loop only.
final class EtcdHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = EtcdHTTPRequest
    typealias OutboundOut = HTTPClientRequestPart

    private var pending: EventLoopPromise<EtcdHTTPResponse>?
    private var keepAlive = false
    private var answered = false
    private var body: [UInt8] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let r = unwrapOutboundIn(data)
        guard pending == nil else {
            r.promise.fail(SSIError(.busy, "etcd connection already has a request in flight"))
            return
        }
        (pending, keepAlive, answered, body) = (r.promise, false, false, [])
        context.write(wrapOutboundOut(.head(r.head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(r.body))), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            answered = true
            keepAlive = h.isKeepAlive
        case .body(var b):
            body += b.readBytes(length: b.readableBytes) ?? []
        case .end:
            let p = pending
            pending = nil
            p?.succeed(EtcdHTTPResponse(keepAlive: keepAlive, body: body))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(answered ? error : ClosedBeforeAnswer())
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(answered ? SSIError(.disconnected, "the membership service (etcd) closed the connection during an answer") : ClosedBeforeAnswer())
        context.fireChannelInactive()
    }

    private func fail(_ e: Error) {
        let p = pending
        pending = nil
        p?.fail(e)
    }
}
