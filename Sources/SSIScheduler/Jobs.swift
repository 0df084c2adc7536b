import Foundation

/// A job (DRMAA's word, the seed's "job submission system"): a command submitted to the
/// cluster, started as a cluster application when its turn comes, on the node asked for or
/// the one the placement policy chooses. Jobs are applications: they checkpoint and migrate
/// like any other. Kept in the KDDM set `jobs` (object id = job number).
public struct JobRecord: Codable, Sendable, Equatable {
    public var job: Int
    public var name: String
    public var command: [String]
    public var directory: String
    public var environment: [String: String]
    /// The node asked for; nil: the placement policy chooses (`--node auto`).
    public var node: Int?
    /// The node that took the submission and runs the job's queue.
    public var owner: Int
    public var state: JobState
    /// Its application once started.
    public var app: Int32?
    /// Where it was started.
    public var startedOn: Int?
    public var exitStatus: Int32?
    /// Seconds since the epoch.
    public var submitted: Double
    public var started: Double?
    public var ended: Double?
    /// Why it failed to start, when it did.
    public var error: String?
    /// Why a queued job has not started yet (the cluster's limit on running jobs).
    public var waiting: String?
    /// The submitter's nice value, which the job starts with (as `nice -n 5 ssi submit`
    /// would give a local program); nil (a submission from an older ssi): the daemon's.
    public var nice: Int32?

    public init(job: Int, name: String, command: [String], directory: String, environment: [String: String], node: Int?, owner: Int, held: Bool, now: Date = Date()) {
        (self.job, self.name, self.command, self.directory, self.environment) = (job, name, command, directory, environment)
        (self.node, self.owner) = (node, owner)
        state = held ? .held : .queued
        submitted = now.timeIntervalSince1970
    }

    /// Whether it can still change by itself.
    public var isFinal: Bool { [.done, .failed, .terminated].contains(state) }
}

/// DRMAA's job states, in our words.
public enum JobState: String, Codable, Sendable, CaseIterable {
    /// Waiting for its turn (the owner starts queued jobs within a moment, one by one).
    case queued
    /// Kept from starting until `ssi release`.
    case held
    case running
    /// Frozen by `ssi suspend` (the cgroup freezer); `ssi resume` thaws it.
    case suspended
    /// Exited with status 0.
    case done
    /// Exited with another status, was killed by a signal, or could not start.
    case failed
    /// Ended by `ssi terminate`.
    case terminated
    /// Its node is not online: `ssi restart APP --node N` brings its application back.
    case lost
}

/// What `ssi submit` sends.
public struct JobSubmission: Codable, Sendable, Equatable {
    public var command: [String]
    public var directory: String
    public var environment: [String: String]
    public var node: Int?
    public var hold: Bool
    public var name: String?
    /// The submitter's nice value (JobRecord.nice).
    public var nice: Int32?
    public init(command: [String], directory: String, environment: [String: String], node: Int?, hold: Bool, name: String?, nice: Int32? = nil) {
        (self.command, self.directory, self.environment, self.node, self.hold, self.name) = (command, directory, environment, node, hold, name)
        self.nice = nice
    }
}

/// The job operations of `ssi submit`, `ssi jobs`, `ssi hold`, ... (answered by the jobs
/// subsystem of the node asked).
public enum JobsRequest: Codable, Sendable, Equatable {
    case submit(JobSubmission)
    case list
    case show(Int)
    case hold(Int)
    case release(Int)
    case suspend(Int)
    case resume(Int)
    case terminate(Int)
    /// The cluster-wide limit on running jobs (0: none); answers the job list.
    case limit(Int)
}

/// The cluster-wide limit on running jobs: object 0 of the set `jobs` (job numbers start
/// at 1). `ssi jobs --max-running N` sets it; a node whose `jobs.max-running` is set
/// writes it when it starts.
public struct JobLimit: Codable, Sendable, Equatable {
    /// Jobs running or suspended at most, cluster-wide; 0: no limit.
    public var maxRunning: Int
    public init(maxRunning: Int) { self.maxRunning = maxRunning }
}
