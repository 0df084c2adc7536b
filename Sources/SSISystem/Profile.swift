import Foundation

/// SSI_PROFILE=1 prints how long each phase of a checkpoint or restart took, to stderr.
public struct PhaseClock {
    public static let enabled = ProcessInfo.processInfo.environment["SSI_PROFILE"] == "1"
    private var last = DispatchTime.now()
    public init() {}

    public mutating func mark(_ phase: @autoclosure () -> String) {
        // The operation a command shows progress for (OperationProgress) hears of each phase.
        OperationProgress.report(phase())
        profile(phase())
    }

    /// A phase for the profile only, not one a command shows its user: the operation in
    /// progress is the process's (a daemon's migration), and a mark deep in a shared layer
    /// (a KDDM write, one step of the fds) would print on that user's terminal.
    public mutating func profile(_ phase: @autoclosure () -> String) {
        guard PhaseClock.enabled else { return }
        let now = DispatchTime.now()
        let ms = Double(now.uptimeNanoseconds - last.uptimeNanoseconds) / 1e6
        // The monotonic time as well: the phases of a migration's two nodes (one machine's
        // clock in the local cluster) line up by it.
        let at = Double(now.uptimeNanoseconds % 1_000_000_000_000) / 1e6
        FileHandle.standardError.write(Data(String(format: "ssi: profile: %-28@ %9.3f ms  (at %.3f)\n", phase() as NSString, ms, at).utf8))
        last = now
    }
}
