import Foundation
@testable import SSIMembership
import Testing

// The etcd client writes its requests' JSON itself (EtcdJSON): what it writes must read back,
// through Foundation's parser, as the very request it was given, escapes included; and what it
// cannot write is left to JSONSerialization.
@Suite struct EtcdJSONTests {
    /// Through Foundation's parser and back to a canonical form: two bodies compare equal when
    /// they parse to the same JSON.
    static func canonical(_ bytes: [UInt8]) throws -> Data {
        let obj = try JSONSerialization.jsonObject(with: Data(bytes))
        return try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
    }

    @Test func aTaggedWriteReadsBackAsItWas() throws {
        let body: [String: Any] = [
            "compare": [["key": "L3NzaS9rZGRtL29iag==", "target": "MOD", "mod_revision": "41", "result": "EQUAL"],
                        ["key": "L3cv", "range_end": "L3cw", "target": "CREATE", "create_revision": "42", "result": "LESS"]],
            "success": [["request_put": ["key": "a2V5", "value": "dmFsdWU="]], ["request_delete_range": ["key": "eA=="]]],
            "failure": [] as [Any],
        ]
        let ours = try #require(EtcdJSON.encode(body))
        #expect(try Self.canonical(ours) == JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]))
    }

    @Test func stringsAreEscaped() throws {
        let nasty = "quote \" backslash \\ newline \n tab \t return \r bell \u{07} nul \u{00} unit \u{1F} é 日本 🙂 /slash"
        let body: [String: Any] = ["key": nasty, nasty: ["nested": [nasty, true, false, 7, Int64(-9_000_000_000)]]]
        let ours = try #require(EtcdJSON.encode(body))
        let back = try #require(try JSONSerialization.jsonObject(with: Data(ours)) as? [String: Any])
        #expect(back["key"] as? String == nasty)
        let inner = try #require((back[nasty] as? [String: Any])?["nested"] as? [Any])
        #expect(inner.count == 5)
        #expect(inner.first as? String == nasty)
        #expect((inner[3] as? NSNumber)?.intValue == 7)
        #expect((inner[4] as? NSNumber)?.int64Value == -9_000_000_000)
        // No raw control character left in the bytes (RFC 8259 forbids them in strings).
        #expect(!ours.contains { $0 < 0x20 })
    }

    @Test func whatItCannotWriteIsLeftToFoundation() {
        #expect(EtcdJSON.encode(["x": 1.5]) == nil)
        #expect(EtcdJSON.encode(["x": ["y": Date()]]) == nil)
        #expect(EtcdJSON.encode([:]) == Array("{}".utf8))
    }
}
