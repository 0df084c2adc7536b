import ArgumentParser
import Foundation
import SSIControl
import SSINetwork
import SSISystem

// The cluster address and the port table (issue 13, docs/network.md).
let networkCommands: [ParsableCommand.Type] = [Ports.self, Streams.self]

struct Ports: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Every listening TCP and UDP port of the cluster's applications, from any node.",
        discussion: """
        EXPOSED ports (bound to every address or to the cluster address) are reachable from \
        outside on CLUSTER_IP:PORT wherever their application runs; several applications on \
        one port share its new connections. A port claimed with `ssi run --exclusive-port P` \
        goes to its application alone.
        """)
    @Flag(help: "Print JSON: the cluster address, the ports, the exclusive claims.") var json = false
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        do {
            let v = try daemon.call(.network(.ports), timeout: 15).ports()
            if json {
                struct Out: Encodable { var cluster_ip: String?; var ports: [PortEntry]; var exclusive: [PortClaim]; var error: String? }
                return printJSON(Out(cluster_ip: v.clusterIP, ports: v.entries, exclusive: v.claims, error: v.error))
            }
            print("cluster address: \(v.clusterIP ?? "none (network.cluster-ip is not set)")")
            if let err = v.error { print("steering error on this node: \(err)") }
            print("PORT   PROTO APP        NODE ADDRESS          EXPOSED")
            func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
            for e in v.entries {
                let excl = v.claims.contains { $0.port == e.port && $0.app == e.app } ? " (exclusive)" : ""
                print(pad("\(e.port)", 6) + " " + pad(e.proto.rawValue, 5) + " " + pad("\(e.app)", 10) + " " + pad("\(e.node)", 4) + " "
                      + pad(e.address, 16) + " " + (e.exposed ? "yes" : "no") + excl)
            }
            for c in v.claims where !v.entries.contains(where: { $0.port == c.port && $0.app == c.app }) {
                print(pad("\(c.port)", 6) + " " + pad("-", 5) + " " + pad("\(c.app)", 10) + " claimed exclusively, not listening yet")
            }
        } catch let e as SSIError { fail(e) }
    }
}

struct Streams: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The connections between applications of the cluster, from any node (docs/streams.md).",
        discussion: """
        One row per TCP connection of an application that has an address of its own \
        (ssi run --net app): both ends (application, node, address:port; the other end's \
        application is '-' when it is not one), and the bytes each way since the connection \
        began, across the moves of either end.
        """)
    @Flag(help: "Print JSON: one object per connection (a, b, state, bytes_a_to_b, bytes_b_to_a).") var json = false
    @OptionGroup var daemon: DaemonOptions

    func run() throws {
        do {
            let rows = try daemon.call(.network(.streams), timeout: 15).streams()
            if json {
                return printJSON(rows)
            }
            func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
            func end(_ e: StreamRow.End) -> String {
                pad(e.app.map(String.init) ?? "-", 10) + " " + pad(e.node.map(String.init) ?? "-", 4) + " " + pad("\(e.address):\(e.port)", 21)
            }
            print("A APP      NODE A ADDRESS            B APP      NODE B ADDRESS            STATE        A->B BYTES   B->A BYTES")
            for r in rows {
                print(end(r.a) + " " + end(r.b) + " " + pad(r.state, 12) + " " + pad("\(r.bytes_a_to_b)", 12) + " " + "\(r.bytes_b_to_a)")
            }
        } catch let e as SSIError { fail(e) }
    }
}

enum ExclusivePorts {
    /// Checks before the launch that every port could be claimed (nothing starts when one is
    /// taken), then claims them for the application once it has an id; a claim lost to a
    /// launch on another node in between ends the new application.
    static func check(_ ports: [UInt16], node: Int?) throws {
        for p in ports { _ = try ClusterApps.connect(node: node).send(.network(.claim(port: p, app: nil)), timeout: 15) }
    }

    static func claim(_ ports: [UInt16], app: Int32, node: Int?) throws {
        for p in ports {
            do { _ = try ClusterApps.connect(node: node).send(.network(.claim(port: p, app: app)), timeout: 15) } catch {
                _ = try? ClusterApps.call(.signal(app: app, signal: SIGKILL), node: node)
                throw error
            }
        }
    }
}
