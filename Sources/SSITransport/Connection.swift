import NIOCore
import SSISystem
import Synchronization

/// One authenticated TCP connection to a peer, either direction. Its mutable state is behind
/// a Mutex, so the event loop and callers' tasks can both touch it: hence `@unchecked`.
final class RPCConnection: @unchecked Sendable {
    let channel: Channel
    let outgoing: Bool
    let authenticated: EventLoopPromise<NodeID>
    private struct State {
        var nextCall: UInt64 = 1
        var pending: [UInt64: CheckedContinuation<[UInt8], Error>] = [:]
        var timers: [UInt64: Scheduled<Void?>] = [:]
        var peer: NodeID?
        var closed = false
    }
    private let state = Mutex(State())

    init(channel: Channel, outgoing: Bool) {
        self.channel = channel
        self.outgoing = outgoing
        authenticated = channel.eventLoop.makePromise(of: NodeID.self)
    }

    var peer: NodeID? { state.withLock { $0.peer } }
    func setPeer(_ n: NodeID) { state.withLock { $0.peer = n } }

    /// Runs on the caller's executor (`isolation`): when that is the connection's loop the
    /// frame is written at once, and the reply resumes the caller on the same thread.
    func call(service: UInt16, payload: [UInt8], timeout: Duration, isolation: isolated (any Actor)? = #isolation) async throws -> [UInt8] {
        let peer = self.peer ?? 255
        let ms = UInt32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        return try await withCheckedThrowingContinuation(isolation: isolation) { (k: CheckedContinuation<[UInt8], Error>) in
            let id: UInt64? = state.withLock { s in
                if s.closed { return nil }
                let id = s.nextCall
                s.nextCall += 1
                s.pending[id] = k
                return id
            }
            guard let id else { k.resume(throwing: SSIError.peerFailed(peer)); return }
            var buf = channel.allocator.buffer(capacity: payload.count + 20)
            buf.writeFrame(.request) { b in
                b.writeInteger(id); b.writeInteger(service); b.writeInteger(ms); b.writeBytes(payload)
            }
            channel.writeAndFlush(buf, promise: nil)
            // The deadline: whichever of the reply and this timer comes first resumes `k`.
            let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(ms))) { [weak self] in
                self?.complete(id, .failure(SSIError.deadlineExceeded(peer, service: service)))
            }
            state.withLock { s in if s.pending[id] != nil { s.timers[id] = timer } else { timer.cancel() } }
        }
    }

    func send(service: UInt16, payload: [UInt8]) {
        var buf = channel.allocator.buffer(capacity: payload.count + 8)
        buf.writeFrame(.oneway) { b in b.writeInteger(service); b.writeBytes(payload) }
        channel.writeAndFlush(buf, promise: nil)
    }

    func complete(_ id: UInt64, _ r: Result<[UInt8], Error>) {
        let (k, t) = state.withLock { ($0.pending.removeValue(forKey: id), $0.timers.removeValue(forKey: id)) }
        t?.cancel()
        k?.resume(with: r)
    }

    /// Every call in flight ends now with an error: a failed peer never leaves a caller hanging.
    func failAll() {
        let (ks, peer) = state.withLock { s -> ([CheckedContinuation<[UInt8], Error>], NodeID?) in
            s.closed = true
            let ks = Array(s.pending.values)
            s.pending = [:]
            for t in s.timers.values { t.cancel() }
            s.timers = [:]
            return (ks, s.peer)
        }
        for k in ks { k.resume(throwing: SSIError.peerFailed(peer ?? 255)) }
    }
}
