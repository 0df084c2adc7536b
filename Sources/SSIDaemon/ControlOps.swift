import Foundation
import SSICluster
#if canImport(Glibc)
import Glibc
#endif

/// What the control socket can be asked. Each op answers a JSON value.
enum ControlOps {
    static func str(_ r: [String: Any], _ k: String) throws -> String {
        guard let v = r[k] as? String else { throw ClusterError.config("request lacks '\(k)'") }
        return v
    }
    static func int(_ r: [String: Any], _ k: String, _ def: Int? = nil) throws -> Int {
        if let v = r[k] as? Int { return v }
        if let v = r[k] as? NSNumber { return v.intValue }
        if let d = def { return d }
        throw ClusterError.config("request lacks '\(k)'")
    }
    static func id(_ r: [String: Any]) throws -> UInt64 {
        if let s = r["id"] as? String, let v = UInt64(s) { return v }
        if let n = r["id"] as? NSNumber { return n.uint64Value }
        throw ClusterError.config("request lacks 'id' (a 64-bit object id)")
    }

    static func handle(_ r: [String: Any], daemon d: NodeDaemon) async throws -> Any? {
        let op = try str(r, "op")
        switch op {
        case "status":
            await d.membership.refresh()
            let nodes = d.membership.view.values.sorted { $0.id < $1.id }.map {
                ["id": Int($0.id), "state": $0.state.rawValue, "host": $0.host, "port": $0.port] as [String: Any]
            }
            return ["node": Int(d.config.node), "session": String(d.config.session), "pid": Int(getpid()), "nodes": nodes,
                    "cutOff": d.membership.cutOff, "rpcCalls": d.rpc.callsSent.load(ordering: .relaxed),
                    "rejectedPeers": d.rpc.rejectedPeers.load(ordering: .relaxed)]
        case "nodes.add", "nodes.del":
            await d.membership.refresh()
            let view = d.membership.view
            var ids: [NodeID]
            if let list = r["nodes"] as? String {
                ids = try parseNodeList(list)
            } else if let c = r["count"] as? Int {
                ids = Array(view.values.filter { op == "nodes.add" ? $0.state == .present : $0.state == .online }.map(\.id).sorted().prefix(c))
                guard ids.count == c else { throw ClusterError.config("asked for \(c) nodes but only \(ids.count) are \(op == "nodes.add" ? "present" : "online")") }
            } else {
                ids = view.values.filter { op == "nodes.add" ? $0.state == .present : ($0.state == .online || $0.state == .failed) }.map(\.id).sorted()
            }
            for n in ids {
                if op == "nodes.add" {
                    guard let v = view[n], v.state == .present || v.state == .online else {
                        throw ClusterError.config("node \(n) is \(view[n]?.state.rawValue ?? "unknown"): only present nodes can be added (start its ssid first)")
                    }
                    try await d.etcd.put(d.membership.prefix + "online/\(n)", Array("1".utf8))
                } else {
                    try await d.etcd.delete(d.membership.prefix + "online/\(n)")
                }
            }
            await d.membership.refresh()
            return ids.map { Int($0) }
        case "kddm.sets":
            var out: [[String: Any]] = []
            for s in try await d.kddm.listSets() {
                out.append(["name": s.name, "rule": s.rule.description, "objects": try await d.kddm.objectCount(s.name)])
            }
            return out
        case "kddm.create-set":
            try await d.kddm.createSet(try str(r, "set"), rule: OwnerRule(parsing: (r["rule"] as? String) ?? "hash"))
            return nil
        case "kddm.delete-set":
            try await d.kddm.deleteSet(try str(r, "set"))
            return nil
        case "kddm.show":
            let s = try await d.kddm.state(try str(r, "set"), try id(r))
            return ["set": s.set, "id": String(s.id), "owner": Int(s.owner), "exists": s.exists,
                    "value": s.value.map { String(decoding: $0, as: UTF8.self) } ?? NSNull(), "revision": Int(s.revision),
                    "readers": s.readers.map { Int($0) }, "writer": s.writer.map { Int($0) } ?? NSNull(),
                    "waiting": s.waiting, "asker": Int(d.config.node), "askerCopy": s.localCopy]
        case "kddm.get":
            let v = try await d.kddm.get(try str(r, "set"), try id(r))
            return v.map { String(decoding: $0, as: UTF8.self) }
        case "kddm.put":
            let set = try str(r, "set"), oid = try id(r)
            try await d.kddm.store(set, oid, Array(try str(r, "value").utf8))
            return nil
        case "kddm.remove":
            try await d.kddm.remove(try str(r, "set"), try id(r))
            return nil
        case "kddm.incr":
            return try await d.kddm.increment(try str(r, "set"), try id(r), count: try int(r, "count", 1))
        case "kddm.flush":
            await d.kddm.flush()
            return nil
        case "bench":
            return try await Bench.run(daemon: d, peer: NodeID(try int(r, "peer")), n: try int(r, "n", 2000))
        default:
            throw ClusterError.config("unknown control op '\(op)'")
        }
    }
}
