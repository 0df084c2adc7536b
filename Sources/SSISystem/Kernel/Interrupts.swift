import CSSILinux
#if canImport(Glibc)
import Glibc
#endif

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP while a command holds an application: they must not
/// end ssi between two injected calls, or the application dies (a tracer's exit detaches
/// its tracees where they are, and one running an injected call hits its trap instruction:
/// SIGTRAP). While `deferred` runs, they only set a flag; the engine reads it between two
/// safe steps (`check`), stops there and lets the application go on as it was.
public enum Interrupts {
    /// Runs `body` with the three signals deferred, then puts their dispositions back.
    /// Returns the signal that came meanwhile with `body`'s result (0: none); one that came
    /// after the last check is the caller's to report (the work was done).
    public static func deferred<T>(_ body: () throws -> T) throws -> (T, Int32) {
        cssi_interrupts_defer()
        defer { cssi_interrupts_restore() }
        let r = try body()
        return (r, cssi_interrupt_pending())
    }

    /// Throws when one of the signals came since `deferred` began: `what` is what stops.
    public static func check(_ what: @autoclosure () -> String) throws {
        let sig = cssi_interrupt_pending()
        guard sig != 0 else { return }
        let name = sig == SIGINT ? "SIGINT (Ctrl-C)" : sig == SIGTERM ? "SIGTERM" : "SIGHUP"
        throw SSIError(.state, "interrupted by \(name): \(what())", hint: "run it again to finish it")
    }

    /// True when one of the signals came since `deferred` began.
    public static var pending: Bool { cssi_interrupt_pending() != 0 }
}
