import ArgumentParser
import Foundation
import SSIControl
import SSIScheduler
import SSISystem

// `ssi sched`: the scheduler of each node (issue "Pluggable scheduler", docs/scheduler.md).
// Kerrighed exposed its scheduler through configfs; these commands and their --json are ours.

struct Sched: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sched",
        abstract: "The scheduler: settings, probes, policies and their decisions, per node.",
        discussion: """
        Every node runs a Scheduling Configuration Changer (SCC) that loads the probes, filters and \
        policies of the configuration whose selector holds. Nodes start with the built-in default.xml \
        (load balancing by migration). Examples: share/scheduler/day-night.xml, low-high.xml.
        """,
        subcommands: [SchedStatus.self, SchedLoad.self, SchedProbes.self, SchedSet.self, SchedLog.self, SchedCheck.self])
}


private func fmt(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e9 ? String(Int(x)) : String(format: "%.3f", x) }

struct SchedStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Active configuration, loaded probes, filters and policies, last values and decisions.")
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "How many log lines to show.") var lines = 10
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        let st = orFail { try daemon.call(.scheduler(.status(logLines: lines))).schedulerStatus() }
        if json { return printJSON(st, pretty: true) }
        print("node \(st.node): configuration \(st.active ?? "-") of [\(st.configurations.keys.sorted().joined(separator: ", "))] from \(st.source)")
        if st.stretched { print("probe periods stretched (CPU busy)") }
        for i in st.items {
            let params = i.parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            let vals = i.values.sorted { $0.key < $1.key }.map { "\($0.key)=\(fmt($0.value))" }.joined(separator: " ")
            let period = i.periodMs.map { p in " every \(i.effectivePeriodMs ?? p) ms" } ?? ""
            print("  \(i.kind) \(i.name) (\(i.type))\(period)  \(params)\(vals.isEmpty ? "" : "  -> \(vals)")\(i.error.map { "  ERROR: \($0)" } ?? "")")
        }
        for l in st.log { print("  \(l.date.formatted(.iso8601)) \(l.kind): \(l.text)") }
    }
}

struct SchedLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Validate a settings file, then apply it; a bad file changes nothing.",
        discussion: "The file is read here and sent to the node, which need not see it.")
    @Argument(help: "The XML settings file.") var file: String
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        // Validate here first: the error names the file as the user wrote it.
        let settings = orFail { try SchedulerSettings.load(path: file) }
        let xml = orFail { try String(contentsOfFile: file, encoding: .utf8) }
        let st = orFail { try daemon.call(.scheduler(.load(xml: xml, source: file))).schedulerStatus() }
        print("node \(st.node): loaded \(file) (\(settings.configurations.count) configurations); active: \(st.active ?? "-")")
    }
}

struct SchedCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a settings file without a daemon; print its configurations.")
    @Argument(help: "The XML settings file.") var file: String
    func run() throws {
        let s = orFail { try SchedulerSettings.load(path: file) }
        print("\(file): valid")
        for c in s.configurations { print("  configuration \(c.name) (line \(c.line)) when \(c.selector): \(c.elements.map { "\($0.kind.rawValue) \($0.name)" }.joined(separator: ", "))") }
    }
}

struct SchedProbes: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "probes", abstract: "Every value the node's probes and filters give now.")
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        let st = orFail { try daemon.call(.scheduler(.status(logLines: 0))).schedulerStatus() }
        var rows: [String: Double] = [:]
        for i in st.items where i.kind != "policy" {
            for (k, v) in i.values { rows[i.kind == "probe" ? "\(i.name).\(k)" : i.name] = v }
        }
        if json { return printJSON(rows, pretty: true) }
        for (k, v) in rows.sorted(by: { $0.key < $1.key }) { print("\(k) \(fmt(v))") }
    }
}

struct SchedSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change one parameter of a loaded probe, filter or policy: ELEMENT.PARAM VALUE.",
        discussion: "Example: ssi sched set lb.threshold 0.8. The change is validated like a file; it lasts until the next load.")
    @Argument(help: "ELEMENT.PARAM") var what: String
    @Argument var value: String
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        guard let dot = what.firstIndex(of: "."), dot != what.startIndex, what.index(after: dot) != what.endIndex else {
            clusterFail(SSIError(.invalidArgument, "'\(what)' is not ELEMENT.PARAM", hint: "for example: ssi sched set lb.threshold 0.8"))
        }
        let st = orFail { try daemon.call(.scheduler(.set(element: String(what[..<dot]), parameter: String(what[what.index(after: dot)...]), value: value))).schedulerStatus() }
        print("node \(st.node): \(what) = \(value); active: \(st.active ?? "-")")
    }
}

struct SchedLog: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log", abstract: "Configuration switches and decisions, with their reasons.")
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "How many lines.") var lines = 50
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        let st = orFail { try daemon.call(.scheduler(.status(logLines: lines))).schedulerStatus() }
        if json { return printJSON(st.log, pretty: true) }
        for l in st.log { print("\(l.date.formatted(.iso8601)) node \(st.node) \(l.kind): \(l.text)") }
    }
}
