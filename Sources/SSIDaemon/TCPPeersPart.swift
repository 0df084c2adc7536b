import Foundation
import SSICheckpoint
import SSINetwork
import SSISystem
import SSITransport

/// Where the peer of a restored connection stands (TCPPeers.swift in the engine): asked of
/// the node its application runs on (RPC 603), which reads the connection's sequence
/// numbers from its live socket.
extension ServiceBlock {
    static let networkTCPState = ServiceBlock.network.number(3)
}

struct TCPStateAsk: Codable {
    /// The connection as the peer sees it: its local end, then the restored side's.
    var address: String
    var port: UInt16
    var peer: String
    var peerPort: UInt16
}

struct TCPStateAnswer: Codable {
    var gone: Bool
    var state: TCPPeerState?
}

extension NetworkSubsystem {
    func registerTCPState() {
        core.rpc.register(ServiceBlock.networkTCPState) { [unowned self] _, payload in
            let ask = try JSONDecoder().decode(TCPStateAsk.self, from: Data(payload))
            return Array(try JSONEncoder().encode(await self.localTCPState(ask)))
        }
    }

    /// Among this node's applications, the one with `ask.address`, and its connection.
    func localTCPState(_ ask: TCPStateAsk) async -> TCPStateAnswer {
        let addressOf = appAddress.value
        for (app, root, leaving) in await localApps.value() where !leaving {
            guard await addressOf(app) == ask.address else { continue }
            let c = Connections.established(root: root).first {
                $0.local == ask.address && $0.localPort == ask.port && $0.remote == ask.peer && $0.remotePort == ask.peerPort
            }
            guard let c else { return TCPStateAnswer(gone: true) }
            guard let s = Connections.sequenceNumbers(c) else { return TCPStateAnswer(gone: false) }
            return TCPStateAnswer(gone: false, state: TCPPeerState(sendUnacked: s.sendUnacked, sendNext: s.sendNext, receiveNext: s.receiveNext))
        }
        return TCPStateAnswer(gone: false)
    }

    /// The engine's check, for a restart here: each peer asked where it runs.
    func peerState(local: String, localPort: UInt16, remote: String, remotePort: UInt16) async -> TCPPeerCheckResult {
        guard let node = await appAddresses.value().first(where: { $0.address == remote })?.node else {
            // Not an application's address (or one that stopped): its connection is gone
            // only if it was an application's; a node's own process cannot be asked.
            return .unknown
        }
        let ask = TCPStateAsk(address: remote, port: remotePort, peer: local, peerPort: localPort)
        let answer: TCPStateAnswer?
        if node == core.config.node {
            answer = await localTCPState(ask)
        } else {
            answer = try? JSONDecoder().decode(TCPStateAnswer.self, from: Data(
                try await core.rpc.call(node, service: ServiceBlock.networkTCPState, Array(JSONEncoder().encode(ask)), timeout: .seconds(5))))
        }
        guard let answer else { return .unknown }
        if answer.gone { return .gone }
        return answer.state.map { .state($0) } ?? .unknown
    }
}

extension AppNetworkSide {
    func tcpPeerCheck() -> TCPPeerCheck? {
        guard let ask = peerStates.value else { return nil }
        // Called on the engine's thread, which may block (never a cooperative thread).
        return { local, localPort, remote, remotePort in
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var result = TCPPeerCheckResult.unknown
            Task {
                result = await ask(local, localPort, remote, remotePort)
                done.signal()
            }
            done.wait()
            return result
        }
    }
}
