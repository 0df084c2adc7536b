import SSIProcessTable
import Testing

/// `ssi restart APP1 APP2` takes the versions of the latest checkpoint that froze them all
/// together (SnapshotCatalog.takenTogether), whatever was checkpointed alone since.
@Suite struct SnapshotGroupTests {
    typealias V = SnapshotCatalog.Version
    static func v(_ n: Int, _ together: SnapshotCatalog.Together? = nil) -> V {
        var v = V(version: n, date: "2026-12-07T00:00:0\(n)Z", description: "", size: 1, nodes: [1])
        v.together = together
        return v
    }
    static func group(_ id: String, _ members: [(Int32, Int)]) -> SnapshotCatalog.Together {
        .init(group: id, members: members.map { .init(app: $0.0, version: $0.1) })
    }

    @Test func theLatestGroupTakenTogetherWins() {
        let (a, b, c): (Int32, Int32, Int32) = (10_000_001, 10_000_002, 10_000_003)
        let g1 = Self.group("g1", [(a, 1), (b, 1)]), g2 = Self.group("g2", [(a, 3), (b, 2), (c, 1)])
        let catalogs = [
            SnapshotCatalog(app: a, versions: [Self.v(1, g1), Self.v(2), Self.v(3, g2), Self.v(4)]),
            SnapshotCatalog(app: b, versions: [Self.v(1, g1), Self.v(2, g2), Self.v(3)]),
            SnapshotCatalog(app: c, versions: [Self.v(1, g2)]),
        ]
        // a's v4 and b's v3 were taken alone: the group of a v3, b v2 is the latest whole one.
        #expect(SnapshotCatalog.takenTogether([a, b], in: catalogs) == [a: 3, b: 2])
        #expect(SnapshotCatalog.takenTogether([b, a], in: catalogs) == [a: 3, b: 2])
        #expect(SnapshotCatalog.takenTogether([a, b, c], in: catalogs) == [a: 3, b: 2, c: 1])
        // A member's version deleted since breaks its group: the older one is taken.
        var broken = catalogs
        broken[1].versions.removeAll { $0.version == 2 }
        #expect(SnapshotCatalog.takenTogether([a, b], in: broken) == [a: 1, b: 1])
        #expect(SnapshotCatalog.takenTogether([a, b, c], in: broken) == nil)
        // Never taken together, or unknown: nil (each from its latest).
        #expect(SnapshotCatalog.takenTogether([a, 10_000_009], in: catalogs) == nil)
        #expect(SnapshotCatalog.takenTogether([10_000_009, a], in: catalogs) == nil)
        #expect(SnapshotCatalog.takenTogether([c, a], in: [catalogs[2], SnapshotCatalog(app: a, versions: [Self.v(3)])]) == nil)
    }
}
