import Foundation
import SSICheckpoint
import SSISystem
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where an application's network is made on this node when it has an address of its own
/// (`ssi run --net app`; SSINetwork/AppNetwork.swift), installed by the daemon
/// (SSIDaemon/Wiring.swift). Launch, restart and the target of a migration make the
/// application's namespace through it before its processes are created or rebuilt in it.
public protocol ApplicationNetwork: Sendable {
    /// The address application `app` has, or an error naming why none can be given (no
    /// application subnet configured on this node).
    func address(for app: Int32) throws -> String
    /// Makes application `app`'s namespace on this node with `address`, joined to the node
    /// and, when `routed`, routed here: an fd on it that the caller closes once a process
    /// is inside. A restart or a migration's target routes later (`route`), once the
    /// sockets are rebuilt: a packet of a peer on this node that came in before would find
    /// no socket and be answered with a reset.
    func attach(app: Int32, address: String, routed: Bool) throws -> Int32
    /// Routes `address` to application `app`'s link on this node (made by `attach`, whose
    /// namespace `namespace` is: its direct link goes up there).
    func route(app: Int32, address: String, namespace: Int32?) throws
    /// Application `app` with an address runs on this node now (launched or restarted): every
    /// node routes its address here before the caller is answered, so that a peer's first
    /// packet does not meet a node that does not know it yet (a lost SYN waits a second).
    func placed(app: Int32) async
    /// For a restart from a snapshot: where the peers of its saved connections stand now
    /// (the engine resets those they have moved past).
    func tcpPeerCheck() -> TCPPeerCheck?
    /// Stops application `app`'s traffic while it is frozen for a checkpoint taken together
    /// with its peers' (Together.swift): what comes for its address is held, nothing it
    /// sends leaves, so that no peer's state moves past its snapshot.
    func lock(app: Int32, address: String, root: Int32) throws
    /// Lets its traffic go again, the held packets delivered to it (`root`: its root process
    /// here, nil if it is gone).
    func unlock(app: Int32, address: String, root: Int32?)
    /// The locked application was killed after its snapshot (`checkpoint --kill`): what was
    /// held for it is dropped and its link deleted, never brought up again, so that its dying
    /// namespace neither acknowledges nor resets anything (its peers send again, to the
    /// restarted copy).
    func discardLock(app: Int32, address: String)
    /// Application `app`'s link on this node, to know it again when the application ends
    /// (`ended`); nil when it has none here.
    func link(of app: Int32) -> UInt32?
    /// Application `app` ended on this node (its process 1 exited or was killed): its link
    /// `link` goes, if it is still there. Its namespace can outlive its processes (each TCP
    /// socket it left holds it, tcp(7): FIN_WAIT, LAST_ACK, a FIN sent again and again), and
    /// what those sockets send would reach the copy restarted from a snapshot on another
    /// node, a stranger with the same address and ports: a FIN its peer took in order once
    /// the restarted client had sent as far (seen: a connection restored whole that then
    /// hung in LAST_ACK). A link made since for a new copy here (another index) stays.
    func ended(app: Int32, link: UInt32)
}

/// `ssi run --net`: where the application's network is.
public enum NetworkMode: String, Codable, Sendable, CaseIterable {
    /// A namespace and an address of its own, which follow it when it moves.
    case app
    /// Its node's network (its connections to other applications cannot follow a move).
    case node
}

extension NodeApplications {
    /// The namespace for application `app`'s address, made here (nil: it has none).
    func attachNetwork(app: Int32, address: String?, routed: Bool = true) throws -> Int32? {
        guard let address else { return nil }
        guard let net = appNetwork.withLock({ $0 }) else {
            throw SSIError(.unsupported, "application \(app) has the address \(address), but node \(me) has no application network",
                           hint: "set network.app-subnet in node \(me)'s ssid configuration (the local cluster sets it)")
        }
        return try net.attach(app: app, address: address, routed: routed)
    }

    /// The restored processes' sockets exist (RestartOptions.beforeResume): their address
    /// is routed to them here now, before they run.
    func routeWhenRebuilt(app: Int32, address: String?, namespace: Int32?) -> (@Sendable () throws -> Void)? {
        guard let address, let net = appNetwork.withLock({ $0 }) else { return nil }
        return { try net.route(app: app, address: address, namespace: namespace) }
    }
}
