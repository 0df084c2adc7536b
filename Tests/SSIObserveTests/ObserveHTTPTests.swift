import Foundation
import Logging
import NIOHTTP1
import NIOPosix
import SSIMembership
import SSIObserve
import SSISystem
import SSITransport
import Testing

/// An observer of a node that is in no cluster: its own rows, events and metrics only.
func lonelyObserver(_ group: MultiThreadedEventLoopGroup) throws -> Observer {
    let log = Logger(label: "test")
    let rpc = RPCNode(nodeID: 1, auth: RPCAuth(secret: secret, session: 7), group: group, logger: log)
    // Never contacted: the membership view stays empty.
    let etcd = try EtcdClient(endpoints: "http://127.0.0.1:9", group: group)
    let m = Membership(me: 1, session: 7, etcd: etcd, host: "127.0.0.1", port: 7100, logger: log)
    return Observer(node: 1, session: 7, rpc: rpc, membership: m, logger: log)
}

let secret = Array("0123456789abcdef0123456789abcdef".utf8)

func curl(_ args: String...) throws -> (code: Int32, out: String) {
    try Proc.run(["curl", "-s", "--max-time", "10"] + args, check: false)
}

@Suite struct ObserveRouteTests {
    @Test(.timeLimit(.minutes(1))) func routesAnswerAndChangesNeedTheToken() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let o = try lonelyObserver(group)
        func ask(_ m: HTTPMethod, _ uri: String, auth: String? = nil, loopback: Bool = true, body: String = "") async -> HTTPReply {
            await o.respond(HTTPAsk(method: m, uri: uri, authorization: auth, fromLoopback: loopback, body: Array(body.utf8)), secret: secret)
        }
        let page = await ask(.GET, "/")
        #expect(page.status == .ok && String(decoding: page.body, as: UTF8.self).contains(#"<table id="nodes">"#))
        #expect(!String(decoding: page.body, as: UTF8.self).contains("http://") && !String(decoding: page.body, as: UTF8.self).contains("https://"),
                "the page fetches nothing from elsewhere")
        let metrics = await ask(.GET, "/metrics")
        #expect(metrics.status == .ok && metrics.contentType.hasPrefix("text/plain; version=0.0.4"))
        _ = try PromText(String(decoding: metrics.body, as: UTF8.self))
        #expect(await ask(.GET, "/api/nodes").status == .ok)
        #expect(await ask(.GET, "/nope").status == .notFound)
        #expect(await ask(.DELETE, "/api/events").status == .methodNotAllowed)

        let note = #"{"message":"drain node 2"}"#
        let refused = await ask(.POST, "/api/events", body: note)
        #expect(refused.status == .unauthorized)
        #expect(String(decoding: refused.body, as: UTF8.self).contains("nothing was done"))
        #expect(await ask(.POST, "/api/events", auth: "Bearer 00", body: note).status == .unauthorized)
        #expect(o.events.recorded == 0, "a request without the token changed nothing")
        let token = "Bearer " + DashboardToken.derive(secret: secret)
        #expect(await ask(.POST, "/api/events", auth: token, body: "not json").status == .badRequest)
        #expect(o.events.recorded == 0)
        #expect(await ask(.POST, "/api/events", auth: token, body: note).status == .created)
        #expect(o.events.all.map(\.message) == ["drain node 2"])
        // Another host gets nothing without the token, not even a GET.
        #expect(await ask(.GET, "/api/nodes", loopback: false).status == .unauthorized)
        #expect(await ask(.GET, "/api/nodes", auth: token, loopback: false).status == .ok)
        try await group.shutdownGracefully()
    }

    @Test(.timeLimit(.minutes(1)), .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl"), "needs curl"))
    func realHTTPServerOnLoopback() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let o = try lonelyObserver(group)
        o.record(ObserveEvent(kind: .applicationStarted, app: getpid(), message: "application \(getpid()) started: the test"))
        let server = HTTPServer(group: group, logger: Logger(label: "test")) { await o.respond($0, secret: secret) }
        let addr = try await server.start(host: "127.0.0.1", port: 0)
        let base = "http://\(addr)"
        #expect(try curl("-o", "/dev/null", "-w", "%{http_code}", base + "/").out == "200")
        let row = try JSONDecoder().decode(NodeRow.self, from: Data(try curl(base + "/api/node").out.utf8))
        #expect(row.id == 1 && row.reachable && row.applications == 1 && (row.memoryTotalBytes ?? 0) > 0)
        let local = await o.localApplications()
        #expect(local.first?.state == "running" && local.first?.app == getpid() && (local.first?.memoryBytes ?? 0) > 0)
        let post = try curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", #"{"message":"x"}"#, base + "/api/events")
        #expect(post.out == "401")
        #expect(o.events.recorded == 1)
        let ok = try curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(DashboardToken.derive(secret: secret))",
                          "-d", #"{"message":"x"}"#, base + "/api/events")
        #expect(ok.out == "201" && o.events.recorded == 2)
        await server.stop()
        try await group.shutdownGracefully()
    }

    /// A peer that takes the request and never answers costs the view its timeout, no more.
    @Test(.timeLimit(.minutes(1))) func aSilentPeerCostsTheTimeoutOnly() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let log = Logger(label: "test")
        let a = RPCNode(nodeID: 1, auth: RPCAuth(secret: secret, session: 7), group: group, logger: log)
        let b = RPCNode(nodeID: 2, auth: RPCAuth(secret: secret, session: 7), group: group, logger: log)
        b.register(ObserveService.summary) { _, _ in try await Task.sleep(for: .seconds(30)); return [] }
        a.setAddress(2, host: "127.0.0.1", port: try await b.listen(host: "127.0.0.1", port: 0))
        let t0 = ContinuousClock.now
        let r = await bounded(.milliseconds(300), what: "node 2") { try await a.call(2, service: ObserveService.summary, [], timeout: .seconds(30)) }
        let took = ContinuousClock.now - t0
        guard case .failure(let e) = r else { Issue.record("a silent peer answered"); return }
        #expect(e.kind == .timeout && e.message.contains("node 2"))
        #expect(took < .seconds(2), "took \(took)")
        await a.shutdown()
        await b.shutdown()
        try await group.shutdownGracefully()
    }
}
