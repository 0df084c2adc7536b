import Foundation
import Logging
import NIOPosix
import SSIKDDM
import SSIMembership
import SSISystem
import SSITransport
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Records what KDDM asked of a set's subsystem.
final class RecordingHooks: KDDMSetHooks {
    let touched = Mutex<[UInt64]>([])
    let invalidated = Mutex<[(UInt64, NodeID)]>([])
    func firstTouch(id: UInt64) -> [UInt8]? { touched.withLock { $0.append(id) }; return Array("fresh-\(id)".utf8) }
    func export(_ value: [UInt8]) -> [UInt8] { value.reversed() }
    func `import`(_ bytes: [UInt8]) -> [UInt8] { bytes.reversed() }
    func invalidated(id: UInt64, on node: NodeID) { invalidated.withLock { $0.append((id, node)) } }
}

/// Runs `body` against a fresh etcd on a loopback port, then stops it and removes its data.
func withEtcd(_ body: (EtcdClient, MultiThreadedEventLoopGroup) async throws -> Void) async throws {
    Proc.becomeSubreaper()
    let dir = "/tmp/ssi-kddm-test-\(getpid())"
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    // Ports below the ephemeral range (ip_local_port_range starts at 32768), where no
    // outgoing connection holds one; a port some listener took anyway makes etcd exit
    // ("bind: address already in use"), and another is tried.
    for _ in 0..<5 {
        let port = Int.random(in: 20000...29000)
        try? FileManager.default.removeItem(atPath: dir)
        let etcdPid = try Proc.spawn([toolPath("etcd")!, "--data-dir", dir, "--listen-client-urls", "http://127.0.0.1:\(port)",
                                      "--advertise-client-urls", "http://127.0.0.1:\(port)", "--listen-peer-urls", "http://127.0.0.1:\(port + 1)",
                                      "--initial-advertise-peer-urls", "http://127.0.0.1:\(port + 1)",
                                      "--initial-cluster", "default=http://127.0.0.1:\(port + 1)", "--log-level", "warn"], log: "/tmp/ssi-kddm-test-etcd.log")
        defer {
            kill(etcdPid, SIGKILL)
            var st: Int32 = 0
            waitpid(etcdPid, &st, 0)
            try? FileManager.default.removeItem(atPath: dir)
        }
        let etcd = try EtcdClient(endpoints: "http://127.0.0.1:\(port)", group: group)
        var ready = false
        for _ in 0..<200 where !ready && Proc.alive(etcdPid) {
            ready = (try? await etcd.put("/probe", [1])) != nil
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        guard ready else { continue }
        try await body(etcd, group)
        try await group.shutdownGracefully()
        return
    }
    try await group.shutdownGracefully()
    Issue.record("etcd did not start on five ports: see /tmp/ssi-kddm-test-etcd.log")
}

@Suite(.serialized, .enabled(if: toolPath("etcd") != nil, "needs etcd: run scripts/setup-cluster.sh"))
struct KDDMInProcessTests {
    /// What settling an unknown outcome rests on: a tagged write is done only if the tag has
    /// the revision it expects, so voiding the tag makes a write still pending fail, and a
    /// tag that was not voided names the write that was done.
    @Test(.timeLimit(.minutes(1))) func taggedWritesCanBeSettled() async throws {
        try await withEtcd { etcd, _ in
            let (obj, tag) = ("/t\(getpid())/obj", "/t\(getpid())/obj/w")
            let r1 = try #require(try await etcd.taggedWrite(obj, expected: 0, Array("v1".utf8), tagKey: tag, tagExpected: 0, tag: "111"))
            #expect(try await etcd.get(tag)?.value == Array("111".utf8))
            // A write whose tag revision is stale fails, whatever the object's revision.
            #expect(try await etcd.taggedWrite(obj, expected: r1, Array("v2".utf8), tagKey: tag, tagExpected: 0, tag: "222") == nil)
            // Not voided: the tag says who wrote.
            let seen = try await etcd.voidTag(tag, expected: 0, void: "void:222")
            #expect(!seen.voided && seen.tag?.value == Array("111".utf8))
            // Voided: a write pending with the old tag revision can no longer be done.
            let v = try await etcd.voidTag(tag, expected: r1, void: "void:333")
            #expect(v.voided && v.revision > r1)
            #expect(try await etcd.taggedWrite(obj, expected: r1, Array("v3".utf8), tagKey: tag, tagExpected: r1, tag: "333") == nil)
            #expect(try await etcd.get(obj)?.value == Array("v1".utf8))
            // The object's revision is untouched by the void: the next writer compares on it.
            #expect(try await etcd.taggedWrite(obj, expected: r1, Array("v4".utf8), tagKey: tag, tagExpected: v.revision, tag: "444") != nil)
            // A delete is tagged too.
            let r4 = try #require(try await etcd.get(obj)).modRevision
            #expect(try await etcd.taggedWrite(obj, expected: r4, nil, tagKey: tag, tagExpected: r4, tag: "555") != nil)
            #expect(try await etcd.get(obj) == nil)
            #expect(try await etcd.get(tag)?.value == Array("555".utf8))
        }
    }

    /// Two KDDM nodes in this process against a real etcd on loopback (no root needed): the
    /// I/O hooks, cached gets without RPC, invalidation on grab, and durability through etcd.
    @Test(.timeLimit(.minutes(1))) func hooksCacheAndInvalidation() async throws {
        try await withEtcd { etcd, group in
            let log = Logger(label: "kddm-test")
            let session = UInt64.random(in: 1...1_000_000)
            let secret = Array("0123456789abcdef0123456789abcdef".utf8)
            var nodes: [(RPCNode, Membership, KDDM, RecordingHooks)] = []
            for id: NodeID in [1, 2] {
                let rpc = RPCNode(nodeID: id, auth: RPCAuth(secret: secret, session: session), group: group, logger: log)
                let p = try await rpc.listen(host: "127.0.0.1", port: 0)
                let m = Membership(me: id, session: session, etcd: etcd, host: "127.0.0.1", port: p, logger: log)
                let k = KDDM(rpc: rpc, etcd: etcd, membership: m, logger: log)
                k.start()
                m.subscribe { _, view in for n in view.values where n.port != 0 { rpc.setAddress(n.id, host: n.host, port: n.port) } }
                try await m.register(join: true)
                let hooks = RecordingHooks()
                k.register(hooks: hooks, for: "objs")
                nodes.append((rpc, m, k, hooks))
            }
            for n in nodes { await n.1.refresh() }
            // Keep-alives and the view poll: a node serves cached copies only while both are fresh.
            let loops = nodes.map { n in Task { await n.1.run() } }
            let (rpc1, _, k1, h1) = nodes[0]
            let (_, _, k2, h2) = nodes[1]
            try await k1.createSet("objs", rule: .fixed(2))
            // First touch: the owner's hook gives the value of an object nobody wrote.
            #expect(try await k1.get("objs", 10) == Array("fresh-10".utf8))
            #expect(h2.touched.withLock { $0 } == [10])
            #expect(h1.touched.withLock { $0 }.isEmpty)
            // A cached get makes no RPC.
            let before = rpc1.callsSent.load(ordering: .relaxed)
            for _ in 0..<100 { _ = try await k1.get("objs", 10) }
            #expect(rpc1.callsSent.load(ordering: .relaxed) == before)
            // A grab on the owner invalidates node 1's copy (its hook hears of it).
            _ = try await k2.grab("objs", 10)
            #expect(h1.invalidated.withLock { $0.map(\.0) } == [10])
            try await k2.put("objs", 10, Array("new".utf8))
            #expect(try await k1.get("objs", 10) == Array("new".utf8))
            // Stored through the export hook (reversed), read back through import.
            let raw = try await etcd.get("/ssi/\(session)/kddm/obj/objs/000000000000000a")
            #expect(raw?.value == Array("wen".utf8))
            // A put without a grab is refused.
            await #expect(throws: SSIError.self) { try await k1.put("objs", 10, [1]) }
            // Deleting a set: refused while this node holds one of its objects grabbed, then gone
            // from etcd and from both nodes' caches; a deleted set is refused by name.
            #expect(try await k1.get("objs", 10) == Array("new".utf8))
            _ = try await k2.grab("objs", 11)
            await #expect(throws: SSIError.self) { try await k2.deleteSet("objs") }
            try await k2.release("objs", 11)
            try await k2.deleteSet("objs")
            #expect(try await etcd.list(prefix: "/ssi/\(session)/kddm/obj/objs/").isEmpty)
            #expect(try await k1.listSets().map(\.name).contains("objs") == false)
            do {
                _ = try await k1.get("objs", 10)
                Issue.record("a get in a deleted set must fail")
            } catch let e as SSIError {
                #expect("\(e)".contains("no set 'objs'"), "\(e)")
            }
            for l in loops { l.cancel() }
            for l in loops { await l.value }
            for n in nodes { await n.0.shutdown() }
            try await etcd.delete(prefix: "/ssi/\(session)/")
        }
    }
}
