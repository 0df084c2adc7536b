import Foundation
import Logging
import SSISystem
import SSITransport
#if canImport(Glibc)
import Glibc
#endif

/// Test hook for the fault tests of migration (MigrationFaultTests): with
/// `SSI_TEST_MIGRATION_FAULT=FILE` in ssid's environment, each phase of a migration reads
/// FILE, and a line `PHASE pause SECONDS` makes the daemon log that it waits there and wait
/// (so that a test kills a daemon, cuts a link or kills the client at that very phase), a
/// line `PHASE fail` makes that phase fail. Without the variable nothing is read.
///
/// The phases, and the daemon that stops at each:
/// - `transfer`: the source, after the first 4 MiB of the image left while the application
///   runs (pre-copy);
/// - `freeze`: the source, the application stopped and its image committed on the target,
///   before it asks the target to restore; or, when the commit itself carries that request
///   (no file lock to hand over: CheckpointOptions.beforeCommit), the image sent but not
///   committed, the application still stopped for its dump;
/// - `restore`: the target, every process rebuilt, before the record is taken over and
///   anything runs.
public enum MigrationFaults {
    static let file = ProcessInfo.processInfo.environment["SSI_TEST_MIGRATION_FAULT"]

    /// Pauses or fails at `phase` when the test file says so; called on a thread that may block.
    static func at(_ phase: String, app: Int32, node: NodeID, logger: Logger) throws {
        guard let what = action(phase) else { return }
        switch what {
        case .pause(let seconds):
            logger.warning("migration of application \(app): paused at \(phase) on node \(node) for \(seconds) s (SSI_TEST_MIGRATION_FAULT)")
            usleep(UInt32(seconds * 1_000_000))
        case .fail:
            throw SSIError(.system, "migration of application \(app): injected failure at \(phase) on node \(node) (SSI_TEST_MIGRATION_FAULT)",
                           hint: "unset SSI_TEST_MIGRATION_FAULT")
        }
    }

    /// The same from an async context (the caller's task sleeps instead of its thread).
    static func atAsync(_ phase: String, app: Int32, node: NodeID, logger: Logger) async throws {
        guard let what = action(phase) else { return }
        if case .pause(let seconds) = what {
            logger.warning("migration of application \(app): paused at \(phase) on node \(node) for \(seconds) s (SSI_TEST_MIGRATION_FAULT)")
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            return
        }
        try at(phase, app: app, node: node, logger: logger)
    }

    enum Action { case pause(Double), fail }

    static func action(_ phase: String) -> Action? {
        guard let file, let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let w = line.split(separator: " ")
            guard w.count >= 2, w[0] == phase else { continue }
            if w[1] == "fail" { return .fail }
            if w[1] == "pause", w.count >= 3, let s = Double(w[2]) { return .pause(s) }
        }
        return nil
    }
}
