import SSIControl
import SSIKDDM
import SSISystem
import SSITransport

/// KDDM in the daemon: its RPC services, the sets made at start, and `ssi kddm`.
struct KDDMSubsystem: Subsystem {
    static let name = "kddm"
    static let configuration: [ConfigKey] = [
        ConfigKey("sets", default: "counters processes applications ports streams",
                  help: "sets made at start when missing (rule hash); counters is ssi kddm incr's, the others wait for the process table, streams and network subsystems to declare them"),
    ]
    let core: NodeCore
    let sets: [KDDMSetInfo]

    init(core: NodeCore, settings: [String: String]) {
        self.core = core
        sets = (settings["sets"] ?? "").split(separator: " ").map { KDDMSetInfo(name: String($0), rule: .hash) }
    }

    var serviceBlock: ServiceBlock? { .kddm }

    func start() async throws { core.kddm.start() }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .kddm(let r) = request else { throw misrouted(request) }
        let k = core.kddm
        switch r {
        case .sets:
            var out: [SetSummary] = []
            for s in try await k.listSets() { out.append(SetSummary(name: s.name, rule: s.rule, objects: try await k.objectCount(s.name))) }
            return .sets(out)
        case .createSet(let name, let rule):
            try await k.createSet(name, rule: rule)
        case .deleteSet(let name):
            try await k.deleteSet(name)
        case .show(let set, let id):
            return .object(try await k.state(set, id), asker: core.config.node)
        case .get(let set, let id):
            return .value(try await k.get(set, id).map { String(decoding: $0, as: UTF8.self) })
        case .put(let set, let id, let value):
            try await k.store(set, id, Array(value.utf8))
        case .remove(let set, let id):
            try await k.remove(set, id)
        case .increment(let set, let id, let count):
            return .count(try await k.increment(set, id, count: count))
        case .flush:
            await k.flush()
        case .list(let set):
            return .objects(try await k.list(set).map { ObjectValue(id: $0.id, value: String(decoding: $0.value, as: UTF8.self)) })
        }
        return .done
    }
}
