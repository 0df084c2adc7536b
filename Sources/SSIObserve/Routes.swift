import Foundation
import NIOHTTP1
import SSISystem

/// The dashboard's routes (docs/observe.md). GETs only read; a change (POST) needs the bearer
/// token derived from the cluster secret (`DashboardToken`), and so does any request from a
/// peer that is not on loopback, where the server is open to no one else.
extension Observer {
    public func respond(_ ask: HTTPAsk, secret: [UInt8]) async -> HTTPReply {
        let authorized = DashboardToken.accepts(ask.authorization, secret: secret)
        if !ask.fromLoopback && !authorized {
            return Self.problem(.unauthorized, "node \(node): the dashboard answers other hosts only with a token",
                                hint: "send Authorization: Bearer $(ssi dashboard token), or reach it from the node itself")
        }
        switch (ask.method, ask.path) {
        case (.GET, "/"), (.GET, "/index.html"):
            return HTTPReply(.ok, "text/html; charset=utf-8", Array(DashboardPage.html.utf8))
        case (.GET, "/metrics"):
            // The content type Prometheus expects of the text format, version 0.0.4.
            return HTTPReply(.ok, "text/plain; version=0.0.4; charset=utf-8", Array(await metricsText().utf8))
        case (.GET, "/api/cluster"):
            return Self.json(await cluster(eventLimit: Self.limit(ask, default: 100)))
        case (.GET, "/api/nodes"):
            return Self.json(await clusterNodes())
        case (.GET, "/api/node"):
            return Self.json(await localRow())
        case (.GET, "/api/applications"):
            return Self.json(await clusterApplications())
        case (.GET, "/api/events"):
            return Self.json(await clusterEvents(limit: Self.limit(ask, default: 200)))
        case (.POST, _):
            guard authorized else {
                return Self.problem(.unauthorized, "node \(node): \(ask.path) changes state and needs the dashboard token; nothing was done",
                                    hint: "send Authorization: Bearer $(ssi dashboard token)")
            }
            return post(ask)
        case (.GET, _):
            return Self.problem(.notFound, "node \(node): no page \(ask.path)", hint: "see / or docs/observe.md for the API")
        default:
            return Self.problem(.methodNotAllowed, "node \(node): \(ask.method) is not served", hint: "use GET, or POST with the token")
        }
    }

    /// The one change served so far: an operator's note in the event history
    /// (`POST /api/events {"message": "..."}`).
    private func post(_ ask: HTTPAsk) -> HTTPReply {
        guard ask.path == "/api/events" else {
            return Self.problem(.notFound, "node \(node): no action \(ask.path)", hint: "POST /api/events {\"message\": TEXT} adds a note")
        }
        struct Note: Decodable { var message: String }
        guard let n = try? JSONDecoder().decode(Note.self, from: Data(ask.body)), !n.message.isEmpty, n.message.count <= 1000 else {
            return Self.problem(.badRequest, "node \(node): the body is not {\"message\": TEXT} with 1 to 1000 characters; nothing was recorded",
                                hint: "curl -X POST -H 'Authorization: Bearer TOKEN' -d '{\"message\":\"drain node 2\"}' .../api/events")
        }
        return Self.json(record(ObserveEvent(kind: .note, message: n.message)), status: .created)
    }

    static func limit(_ ask: HTTPAsk, default d: Int) -> Int {
        ask.query["limit"].flatMap(Int.init).map { min(max($0, 1), 1000) } ?? d
    }

    static func json<T: Encodable>(_ v: T, status: HTTPResponseStatus = .ok) -> HTTPReply {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? e.encode(v)) ?? Data(#"{"error":"unencodable reply"}"#.utf8)
        return HTTPReply(status, "application/json", [UInt8](body))
    }

    static func problem(_ status: HTTPResponseStatus, _ message: String, hint: String) -> HTTPReply {
        json(["error": message, "hint": hint], status: status)
    }
}
