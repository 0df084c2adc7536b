import Foundation
import Logging
import SSIKDDM
import SSIMembership
import SSISystem
import SSITransport
import Synchronization
import Testing

// The owner side of KDDM's coherence protocol, driven without etcd or a network: an
// in-memory store, a view the test moves by hand, peers that acknowledge or stay silent.

/// A view the test sets.
final class FakeView: KDDMView {
    private let snap: Mutex<ViewSnapshot>
    let refreshes = Atomic<Int>(0)

    init(online: [NodeID], id: UInt64 = 42) {
        snap = Mutex(ViewSnapshot(online: online, viewID: id, fence: .none, lease: 1,
                                  trustedUntil: .now + .seconds(3600), grantsFrom: .now - .seconds(1)))
    }

    var snapshot: ViewSnapshot { snap.withLock { $0 } }
    var cutOff: Bool { false }
    func refresh() async { refreshes.add(1, ordering: .relaxed) }
    func change(_ body: (inout ViewSnapshot) -> Void) { snap.withLock { body(&$0) } }
}

/// etcd's semantics for what the owner uses: revisions, tagged compare-and-write, voiding.
actor MemoryStore: KDDMStore {
    enum Fault { case unknownButDone, unknownNotDone, silent }
    var revision: Int64 = 1
    var objects: [ObjKey: (value: [UInt8], rev: Int64)] = [:]
    var tags: [ObjKey: (tag: String, rev: Int64)] = [:]
    var setTable: [String: (info: KDDMSetInfo, rev: Int64)] = [:]
    var revoked: [NodeID] = []
    var nextWrite: Fault?
    var voidsRefused = false

    init(sets: [KDDMSetInfo]) {
        for s in sets { setTable[s.name] = (s, 1) }
    }

    func fail(next f: Fault?) { nextWrite = f }
    func value(_ key: ObjKey) -> String? { objects[key].map { String(decoding: $0.value, as: UTF8.self) } }
    func tag(_ key: ObjKey) -> String? { tags[key]?.tag }
    /// Another owner's write: the object's revision moves.
    func overwrite(_ key: ObjKey, _ value: [UInt8]) {
        revision += 1
        objects[key] = (value, revision)
    }

    func load(_ key: ObjKey) -> StoredObject {
        StoredObject(value: objects[key]?.value, rev: objects[key]?.rev ?? 0, tagRev: tags[key]?.rev ?? 0)
    }

    func write(_ key: ObjKey, expected: Int64, _ value: [UInt8]?, tagExpected: Int64, tag: String, fence: EtcdClient.Fence) throws -> Int64? {
        let fault = nextWrite
        nextWrite = nil
        if fault == .silent { voidsRefused = true }
        if fault == .unknownNotDone || fault == .silent { throw SSIError(.unknownOutcome, "test: no answer") }
        guard (objects[key]?.rev ?? 0) == expected, (tags[key]?.rev ?? 0) == tagExpected else { return nil }
        revision += 1
        objects[key] = value.map { ($0, revision) }
        tags[key] = (tag, revision)
        if fault == .unknownButDone { throw SSIError(.unknownOutcome, "test: no answer") }
        return revision
    }

    func voidTag(_ key: ObjKey, expected: Int64, void: String) throws -> (voided: Bool, revision: Int64, tag: (value: [UInt8], rev: Int64)?) {
        if voidsRefused { throw SSIError(.unreachable, "test: etcd is gone") }
        guard (tags[key]?.rev ?? 0) == expected else { return (false, 0, tags[key].map { (Array($0.tag.utf8), $0.rev) }) }
        revision += 1
        tags[key] = (void, revision)
        return (true, revision, nil)
    }

    func revokeLease(of node: NodeID) -> Int64? {
        revoked.append(node)
        return 1000 + Int64(node)
    }

    func set(_ name: String) -> (info: KDDMSetInfo, rev: Int64)? { setTable[name] }
    func createSet(_ info: KDDMSetInfo) -> (info: KDDMSetInfo, rev: Int64)? { setTable[info.name] }
    func sets() -> [(info: KDDMSetInfo, rev: Int64)] { Array(setTable.values) }
    func deleteSet(_ name: String) { setTable[name] = nil }
    func objectCount(_ set: String) -> Int { objects.keys.filter { $0.set == set }.count }
    func objects(in set: String) -> [(id: UInt64, value: [UInt8])] {
        objects.filter { $0.key.set == set }.map { ($0.key.id, $0.value.value) }.sorted { $0.id < $1.id }
    }
}

/// Readers that acknowledge an invalidation, except the silent ones.
final class FakePeers: KDDMPeers {
    let silent: Set<NodeID>
    let invalidated = Mutex<[(ObjKey, NodeID)]>([])
    init(silent: Set<NodeID> = []) { self.silent = silent }

    func invalidate(_ key: ObjKey, on node: NodeID, timeout: Duration) async throws {
        invalidated.withLock { $0.append((key, node)) }
        if silent.contains(node) { throw SSIError(.timeout, "test: node \(node) is silent") }
    }
}

struct OwnerWorld {
    let view = FakeView(online: [1, 2, 3, 4])
    let store: MemoryStore
    let peers: FakePeers
    let owner: KDDMOwner
    let key = ObjKey(set: "s", id: 7)

    init(silent: Set<NodeID> = [], hooks: [String: any KDDMSetHooks] = [:]) {
        store = MemoryStore(sets: [KDDMSetInfo(name: "s", rule: .fixed(1))])
        peers = FakePeers(silent: silent)
        var timing = KDDMOwner.Timing()
        timing.invalidateTimeout = .milliseconds(50)
        timing.fenceWait = .milliseconds(50)
        timing.settleBackoff = .milliseconds(1)
        owner = KDDMOwner(me: 1, view: view, store: store, peers: peers, hooks: hooks, logger: Logger(label: "owner-test"), timing: timing)
    }

    /// What an asker on `node` sends: its view and the set's incarnation.
    func msg(grab: UInt64 = 0, value: String? = nil, rev: Int64 = 0) -> ObjMsg {
        ObjMsg(key: key, value: value.map { Array($0.utf8) }, rev: rev, view: view.snapshot.viewID, setRev: 1, grab: grab)
    }

    func grab(_ node: NodeID, _ id: UInt64) async throws -> ObjMsg { try await owner.grab(msg(grab: id), from: node) }

    func put(_ node: NodeID, _ id: UInt64, _ value: String, rev: Int64) async throws -> ObjMsg {
        try await owner.put(msg(grab: id, value: value, rev: rev), from: node, delete: false)
    }

    func state() async throws -> KDDMObjectState { try await owner.state(key) }

    /// Waits until `n` grabs queue behind the writer.
    func waitForQueue(_ n: Int) async throws {
        for _ in 0..<200 where try await state().waiting < n { try await Task.sleep(for: .milliseconds(5)) }
        #expect(try await state().waiting == n)
    }
}

func kind(of body: () async throws -> Void) async -> SSIError.Kind? {
    do { try await body() } catch { return (error as? SSIError)?.kind }
    return nil
}

@Suite(.timeLimit(.minutes(1))) struct KDDMOwnerTests {
    @Test func readRecordsReadersAndGrabInvalidatesThem() async throws {
        let w = OwnerWorld()
        let r = try await w.owner.read(w.msg(), from: 2)
        #expect(r.value == nil && r.rev == 0)
        _ = try await w.owner.read(w.msg(), from: 3)
        #expect(try await w.state().readers == [2, 3])
        let g = try await w.grab(3, 11)
        #expect(g.rev == 0)
        // Every reader but the writer was invalidated; the writer holds it.
        #expect(w.peers.invalidated.withLock { $0.map(\.1) } == [2])
        let s = try await w.state()
        #expect(s.writer == 3 && s.readers.isEmpty)
        let p = try await w.put(3, 11, "v1", rev: g.rev)
        #expect(p.rev > 0)
        #expect(await w.store.value(w.key) == "v1")
        // The writer keeps a read copy of what it wrote; the object is free again.
        let after = try await w.state()
        #expect(after.writer == nil && after.readers == [3] && after.value == Array("v1".utf8) && after.revision == p.rev)
    }

    @Test func askersOfAnotherViewOwnerOrSetAreTurnedAwayWithRetryableKinds() async throws {
        let w = OwnerWorld()
        var m = w.msg()
        m.view = 99
        #expect(await kind { _ = try await w.owner.read(m, from: 2) } == .otherView)
        #expect(w.view.refreshes.load(ordering: .relaxed) == 1, "a lagging owner reads the view once more")
        m = w.msg()
        m.setRev = 5
        #expect(await kind { _ = try await w.owner.read(m, from: 2) } == .setChanged)
        let other = ObjMsg(key: ObjKey(set: "s", id: 7), view: 42, setRev: 1)
        let notMine = KDDMOwner(me: 2, view: w.view, store: w.store, peers: w.peers, logger: Logger(label: "t"), timing: .init())
        #expect(await kind { _ = try await notMine.read(other, from: 3) } == .notOwner)
        w.view.change { $0.trustedUntil = .now - .seconds(1) }
        #expect(await kind { _ = try await w.owner.read(w.msg(), from: 2) } == .untrustedView)
    }

    @Test func writersQueueInOrderAndReadersWaitForTheWriter() async throws {
        let w = OwnerWorld()
        let first = try await w.grab(2, 21)
        let second = Task { try await w.grab(3, 31) }
        try await w.waitForQueue(1)
        let third = Task { try await w.grab(4, 41) }
        try await w.waitForQueue(2)
        let reader = Task { try await w.owner.read(w.msg(), from: 2) }
        let p1 = try await w.put(2, 21, "a", rev: first.rev)
        let g2 = try await second.value
        #expect(g2.value == Array("a".utf8) && g2.rev == p1.rev)
        #expect(try await w.state().writer == 3)
        await w.owner.release(w.key, from: 3, grab: 31)
        let g3 = try await third.value
        #expect(try await w.state().writer == 4)
        let p3 = try await w.put(4, 41, "c", rev: g3.rev)
        // The reader waited for both writers and reads the last value.
        let r = try await reader.value
        #expect(r.value == Array("c".utf8) && r.rev == p3.rev)
    }

    @Test func releasesAreNamedAndAGrabGivenUpEarlyNeverTakesTheObject() async throws {
        let w = OwnerWorld()
        _ = try await w.grab(2, 21)
        // A late release of another grab of node 2 frees nothing.
        await w.owner.release(w.key, from: 2, grab: 99)
        #expect(try await w.state().writer == 2)
        // Node 3 gives up a grab before it reaches the owner: when it arrives, it fails.
        await w.owner.release(w.key, from: 3, grab: 31)
        await w.owner.release(w.key, from: 2, grab: 21)
        #expect(await kind { _ = try await w.grab(3, 31) } == .state)
        #expect(try await w.state().writer == nil)
        // A queued grab released by its asker leaves the queue and fails.
        _ = try await w.grab(2, 22)
        let queued = Task { try await w.grab(3, 32) }
        try await w.waitForQueue(1)
        await w.owner.release(w.key, from: 3, grab: 32)
        #expect(await kind { _ = try await queued.value } == .ownerMoved)
        #expect(try await w.state().writer == 2)
    }

    @Test func aNewGrabOfTheSameNodeReplacesItsDeadOne() async throws {
        let w = OwnerWorld()
        let old = try await w.grab(2, 21)
        _ = try await w.grab(2, 22)
        #expect(await kind { _ = try await w.put(2, 21, "late", rev: old.rev) } == .conflict)
        _ = try await w.put(2, 22, "new", rev: old.rev)
        #expect(await w.store.value(w.key) == "new")
    }

    @Test func aViewChangeDropsEntriesAndFailsWhoeverWaits() async throws {
        let w = OwnerWorld()
        let g = try await w.grab(2, 21)
        let waiting = Task { try await w.grab(3, 31) }
        try await w.waitForQueue(1)
        w.view.change { $0.viewID = 43 }
        await w.owner.viewChanged()
        #expect(await kind { _ = try await waiting.value } == .ownerMoved)
        // The grab was granted in the old view: its put is refused, and nothing is written.
        var m = w.msg(grab: 21, value: "x", rev: g.rev)
        m.view = 42
        #expect(await kind { _ = try await w.owner.put(m, from: 2, delete: false) } == .otherView)
        #expect(await w.store.value(w.key) == nil)
    }

    @Test func aReaderThatDoesNotAcknowledgeIsFencedOutBeforeTheGrab() async throws {
        let w = OwnerWorld(silent: [2])
        _ = try await w.owner.read(w.msg(), from: 2)
        let t0 = ContinuousClock.now
        _ = try await w.grab(3, 31)
        #expect(await w.store.revoked == [2])
        #expect(ContinuousClock.now - t0 >= .milliseconds(50), "the owner waits for the fenced reader to stop trusting its copy")
    }

    @Test func aGrabWaitsOutTheGraceAfterAViewChange() async throws {
        let w = OwnerWorld()
        w.view.change { $0.grantsFrom = .now + .milliseconds(150) }
        let t0 = ContinuousClock.now
        _ = try await w.grab(2, 21)
        #expect(ContinuousClock.now - t0 >= .milliseconds(140))
    }

    @Test func aPutThatLostARaceChangesNothing() async throws {
        let w = OwnerWorld()
        let g = try await w.grab(2, 21)
        await w.store.overwrite(w.key, Array("theirs".utf8))
        #expect(await kind { _ = try await w.put(2, 21, "ours", rev: g.rev) } == .conflict)
        #expect(await w.store.value(w.key) == "theirs")
        // The entry was dropped: the next reader gets the store's value.
        #expect(try await w.owner.read(w.msg(), from: 3).value == Array("theirs".utf8))
    }

    @Test func unknownOutcomesAreSettledByTheirTag() async throws {
        let w = OwnerWorld()
        // Done, though the store did not say so: the tag is ours.
        var g = try await w.grab(2, 21)
        await w.store.fail(next: .unknownButDone)
        let done = try await w.put(2, 21, "done", rev: g.rev)
        #expect(await w.store.value(w.key) == "done" && done.rev > 0)
        // Not done: the tag is voided, so the write can never be applied; grab again.
        g = try await w.grab(2, 22)
        await w.store.fail(next: .unknownNotDone)
        #expect(await kind { _ = try await w.put(2, 22, "lost", rev: g.rev) } == .conflict)
        #expect(await w.store.tag(w.key) == "void:22")
        // The next writer compares on the voided tag, and succeeds.
        g = try await w.grab(3, 31)
        _ = try await w.put(3, 31, "next", rev: g.rev)
        #expect(await w.store.value(w.key) == "next")
        // The store stays silent: the outcome stays unknown, and says so.
        g = try await w.grab(2, 23)
        await w.store.fail(next: .silent)
        #expect(await kind { _ = try await w.put(2, 23, "maybe", rev: g.rev) } == .unknownOutcome)
    }

    @Test func hooksGiveFirstValuesAndTranslateWhatIsStored() async throws {
        let w = OwnerWorld(hooks: ["s": RecordingHooks()])
        #expect(try await w.owner.read(w.msg(), from: 2).value == Array("fresh-7".utf8))
        let g = try await w.grab(2, 21)
        _ = try await w.put(2, 21, "abc", rev: g.rev)
        #expect(await w.store.value(w.key) == "cba")
    }
}

/// KDDM's messages on the wire: the value as base64 text (an array of JSON numbers decoded
/// slowly), any byte preserved, the array form of an earlier daemon still read, and a value
/// that is neither refused.
@Suite struct ObjMsgCodingTests {
    @Test func valueTravelsAsBase64AndComesBackWhole() throws {
        let m = ObjMsg(key: ObjKey(set: "applications", id: 10000001), value: (0...255).map { UInt8($0) } + [0, 0], rev: 7, view: 3, setRev: 2, grab: 99)
        let json = try JSONEncoder().encode(m)
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains("\"value\":\""), "a string, not an array: \(text.prefix(80))")
        let back = try JSONDecoder().decode(ObjMsg.self, from: json)
        #expect(back.value == m.value && back.rev == 7 && back.view == 3 && back.setRev == 2 && back.grab == 99 && back.key.id == 10000001)
        let none = try JSONDecoder().decode(ObjMsg.self, from: JSONEncoder().encode(ObjMsg(key: ObjKey(set: "s", id: 1))))
        #expect(none.value == nil)
    }

    @Test func earlierArrayFormIsReadAndGarbageRefused() throws {
        let old = #"{"key":{"set":"s","id":5},"value":[1,2,255],"rev":1,"view":0,"setRev":0,"grab":0}"#
        #expect(try JSONDecoder().decode(ObjMsg.self, from: Data(old.utf8)).value == [1, 2, 255])
        let bad = #"{"key":{"set":"s","id":5},"value":"%%% not base64","rev":1}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(ObjMsg.self, from: Data(bad.utf8)) }
    }
}
