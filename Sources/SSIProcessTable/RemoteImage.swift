import Foundation
import SSIImage
import SSISystem
import SSITransport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// A snapshot written straight into another node's version store, over the cluster's
// authenticated RPC, as the engine produces it: the source keeps no copy. Used by the
// stop-and-copy migration. The source computes each file's CRC-32C as it sends it and the
// target its own as it writes it; a file whose two do not match fails the migration.

extension ProcessTableService {
    /// One step of an incoming snapshot: begin, data, drain, finish, commit, abort.
    public static let incoming = ServiceBlock.processTable.number(6)
}

struct IncomingStep: Codable {
    enum Kind: String, Codable { case begin, data, drain, finish, commit, abort }
    var kind: Kind
    var token: UInt64
    var app: Int32 = 0
    var name: String = ""
    var description: String = ""
    var processes: [Int32] = []
    var arch: String = ""
    var date: Date = Date()
    /// commit: the files whose finish the source has not seen answered, as it sent them
    /// (name, size, CRC-32C). The target commits only if each arrived so, which lets the
    /// source send its commit without first waiting for those answers.
    var expect: [FileEntry]? = nil
    /// begin: the lowest version number the image may take there (SnapshotWriter.firstVersion).
    var firstVersion: Int? = nil
    /// commit: a migration's request to restore the image (a MigrateIn, JSON, its version
    /// left to the target), started as soon as the image is committed there
    /// (`IncomingSnapshots.restoreOnCommit`), a round trip and the source's last steps
    /// before it would ask (2-3 ms of a small application's freeze).
    var restore: String? = nil

    /// JSON header (length first), then the raw bytes of a data step.
    func encoded(_ bytes: UnsafeRawBufferPointer? = nil) throws -> [UInt8] {
        let json = Array(try JSONEncoder().encode(self))
        var out = UInt32(json.count).littleEndianBytes + json
        if let bytes { out += bytes }
        return out
    }

    static func decode(_ p: [UInt8]) throws -> (IncomingStep, ArraySlice<UInt8>) {
        guard p.count >= 4 else { throw SSIError(.corrupt, "incoming snapshot: short message") }
        let n = Int(readLE(p, 0, as: UInt32.self))
        guard p.count >= 4 + n else { throw SSIError(.corrupt, "incoming snapshot: short header") }
        return (try JSONDecoder().decode(IncomingStep.self, from: Data(p[4..<4 + n])), p[(4 + n)...])
    }
}

struct IncomingAnswer: Codable {
    var entry: FileEntry?
    var version: Int?
    var manifest: Manifest?
}

/// The target's snapshots being received, by token.
///
/// A data step is answered as soon as it is queued, not once it is written: the bytes go to
/// the file on the snapshot's own serial queue, off the RPC event loop, while the source
/// reads and sends the next chunk and the loop reads it from the socket. Writing into pages
/// the kernel must first allocate is the slowest step of a migration's transfer (on this
/// machine's VM, 256 MiB of fresh page cache took 0.6 s, as long as everything else), so it
/// must overlap the rest instead of adding to it. At most `window` data steps wait on a
/// snapshot's queue: past that a data step's answer waits for room, which holds the source
/// back (its next step waits for this answer). Finish, commit and abort run on the same
/// queue, after every data step before them; a failed write fails them, so the snapshot is
/// never committed from a file with a hole.
final class IncomingSnapshots: @unchecked Sendable {
    /// Data steps (4 MiB each) queued per snapshot before the source is held back.
    static let window = 4
    /// A snapshot with no step for this long is given up (the next one to begin aborts it):
    /// a pre-copy round sends a step at least every 4 MiB, a restore is not waited for here.
    static let idleLimit: TimeInterval = 600
    /// How long a commit waits for the finishes of files it expects.
    static let commitWait: DispatchTimeInterval = .seconds(10)

    private final class Receiving: @unchecked Sendable {
        let writer: SnapshotWriter
        /// Its files being received, by name: several are open at once when the source
        /// copies memory while the application runs (pre-copy), its pages files growing
        /// round after round while the rest is written at the end. Used on `queue` only.
        var files: [String: any ImageFileWriter] = [:]
        let queue: DispatchQueue
        /// Under the owner's lock: data steps queued and not yet written, the first write
        /// that failed, and the answers waiting for room.
        var queued = 0
        var failure: Error? = nil
        var waiting: [CheckedContinuation<Void, Never>] = []
        /// When its last step came: a snapshot whose source went away (its daemon killed
        /// mid-transfer) is aborted once idle for `idleLimit`.
        var last = Date()
        /// The bytes of its core and blob files so far (RecentCores: decoded as they
        /// arrive), and the blob files finished, by name. Used on `queue` only.
        var cores: [String: [UInt8]] = [:]
        var blobs: [String: (entry: FileEntry, bytes: [UInt8])] = [:]
        /// Every file finished, as written here. Used on `queue` only.
        var entries: [String: FileEntry] = [:]
        /// A commit that came before some of the files it expects were finished (their
        /// finishes are RPCs of their own, which may arrive after it): the files it waits
        /// for, and the commit itself, run on `queue` by the finish that completes the set,
        /// by a failed write, or after `commitWait`. Used on `queue` only.
        var commitWaiter: (files: Set<String>, run: () -> Void)? = nil

        /// Runs the waiting commit if nothing it expects is missing any more, or `force`.
        func wakeCommit(force: Bool = false) {
            guard let w = commitWaiter, force || w.files.isSubset(of: entries.keys) else { return }
            commitWaiter = nil
            w.run()
        }

        init(writer: SnapshotWriter, token: UInt64) {
            self.writer = writer
            queue = DispatchQueue(label: "ssi.incoming.\(token)")
        }
    }

    private let lock = NSLock()
    private var receiving: [UInt64: Receiving] = [:]
    /// Starts the restore a commit carries (`IncomingStep.restore`), given the version the
    /// image took here. Set once, before the services are registered.
    var restoreOnCommit: (@Sendable (_ request: String, _ version: Int) -> Void)? = nil

    func handle(_ step: IncomingStep, _ bytes: ArraySlice<UInt8>, store: SnapshotStore) async throws -> IncomingAnswer {
        switch step.kind {
        case .begin:
            // A migration's image: restored at once, synced once the target's copy runs
            // (NodeApplications.migrateIn), not while the application is frozen.
            let w = try store.beginWrite(app: step.app)
            w.durable = false
            w.firstVersion = step.firstVersion ?? 1
            let stale: [Receiving] = lock.withLock {
                let old = receiving.filter { Date().timeIntervalSince($0.value.last) > Self.idleLimit }
                for k in old.keys { receiving[k] = nil }
                receiving[step.token] = Receiving(writer: w, token: step.token)
                return Array(old.values)
            }
            for r in stale { r.queue.async { r.writer.abort() } }
            return IncomingAnswer()
        case .data:
            // Queued before any suspension: handlers start in arrival order on the RPC loop,
            // so the queue gets the steps in the order the source sent them.
            let r = try receiver(step)
            let full: Bool = lock.withLock {
                r.queued += 1
                return r.queued > Self.window
            }
            r.queue.async { [self] in
                var failed: Error? = nil
                do {
                    let f = try r.files[step.name] ?? r.writer.createFile(step.name)
                    r.files[step.name] = f
                    try bytes.withUnsafeBytes { try f.append($0) }
                    if RecentCores.wants(step.name) { r.cores[step.name, default: []] += bytes }
                } catch { failed = error }
                let wake: [CheckedContinuation<Void, Never>] = lock.withLock {
                    r.queued -= 1
                    if let failed, r.failure == nil { r.failure = failed }
                    let w = r.waiting
                    r.waiting = []
                    return w
                }
                // A failed write fails the commit, with its own error (recorded just above):
                // it need not wait for the rest.
                if failed != nil { r.wakeCommit(force: true) }
                for c in wake { c.resume() }
            }
            if full {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let now: Bool = lock.withLock {
                        if r.queued > Self.window { r.waiting.append(c); return false }
                        return true
                    }
                    if now { c.resume() }
                }
            }
            return IncomingAnswer()
        case .drain:
            let r = try receiver(step)
            return try await onQueue(r) { [self] in
                try lock.withLock { if let e = r.failure { throw e } }
                return IncomingAnswer()
            }
        case .finish:
            let r = try receiver(step)
            return try await onQueue(r) { [self] in
                // A finish that fails wakes a waiting commit as well: it fails on the file.
                defer { r.wakeCommit(force: r.entries[step.name] == nil) }
                let f = try r.files[step.name] ?? r.writer.createFile(step.name)
                r.files[step.name] = nil
                try lock.withLock { if let e = r.failure { throw e } }
                // The file's last bytes come with its finish: one round trip less per file.
                var clock = PhaseClock()
                if !bytes.isEmpty { try bytes.withUnsafeBytes { try f.append($0) } }
                let entry = try f.finish(sync: false)
                r.entries[step.name] = entry
                if RecentCores.wants(step.name) {
                    // A process's blob file comes before its core file (SnapshotWriter.addCore):
                    // the core file is decoded now, off the restore that follows the commit.
                    let all = (r.cores.removeValue(forKey: step.name) ?? []) + bytes
                    if step.name.hasPrefix("blobs-") {
                        r.blobs[step.name] = (entry, all)
                    } else {
                        let pid = step.name.dropFirst("core-".count).dropLast(".json".count)
                        RecentCores.decode(core: entry, bytes: all, blobs: r.blobs.removeValue(forKey: "blobs-\(pid).img"))
                    }
                }
                if PhaseClock.enabled { clock.mark("incoming: finish \(step.name)") }
                return IncomingAnswer(entry: entry)
            }
        case .commit:
            let r = try receiver(step)
            // The source sends its commit without waiting for the answers to its last
            // finishes, each on its own task: a finish may arrive just after the commit. The
            // commit runs on the snapshot's queue once every file it expects is finished
            // here: at once, or from the finish that completes the set (`commitWaiter`). A
            // poll with a short sleep cost the frozen application 1-1.5 ms here (a sleep's
            // wake-up on a busy machine), and resuming this handler between the wait and the
            // commit two more thread wake-ups (0.5-1 ms, profiled).
            let expected = Set((step.expect ?? []).map(\.name))
            return try await withCheckedThrowingContinuation { (c: CheckedContinuation<IncomingAnswer, Error>) in
                r.queue.async { [self] in
                    let run: () -> Void = { [self] in
                        lock.withLock { _ = receiving.removeValue(forKey: step.token) }
                        let result = Result { try commitNow(r, step) }
                        // The restore starts before the answer leaves.
                        if let request = step.restore, case .success(let a) = result, let v = a.version { restoreOnCommit?(request, v) }
                        c.resume(with: result)
                    }
                    if expected.isSubset(of: r.entries.keys) || lock.withLock({ r.failure != nil }) { run(); return }
                    r.commitWaiter?.run()
                    r.commitWaiter = (expected, run)
                    // Files that never come (a source gone mid-commit) do not hold it for
                    // good: it goes on after `commitWait` and fails on what is missing.
                    r.queue.asyncAfter(deadline: .now() + Self.commitWait) { r.wakeCommit(force: true) }
                }
            }
        case .abort:
            guard let r = lock.withLock({ receiving.removeValue(forKey: step.token) }) else { return IncomingAnswer() }
            return try await onQueue(r) {
                r.writer.abort()
                return IncomingAnswer()
            }
        }
    }

    /// Commits the snapshot from the files finished here, each checked against what the
    /// source sent. On its queue.
    private func commitNow(_ r: Receiving, _ step: IncomingStep) throws -> IncomingAnswer {
        var clock = PhaseClock()
        if let e = lock.withLock({ r.failure }) {
            r.writer.abort()
            throw e
        }
        for e in step.expect ?? [] {
            guard let got = r.entries[e.name], got.size == e.size, got.crc32c == e.crc32c else {
                r.writer.abort()
                let seen = r.entries[e.name].map { "\($0.size) bytes with CRC \(String($0.crc32c, radix: 16))" } ?? "not at all"
                throw SSIError(.corrupt, "\(e.name) arrived on this node as \(seen), sent as \(e.size) bytes with CRC \(String(e.crc32c, radix: 16)): snapshot not committed",
                               hint: "the migration is given up; try it again")
            }
        }
        let (v, m) = try r.writer.commit(description: step.description, processes: step.processes, arch: step.arch, date: step.date)
        if PhaseClock.enabled { clock.mark("incoming: commit") }
        return IncomingAnswer(version: v, manifest: m)
    }

    private func receiver(_ step: IncomingStep) throws -> Receiving {
        guard let r = lock.withLock({ () -> Receiving? in
            receiving[step.token]?.last = Date()
            return receiving[step.token]
        }) else { throw Self.unknown(step) }
        return r
    }

    /// Runs `body` on the snapshot's queue, after every step queued before it.
    private func onQueue<T: Sendable>(_ r: Receiving, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in
            r.queue.async { c.resume(with: Result { try body() }) }
        }
    }

    static func unknown(_ s: IncomingStep) -> SSIError {
        SSIError(.state, "incoming snapshot \(s.token) is unknown here (aborted, or this daemon restarted)")
    }
}

/// The source's side: an ImageWriter whose files go to `node` as they are written. Called
/// on the engine's thread, which it blocks for each RPC (never a cooperative thread).
///
/// A file's finish (with its last bytes) is sent without waiting for its answer: the engine
/// goes on with the next process while the target writes the file, which takes a round trip
/// per file out of a migration's frozen time. `commit` (and `abort`) first waits for every
/// finish still under way, and a file the target did not get whole (size or CRC-32C
/// different) fails the commit, so the snapshot is never made from it.
final class RemoteImageWriter: ImageWriter {
    let rpc: RPCNode
    let node: NodeID
    let token = UInt64.random(in: 1...UInt64.max)
    var location: String { "node \(node) (streamed)" }
    private struct Pending {
        var name: String
        var size: UInt64
        var crc: UInt32
        var answer: AwaitedAnswer
    }
    private var finishing: [Pending] = []
    /// Called once, after the first data step went (the migration's `transfer` test phase).
    var afterFirstData: (() throws -> Void)? = nil
    /// True once the migration is given up: the next data step or the commit fails instead
    /// (the dump then lets the application go on, unchanged).
    var givenUp: (() -> Bool)? = nil
    /// A migration's request to restore, sent with the commit (`IncomingStep.restore`) when
    /// it gives one.
    var restoreRequest: (() -> String?)? = nil
    /// Whether a commit carrying `restoreRequest` left: from then on the target may take
    /// the application over whatever this side hears back.
    private(set) var restoreSent = false

    func checkGivenUp() throws {
        if givenUp?() == true {
            throw SSIError(.state, "the image for node \(node) was given up: the ssi migrate that asked for it went away", hint: "ssi migrate again to move it")
        }
    }

    init(rpc: RPCNode, node: NodeID, app: Int32, firstVersion: Int? = nil) throws {
        self.rpc = rpc
        self.node = node
        var begin = IncomingStep(kind: .begin, token: token, app: app)
        begin.firstVersion = firstVersion
        _ = try send(begin)
    }

    func send(_ step: IncomingStep, _ bytes: UnsafeRawBufferPointer? = nil) throws -> IncomingAnswer {
        return try start(step, bytes).wait()
    }

    /// Sends a step from a task that runs on the RPC event loop (RPCNode.taskExecutor): its
    /// answer is read there and handed to the engine's thread, which waits on a semaphore.
    /// With a task on the shared pool and `blockingCall`, each answer crossed two more
    /// threads (loop -> pool task -> waiting task -> engine), a few hundred microseconds of
    /// a migration's freeze for the commit's answer alone on a busy 2-CPU machine.
    /// A data step of megabytes is framed (copied) by a task of the shared pool instead, off
    /// the loop that reads every connection of the node.
    private func start(_ step: IncomingStep, _ bytes: UnsafeRawBufferPointer?) -> AwaitedAnswer {
        let payload = Result { try step.encoded(bytes) }
        let (rpc, node) = (self.rpc, self.node)
        let answer = AwaitedAnswer()
        let body: @Sendable () async -> Void = {
            do {
                let out = try await rpc.call(node, service: ProcessTableService.incoming, try payload.get(), timeout: .seconds(120))
                answer.fulfil(.success(try JSONDecoder().decode(IncomingAnswer.self, from: Data(out))))
            } catch {
                answer.fulfil(.failure(error))
            }
        }
        if (bytes?.count ?? 0) < 64 << 10 { Task(executorPreference: rpc.taskExecutor) { await body() } } else { Task { await body() } }
        return answer
    }

    /// Sends a file's finish; its answer is checked by `settle`.
    func finishLater(_ step: IncomingStep, _ bytes: UnsafeRawBufferPointer?, size: UInt64, crc: UInt32) -> FileEntry {
        finishing.append(Pending(name: step.name, size: size, crc: crc, answer: start(step, bytes)))
        return FileEntry(name: step.name, size: size, crc32c: crc)
    }

    /// Waits for every finish under way; throws for the first file that did not arrive whole.
    private func settle() throws {
        let pending = finishing
        finishing = []
        var failure: Error? = nil
        for p in pending {
            do {
                let answer = try p.answer.wait()
                guard let e = answer.entry else { throw SSIError(.corrupt, "node \(node) did not acknowledge \(p.name)") }
                guard e.size == p.size, e.crc32c == p.crc else {
                    throw SSIError(.corrupt, "\(p.name) arrived on node \(node) as \(e.size) bytes with CRC \(String(e.crc32c, radix: 16)), sent as \(p.size) bytes with CRC \(String(p.crc, radix: 16))")
                }
            } catch { if failure == nil { failure = error } }
        }
        if let failure { throw failure }
    }

    func createFile(_ name: String) throws -> any ImageFileWriter { RemoteFileWriter(writer: self, name: name) }

    /// Waits until the target has written every data step sent so far (it answers them as
    /// soon as they are queued: IncomingSnapshots).
    func drain() throws { _ = try send(IncomingStep(kind: .drain, token: token)) }

    func commit(description: String, processes: [Int32], arch: String, date: Date) throws -> (Int, Manifest) {
        try checkGivenUp()
        // Sent at once with the files still unanswered as they were sent: the target waits
        // for each of them to be finished there and checks it before it commits, so the
        // answers and the commit cost one round trip, not two.
        var step = IncomingStep(kind: .commit, token: token, description: description, processes: processes, arch: arch, date: date)
        step.expect = finishing.map { FileEntry(name: $0.name, size: $0.size, crc32c: $0.crc) }
        step.restore = restoreRequest?()
        if step.restore != nil { restoreSent = true }
        let committing = start(step, nil)
        do { try settle() } catch {
            // Refused there too (the same files checked); its answer is not needed.
            _ = try? committing.wait()
            throw error
        }
        let a = try committing.wait()
        guard let v = a.version, let m = a.manifest else { throw SSIError(.corrupt, "node \(node) did not say which version it committed") }
        return (v, m)
    }

    func abort() {
        _ = try? settle()
        _ = try? send(IncomingStep(kind: .abort, token: token))
    }
}

final class RemoteFileWriter: ImageFileWriter {
    let writer: RemoteImageWriter
    let name: String
    private(set) var size: UInt64 = 0
    private var crc: UInt32 = 0
    private var buffer: [UInt8] = []
    /// 4 MiB per RPC: well under the transport's 16 MiB frame.
    static let chunk = 4 << 20

    init(writer: RemoteImageWriter, name: String) { (self.writer, self.name) = (writer, name) }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        crc = CRC32C.update(crc, bytes)
        size += UInt64(bytes.count)
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.chunk { try flush() }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        try writer.checkGivenUp()
        let step = IncomingStep(kind: .data, token: writer.token, name: name)
        _ = try buffer.withUnsafeBytes { try writer.send(step, $0) }
        buffer.removeAll(keepingCapacity: true)
        if let f = writer.afterFirstData {
            writer.afterFirstData = nil
            try f()
        }
    }

    /// The bytes still buffered go with the finish step (the target appends them first), and
    /// its answer is waited for at the commit (RemoteImageWriter.settle): each round trip is
    /// part of the application's frozen time in a migration. The entry returned is the
    /// source's own count; the target's is compared with it then.
    func finish(sync: Bool) throws -> FileEntry {
        let step = IncomingStep(kind: .finish, token: writer.token, name: name)
        let entry = buffer.withUnsafeBytes { writer.finishLater(step, $0.isEmpty ? nil : $0, size: size, crc: crc) }
        buffer = []
        return entry
    }
}

/// A result a thread that may block (the engine's) waits for, given by a task: what
/// `blockingCall` and the image steps' answers (`RemoteImageWriter.start`) both wait on.
final class Awaited<T: Sendable>: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let result = Mutex<Result<T, Error>?>(nil)

    func fulfil(_ r: Result<T, Error>) {
        result.withLock { $0 = r }
        done.signal()
    }

    /// Blocks until the result is there (at most once per result).
    func wait() throws -> T {
        done.wait()
        return try result.withLock { $0! }.get()
    }
}

typealias AwaitedAnswer = Awaited<IncomingAnswer>

/// Runs an async call from a thread that may block (the engine's), and waits for it.
func blockingCall<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let awaited = Awaited<T>()
    Task {
        do { awaited.fulfil(.success(try await body())) } catch { awaited.fulfil(.failure(error)) }
    }
    return try awaited.wait()
}
