import ArgumentParser
import Foundation
import SSIControl
import SSIScheduler
import SSISystem

// Jobs, DRMAA-style (docs/scheduler.md, "Jobs"): submitted commands that the cluster starts
// as applications where the scheduler places them, and follows to their end.
let jobCommands: [ParsableCommand.Type] = [Submit.self, Jobs.self, WaitJob.self, JobChange<HoldJob>.self, JobChange<ReleaseJob>.self, JobChange<SuspendJob>.self, JobChange<ResumeJob>.self, JobChange<TerminateJob>.self]

private func callJobs(_ r: JobsRequest, _ daemon: DaemonOptions) -> ControlReply {
    orFail { try daemon.call(.jobs(r)) }
}

private func describe(_ j: JobRecord) -> String {
    var s = "job \(j.job) \(j.state.rawValue)"
    if let app = j.app { s += ", application \(app)" }
    if let n = j.startedOn { s += " on node \(n)" }
    if let x = j.exitStatus { s += ", exit status \(x)" }
    if let e = j.error { s += ": \(e)" }
    return s
}

struct Submit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a job: the cluster starts CMD as an application where the scheduler places it.",
        discussion: """
        Prints the job number. The job is queued, then started (within a moment) on the node \
        given by --node, or by the placement policy with --node auto (the default); its output \
        goes to a log on its node (ssi logs APP). Example: ssi submit --node auto -- ./simulate --steps 100
        """)
    @Option(help: "A node number, or auto: the placement policy chooses.") var node = "auto"
    @Flag(help: "Keep it from starting until ssi release.") var hold = false
    @Option(help: "A name shown by ssi jobs (default: the program's).") var name: String?
    @Option(help: "The daemon's control socket (default: this machine's node).") var socket: String?
    @Argument(parsing: .captureForPassthrough, help: "-- CMD ARGS") var command: [String] = []

    func run() throws {
        // The command is captured as given, options included: a --help before `--` is ours.
        if let first = command.first, first == "--help" || first == "-h" {
            print(Self.helpMessage())
            return
        }
        let cmd = command.first == "--" ? Array(command.dropFirst()) : command
        guard !cmd.isEmpty else { throw ValidationError("give the command after --: ssi submit -- CMD ARGS") }
        let n: Int?
        if node == "auto" { n = nil } else {
            guard let k = Int(node), (1...255).contains(k) else { throw ValidationError("--node is a node number (1..255) or auto, not '\(node)'") }
            n = k
        }
        let env = ProcessInfo.processInfo.environment
        // The submitter's nice value goes with the job, as `ssi run` passes it on.
        let sub = JobSubmission(command: cmd, directory: FileManager.default.currentDirectoryPath, environment: env, node: n, hold: hold, name: name,
                                nice: callerNice())
        // --node here is where the job runs; the request goes to this machine's node.
        let daemon = orFail { try DaemonOptions.parse(socket.map { ["--socket", $0] } ?? []) }
        let j = orFail { try callJobs(.submit(sub), daemon).job() }
        print("Job \(j.job) submitted (\(j.state.rawValue))")
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Every job of the cluster and its state (queued, held, running, suspended, done, failed, terminated, lost).",
                                                    discussion: "--max-running N sets the cluster-wide limit on running (and suspended) jobs; submitted jobs beyond it stay queued, saying why, until one ends. 0: no limit. ssid's jobs.max-running sets it when a node starts.")
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Set the cluster-wide limit on running jobs (0: none), then list.") var maxRunning: Int?
    @OptionGroup var daemon: DaemonOptions
    func validate() throws {
        if let n = maxRunning, n < 0 { throw ValidationError("--max-running \(n): give a whole number of at least 0 (0: no limit)") }
    }
    func run() throws {
        let list = orFail { try callJobs(maxRunning.map { .limit($0) } ?? .list, daemon).jobList() }
        if json {
            return printJSON(list)
        }
        print("JOB    STATE       APP        NODE EXIT NAME")
        for j in list {
            func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
            print(pad("\(j.job)", 6) + " " + pad(j.state.rawValue, 11) + " " + pad(j.app.map(String.init) ?? "-", 10) + " "
                  + pad(j.startedOn.map(String.init) ?? "-", 4) + " " + pad(j.exitStatus.map(String.init) ?? "-", 4) + " " + j.name
                  + (j.state == .queued ? j.waiting.map { " (waiting: \($0))" } ?? "" : ""))
        }
    }
}

struct WaitJob: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wait", abstract: "Wait for a job to end; exit with its exit status (1 if it failed to start or was terminated).")
    @Argument(help: "The job number.") var job: Int
    @Option(help: "Give up after this many seconds (exit 124).") var timeout: Double?
    @OptionGroup var daemon: DaemonOptions
    func run() throws {
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while true {
            let j = orFail { try callJobs(.show(job), daemon).job() }
            if j.isFinal {
                print(describe(j))
                throw ExitCode(j.state == .done ? 0 : j.exitStatus.map { $0 == 0 ? 1 : $0 } ?? 1)
            }
            if let deadline, Date() > deadline {
                FileHandle.standardError.write(Data("ssi: job \(job) is still \(j.state.rawValue) after \(timeout!) s\n".utf8))
                throw ExitCode(124)
            }
            usleep(200_000)
        }
    }
}

/// hold, release, suspend, resume, terminate: one job, one change.
/// One change to a job by its number (hold, release, suspend, resume, terminate): what the
/// command says of itself and the request it sends.
protocol JobChangeKind {
    static var name: String { get }
    static var abstract: String { get }
    static func request(_ job: Int) -> JobsRequest
}

struct JobChange<Kind: JobChangeKind>: ParsableCommand {
    static var configuration: CommandConfiguration { CommandConfiguration(commandName: Kind.name, abstract: Kind.abstract) }
    @Argument(help: "The job number.") var job: Int
    @OptionGroup var daemon: DaemonOptions
    func run() throws { print(describe(orFail { try callJobs(Kind.request(job), daemon).job() })) }
}

enum HoldJob: JobChangeKind {
    static let name = "hold", abstract = "Keep a queued job from starting."
    static func request(_ job: Int) -> JobsRequest { .hold(job) }
}
enum ReleaseJob: JobChangeKind {
    static let name = "release", abstract = "Let a held job start."
    static func request(_ job: Int) -> JobsRequest { .release(job) }
}
enum SuspendJob: JobChangeKind {
    static let name = "suspend", abstract = "Freeze a running job (cgroup freezer); ssi resume thaws it."
    static func request(_ job: Int) -> JobsRequest { .suspend(job) }
}
enum ResumeJob: JobChangeKind {
    static let name = "resume", abstract = "Thaw a suspended job."
    static func request(_ job: Int) -> JobsRequest { .resume(job) }
}
enum TerminateJob: JobChangeKind {
    static let name = "terminate", abstract = "End a job: TERM to its application (KILL after 5 s), or drop it if it has not started."
    static func request(_ job: Int) -> JobsRequest { .terminate(job) }
}
