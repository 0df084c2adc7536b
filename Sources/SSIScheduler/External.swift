import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// A plug-in written by a user, in any language: a program started with `/bin/sh -c COMMAND`
/// that reads one JSON request per line on its stdin and answers one JSON line on its stdout
/// (docs/scheduler.md, "Plug-ins"). It stays running between requests; one that fails,
/// answers garbage or takes longer than `timeout-ms` is killed and started again at the next
/// request, and the error is kept for `ssi sched status`.
final class ExternalProgram {
    let command: String
    let timeout: Double
    private var pid: pid_t = 0
    private var toChild: Int32 = -1
    private var fromChild: Int32 = -1
    private var buffer: [UInt8] = []
    private(set) var lastError: String?

    init(command: String, timeout: Double) {
        self.command = command
        self.timeout = timeout
    }

    /// A failure of the program, with how to see it fail by hand.
    func problem(_ kind: SSIError.Kind, _ message: String) -> SSIError {
        SSIError(kind, message, hint: "run it by hand: echo '{\"request\":\"sample\"}' | /bin/sh -c '\(command)' must print one JSON object per line (docs/scheduler.md, \"Plug-ins\")")
    }

    deinit { stop() }

    private func start() throws {
        var input: [Int32] = [-1, -1], output: [Int32] = [-1, -1]
        // Our ends do not leak into this or any other child: the spawner marks every fd above
        // 2 close-on-exec in the child (SpawnOptions.keepFileDescriptors is false).
        guard pipe(&input) == 0, pipe(&output) == 0 else {
            throw SSIError(.system, "cannot make pipes for plug-in '\(command)': \(String(cString: strerror(errno)))")
        }
        var o = SpawnOptions()
        o.standardInput = .descriptor(input[0])
        o.standardOutput = .descriptor(output[1])
        defer { close(input[0]); close(output[1]) }
        do { pid = try Spawn.start(["/bin/sh", "-c", command], o) } catch {
            close(input[1]); close(output[0])
            throw error
        }
        toChild = input[1]
        fromChild = output[0]
        buffer = []
    }

    func stop() {
        if pid > 0 {
            kill(pid, SIGKILL)
            var st: Int32 = 0
            while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
            pid = 0
        }
        if toChild >= 0 { close(toChild); toChild = -1 }
        if fromChild >= 0 { close(fromChild); fromChild = -1 }
    }

    /// Sends `request` and returns the answer's JSON object; throws (and restarts the program
    /// next time) on any failure.
    func request(_ request: [String: Any]) throws -> [String: Any] {
        do {
            if pid == 0 { try start() }
            var line = try JSONSerialization.data(withJSONObject: request, options: [.sortedKeys])
            line.append(0x0A)
            try line.withUnsafeBytes { raw in
                var off = 0
                while off < raw.count {
                    let n = write(toChild, raw.baseAddress! + off, raw.count - off)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw problem(.system, "plug-in '\(command)' closed its stdin") }
                    off += n
                }
            }
            let answer = try readLine()
            guard let obj = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any] else {
                throw problem(.corrupt, "plug-in '\(command)' answered something that is not a JSON object: \(String(decoding: answer.prefix(80), as: UTF8.self))")
            }
            if let e = obj["error"] as? String { throw problem(.system, "plug-in '\(command)' reports: \(e)") }
            lastError = nil
            return obj
        } catch {
            lastError = "\(error)"
            stop()
            throw error
        }
    }

    private func readLine() throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeFirst(nl + 1)
                return line
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw problem(.timeout, "plug-in '\(command)' did not answer within \(Int(timeout * 1000)) ms") }
            var p = pollfd(fd: fromChild, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(left * 1000) + 1)
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(fromChild, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw problem(.system, "plug-in '\(command)' exited or closed its stdout") }
            buffer += chunk[..<n]
            guard buffer.count < 1 << 20 else { throw problem(.corrupt, "plug-in '\(command)' sent over 1 MiB without a newline") }
        }
    }
}

/// A probe whose values an external program gives: request `{"request":"sample",
/// "probe":NAME,"parameters":{...}}`, answer `{"values":{"OUTPUT":NUMBER,...}}`.
final class ExternalProbe: Probe {
    var element: SchedulerSettings.Element
    let program: ExternalProgram

    init(_ element: SchedulerSettings.Element) {
        self.element = element
        program = ExternalProgram(command: element.parameters["command"] ?? "false", timeout: element.double("timeout-ms", 2000) / 1000)
    }

    func sample(now: Date) throws -> [String: Double] {
        let answer = try program.request(["request": "sample", "probe": element.name, "parameters": element.parameters])
        guard let values = answer["values"] as? [String: Any] else {
            throw SSIError(.corrupt, "external probe '\(element.name)' answered without \"values\"")
        }
        var out: [String: Double] = [:]
        for (k, v) in values { if let x = (v as? NSNumber)?.doubleValue { out[k] = x } }
        return out
    }

    func stop() { program.stop() }
}

/// A policy an external program runs: request `{"request":"decide","policy":NAME,"node":K,
/// "parameters":{...},"view":CLUSTERVIEW}`, answer `{"decisions":[{"migrate":{"app":A,
/// "to":N},"reason":"..."} | {"place":N,"reason":"..."}]}`.
final class ExternalPolicy {
    let program: ExternalProgram
    init(_ element: SchedulerSettings.Element) {
        program = ExternalProgram(command: element.parameters["command"] ?? "false", timeout: element.double("timeout-ms", 2000) / 1000)
    }

    func decide(_ view: SchedulerView, me: Int, policy: Policy) throws -> [Decision] {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .secondsSince1970
        let viewJSON = try JSONSerialization.jsonObject(with: enc.encode(view))
        let answer = try program.request(["request": "decide", "policy": policy.name, "node": me,
                                          "parameters": policy.element.parameters, "view": viewJSON])
        guard let list = answer["decisions"] as? [[String: Any]] else {
            throw SSIError(.corrupt, "external policy '\(policy.name)' answered without \"decisions\"")
        }
        return try list.map { d in
            let reason = d["reason"] as? String ?? "external policy"
            if let m = d["migrate"] as? [String: Any], let app = (m["app"] as? NSNumber)?.intValue, let to = (m["to"] as? NSNumber)?.intValue {
                return Decision(policy: policy.name, action: .migrate(app: app, from: me, to: to), reason: reason)
            }
            if let n = (d["place"] as? NSNumber)?.intValue { return Decision(policy: policy.name, action: .place(node: n), reason: reason) }
            throw SSIError(.corrupt, "external policy '\(policy.name)' gave a decision that is neither migrate nor place: \(d)")
        }
    }
}
