import SSIControl
import SSIMembership
import SSISystem
import SSITransport
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Membership as the daemon sees it: the lease and view loop, peers' addresses handed to the
/// RPC layer, and `ssi nodes` / `ssi cluster status`.
struct MembershipSubsystem: Subsystem {
    static let name = "membership"
    let core: NodeCore

    init(core: NodeCore, settings: [String: String]) {
        self.core = core
    }

    func start() async throws {
        let rpc = core.rpc
        core.membership.subscribe { _, view in
            for n in view.values where n.port != 0 { rpc.setAddress(n.id, host: n.host, port: n.port) }
        }
    }

    var services: [any Service] { [MembershipService(membership: core.membership)] }

    func handle(_ request: ControlRequest) async throws -> ControlReply {
        guard case .membership(let r) = request else { throw misrouted(request) }
        let m = core.membership
        await m.refresh()
        switch r {
        case .status:
            return .status(DaemonStatus(node: core.config.node, session: core.config.session, pid: getpid(),
                                        nodes: m.view.values.sorted { $0.id < $1.id }, cutOff: m.cutOff,
                                        rpcCalls: core.rpc.callsSent.load(ordering: .relaxed),
                                        rejectedPeers: core.rpc.rejectedPeers.load(ordering: .relaxed), grantsInMs: m.grantsIn))
        case .add(let sel):
            let ids = try select(sel, among: [.present], verb: "added")
            for n in ids {
                guard let v = m.view[n], v.state == .present || v.state == .online else {
                    throw SSIError(.state, "node \(n) is \(m.view[n]?.state.rawValue ?? "unknown"): only present nodes can be added",
                                   hint: "start its ssid first")
                }
                try await core.etcd.put(m.prefix + "online/\(n)", Array("1".utf8))
            }
            await m.refresh()
            return .nodes(ids)
        case .remove(let sel):
            let ids = try select(sel, among: [.online, .failed], verb: "removed")
            for n in ids { try await core.etcd.delete(m.prefix + "online/\(n)") }
            await m.refresh()
            return .nodes(ids)
        }
    }

    /// The nodes a selection names. `-c N` takes the first N in `states` (online only, for a
    /// removal); `-a` every node in `states`.
    private func select(_ sel: NodeSelection, among states: Set<NodeState>, verb: String) throws -> [NodeID] {
        let view = core.membership.view
        switch sel {
        case .nodes(let ids):
            return ids
        case .count(let c):
            let pick: NodeState = states.contains(.present) ? .present : .online
            let ids = Array(view.values.filter { $0.state == pick }.map(\.id).sorted().prefix(c))
            guard ids.count == c else {
                throw SSIError(.state, "asked for \(c) nodes to be \(verb) but only \(ids.count) are \(pick.rawValue)",
                               hint: "ssi nodes status shows each node's state")
            }
            return ids
        case .all:
            return view.values.filter { states.contains($0.state) }.map(\.id).sorted()
        }
    }
}

/// Keeps the lease and the view; revokes the lease on graceful shutdown, so the others see
/// the node leave at once rather than after the lease's TTL.
struct MembershipService: Service {
    let membership: Membership
    func run() async throws {
        await cancelWhenGracefulShutdown { await membership.run() }
    }
}
