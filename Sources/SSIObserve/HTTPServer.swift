import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SSISystem
import Synchronization

/// One HTTP request as the routes see it.
public struct HTTPAsk: Sendable {
    public var method: HTTPMethod
    public var path: String
    public var query: [String: String]
    public var authorization: String?
    /// Whether the peer's address is a loopback one: GETs are open there only.
    public var fromLoopback: Bool
    public var body: [UInt8]

    public init(method: HTTPMethod, uri: String, authorization: String?, fromLoopback: Bool, body: [UInt8]) {
        let parts = uri.split(separator: "?", maxSplits: 1)
        path = parts.first.map(String.init) ?? "/"
        var q: [String: String] = [:]
        for kv in (parts.count > 1 ? parts[1] : "").split(separator: "&") {
            let p = kv.split(separator: "=", maxSplits: 1)
            q[String(p[0])] = p.count > 1 ? String(p[1]).removingPercentEncoding ?? String(p[1]) : ""
        }
        (self.method, self.query, self.authorization, self.fromLoopback, self.body) = (method, q, authorization, fromLoopback, body)
    }
}

/// What a route answers.
public struct HTTPReply: Sendable {
    public var status: HTTPResponseStatus
    public var contentType: String
    public var body: [UInt8]
    public init(_ status: HTTPResponseStatus, _ contentType: String, _ body: [UInt8]) {
        (self.status, self.contentType, self.body) = (status, contentType, body)
    }
}

/// The dashboard's HTTP server: SwiftNIO's HTTP/1.1 codec, one request per connection
/// (`Connection: close`: the page polls every few seconds, so keeping connections buys
/// nothing), each request answered by `route` off the event loop.
public final class HTTPServer: Sendable {
    let group: EventLoopGroup
    let route: @Sendable (HTTPAsk) async -> HTTPReply
    let logger: Logger
    private let channel = Mutex<Channel?>(nil)
    /// Bodies above this are refused (413): the only body we take is a short JSON note.
    static let maxBody = 64 * 1024

    public init(group: EventLoopGroup, logger: Logger, route: @escaping @Sendable (HTTPAsk) async -> HTTPReply) {
        (self.group, self.logger, self.route) = (group, logger, route)
    }

    /// Listens on host:port; returns the address bound ("host:port", the real port when 0
    /// was asked).
    public func start(host: String, port: Int) async throws -> String {
        let route = self.route
        let ch = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try ch.pipeline.syncOperations.addHandler(HTTPRequestHandler(route: route))
                }
            }
            .bind(host: host, port: port).get()
        channel.withLock { $0 = ch }
        return "\(host):\(ch.localAddress?.port ?? port)"
    }

    public func stop() async {
        if let ch = channel.withLock({ $0 }) { try? await ch.close() }
    }
}

/// Collects one request, hands it to the route, writes the reply and closes.
final class HTTPRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let route: @Sendable (HTTPAsk) async -> HTTPReply
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooBig = false

    init(route: @escaping @Sendable (HTTPAsk) async -> HTTPReply) { self.route = route }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            (head, body, tooBig) = (h, [], false)
        case .body(var b):
            if body.count + b.readableBytes > HTTPServer.maxBody { tooBig = true } else { body += b.readBytes(length: b.readableBytes) ?? [] }
        case .end:
            guard let h = head else { return }
            let ch = context.channel
            if tooBig {
                Self.write(HTTPReply(.payloadTooLarge, "application/json", Array(#"{"error":"request body over 64 KiB"}"#.utf8)), on: ch)
                return
            }
            let ask = HTTPAsk(method: h.method, uri: h.uri, authorization: h.headers.first(name: "authorization"),
                              fromLoopback: Self.isLoopback(context.remoteAddress), body: body)
            Self.answer(ask, route: route, on: ch)
        }
    }

    /// The route runs off the event loop (it may wait on other nodes); the reply is written
    /// from wherever it ends, the channel hopping to its loop by itself.
    static func answer(_ ask: HTTPAsk, route: @escaping @Sendable (HTTPAsk) async -> HTTPReply, on ch: any Channel) {
        Task {
            let reply = await route(ask)
            write(reply, on: ch)
        }
    }

    static func isLoopback(_ a: SocketAddress?) -> Bool {
        guard let ip = a?.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    static func write(_ r: HTTPReply, on ch: Channel) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: r.contentType)
        headers.add(name: "Content-Length", value: "\(r.body.count)")
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Cache-Control", value: "no-store")
        let head = HTTPResponseHead(version: .http1_1, status: r.status, headers: headers)
        let buf = ch.allocator.buffer(bytes: r.body)
        ch.write(HTTPServerResponsePart.head(head), promise: nil)
        ch.write(HTTPServerResponsePart.body(.byteBuffer(buf)), promise: nil)
        ch.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in ch.close(promise: nil) }
    }
}
