import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 10's fixtures (Tests/Fixtures/ISSUE10.md): each C program puts a process tree into
/// one state real programs reach, prints READY, and after checkpoint --kill and restart
/// checks that state itself and prints PASS or FAIL. Tests/Fixtures/lifecycle.sh gives each
/// the life it needs (it compiles the fixture, runs it under `ssi run`, checkpoints with
/// --kill, reaps, restarts, sends SIGUSR1, and for the special ones drives the outside
/// pipes or the TCP peer); exit 0 means the fixture printed PASS and its root exited 0.
struct FidelityCase: CustomStringConvertible, Sendable {
    let fixture: String
    var args: [String] = []
    var options: [String] = []
    var description: String { ([fixture] + args).joined(separator: " ") }
}

enum Lifecycle {
    static var script: String { "\(TestEnv.repoRoot)/Tests/Fixtures/lifecycle.sh" }

    /// Runs lifecycle.sh on one fixture with our ssi; its exit code and its whole report.
    static func run(_ c: FidelityCase, noCR: Bool = false) throws -> CommandResult {
        let argv = ["/bin/bash", script, "--ssi", TestEnv.ssi] + (noCR ? ["--no-cr"] : []) + c.options
            + ["\(TestEnv.repoRoot)/Tests/Fixtures/\(c.fixture).c"] + c.args
        return try SSITestSupport.run(argv, env: ["SSI_CLUSTER_NAME": ProcessInfo.processInfo.environment["SSI_CLUSTER_NAME"] ?? "test"])
    }
}

@Suite("Issue 10: fixtures through checkpoint, kill, restart", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace of other users' processes, clone3 with set_tid, cgroup freezer"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc"), "needs gcc to build the fixtures"))
struct FidelityTests {
    static let cases: [FidelityCase] = FidelityCases.all

    @Test("the fixture checks its own state after restart and prints PASS", arguments: cases)
    func fixturePasses(_ c: FidelityCase) throws {
        let r = try Lifecycle.run(c)
        #expect(r.status == 0, "\(r.output)")
        // A part the kernel cannot do (memmore.c on a kernel without mseal, say) is left out
        // by the fixture, which prints why: said here, not passed over quietly.
        for line in r.output.split(separator: "\n") where line.hasPrefix("SKIP") { print("\(c): \(line)") }
    }

    /// A double-forked grandchild leaves the tree but keeps the root's PID as its session and
    /// group id: the restart cannot give that PID again, and says which process holds it.
    @Test("a restart whose PID an escaped process holds as its session id names that process")
    func escapedProcessNamed() throws {
        let r = try Lifecycle.run(FidelityCase(fixture: "escaped"))
        // The escaped process sleeps 60 s: ended here, by the PID the refusal names.
        if let range = r.output.range(of: #"group id of PID (\d+)"#, options: .regularExpression),
           let pid = Int32(r.output[range].split(separator: " ").last ?? "") {
            kill(pid, SIGKILL)
        }
        #expect(r.status == 3, "\(r.output)")
        #expect(r.output.contains("left the application's process tree"), "\(r.output)")
    }

    /// States whose content cannot be read back are refused by name at checkpoint, nothing
    /// written (refusedstates.c): an io_uring ring mapped with no fd, a unix urgent byte, a
    /// UDP datagram held by MSG_MORE. Where the kernel lacks the feature the fixture says
    /// SKIP and passes.
    @Test("a state that cannot be saved is refused by name at checkpoint", arguments: [
        ("uring", "maps anon_inode:[io_uring]"), ("oob", "urgent byte (MSG_OOB) not read yet"), ("more", "held by a send with MSG_MORE"),
    ])
    func refusedByName(_ mode: String, _ phrase: String) throws {
        let r = try Lifecycle.run(FidelityCase(fixture: "refusedstates", args: [mode]))
        if r.status == 0, let skip = r.output.split(separator: "\n").first(where: { $0.hasPrefix("SKIP") }) {
            print("refusedstates \(mode): \(skip)")
            return
        }
        #expect(r.status == 2, "\(r.output)")
        #expect(r.output.contains(phrase) && r.output.contains("nothing was written"), "\(r.output)")
    }
}

/// The 34 runs of ISSUE10.md's table: 33 fixtures, dgramclosed.c also without its seqpacket
/// pair; the special harness options as that file says.
enum FidelityCases {
    static let all: [FidelityCase] = [
        FidelityCase(fixture: "pipeorphan"),
        FidelityCase(fixture: "extpipe", options: ["--pipes", "--rs-arg", "--inherit-fd", "--rs-arg", "5"]),
        FidelityCase(fixture: "cwddeleted"),
        FidelityCase(fixture: "fifounlinked"),
        FidelityCase(fixture: "inotifyremoved"),
        FidelityCase(fixture: "unixrelpath"),
        FidelityCase(fixture: "scmpipe"),
        FidelityCase(fixture: "dgramclosed"),
        FidelityCase(fixture: "dgramclosed", args: ["no-seqpacket"]),
        FidelityCase(fixture: "udp"),
        FidelityCase(fixture: "tcpexternal", args: ["@PORT"],
                     options: ["--peer", "\(TestEnv.repoRoot)/Tests/Fixtures/tcppeer.c", "--ck-arg", "--tcp-established", "--rs-arg", "--tcp-established"]),
        FidelityCase(fixture: "tcptimewait"),
        FidelityCase(fixture: "threadleader"),
        FidelityCase(fixture: "fanotify"),
        FidelityCase(fixture: "pty"),
        FidelityCase(fixture: "nsfd"),
        FidelityCase(fixture: "nsuts"),
        FidelityCase(fixture: "nsipc"),
        FidelityCase(fixture: "mqueue"),
        FidelityCase(fixture: "nsnet"),
        FidelityCase(fixture: "nsmnt"),
        FidelityCase(fixture: "nspid"),
        FidelityCase(fixture: "timerfd"),
        FidelityCase(fixture: "epoll"),
        FidelityCase(fixture: "zombies"),
        FidelityCase(fixture: "stopsig"),
        FidelityCase(fixture: "sessions"),
        FidelityCase(fixture: "posixtimers"),
        FidelityCase(fixture: "sockopts"),
        FidelityCase(fixture: "locks"),
        FidelityCase(fixture: "mtime"),
        FidelityCase(fixture: "unlinkedmeta"),
        FidelityCase(fixture: "sharedbig", args: ["64"]),
        FidelityCase(fixture: "madvise"),
        FidelityCase(fixture: "mprotectro"),
        FidelityCase(fixture: "sigtrap"),
        FidelityCase(fixture: "schedattrs"),
        FidelityCase(fixture: "fdmore"),
        FidelityCase(fixture: "seccomp"),
        FidelityCase(fixture: "unlinkedshared"),
        FidelityCase(fixture: "procattrs"),
        FidelityCase(fixture: "fcntlmore"),
        FidelityCase(fixture: "packetsock"),
        FidelityCase(fixture: "exedeleted"),
        FidelityCase(fixture: "procfiles"),
        FidelityCase(fixture: "sockmore"),
        FidelityCase(fixture: "procmore"),
        FidelityCase(fixture: "highfd"),
        FidelityCase(fixture: "timeouts", options: ["--gap", "2"]),
        FidelityCase(fixture: "nsroot"),
        FidelityCase(fixture: "semundo"),
        FidelityCase(fixture: "semundo", args: ["ns"]),
        FidelityCase(fixture: "semundo", args: ["continue"], options: ["--continue"]),
        FidelityCase(fixture: "filesmore"),
        FidelityCase(fixture: "memmore"),
        FidelityCase(fixture: "sigmore"),
        FidelityCase(fixture: "ptydevtty"),
        FidelityCase(fixture: "fsuid"),
        FidelityCase(fixture: "threadcreds"),
        FidelityCase(fixture: "ipcmore", args: ["shmrm", "sem", "msg", "mqn"]),
        FidelityCase(fixture: "tcpmore"),
        FidelityCase(fixture: "eintr"),
        FidelityCase(fixture: "eintr", options: ["--continue"]),
        // Pre-copy's userfaultfd injection interrupts each process's main thread: its
        // semop or epoll_wait returned EINTR (the child exited), and the next round's
        // PAGEMAP_SCAN of the exited child failed the checkpoint (ESRCH).
        FidelityCase(fixture: "eintr", options: ["--continue", "--ck-arg", "--precopy"]),
        // Guard regions and dropped pages of a private file mapping in a pre-copied
        // application (the final round's copies knew of neither).
        FidelityCase(fixture: "precopymem", options: ["--ck-arg", "--precopy"]),
        FidelityCase(fixture: "ptyhangup"),
        FidelityCase(fixture: "ptyexcl"),
        FidelityCase(fixture: "ptylocked"),
        FidelityCase(fixture: "epollet"),
        FidelityCase(fixture: "epollet", options: ["--continue"]),
        FidelityCase(fixture: "ptystop"),
        FidelityCase(fixture: "ptystop", args: ["tcooff"], options: ["--continue"]),
        FidelityCase(fixture: "unixmoved"),
        FidelityCase(fixture: "schedddl"),
        FidelityCase(fixture: "ptynoctty"),
        FidelityCase(fixture: "unixnames"),
        FidelityCase(fixture: "shmremovedns"),
        FidelityCase(fixture: "linkedname"),
        FidelityCase(fixture: "waitleft", options: ["--gap", "2"]),
        FidelityCase(fixture: "timerphase", options: ["--gap", "2"]),
        FidelityCase(fixture: "timedwaits", options: ["--gap", "2"]),
        FidelityCase(fixture: "timedwaits", options: ["--continue"]),
        FidelityCase(fixture: "ptyeof"),
        FidelityCase(fixture: "ptyeof", options: ["--continue"]),
        FidelityCase(fixture: "robustshared"),
        FidelityCase(fixture: "fdowner"),
        FidelityCase(fixture: "sockopts3"),
        FidelityCase(fixture: "syscalldispatch"),
        FidelityCase(fixture: "syscalldispatch", options: ["--continue"]),
        FidelityCase(fixture: "loginuid"),
        FidelityCase(fixture: "restartsyscall"),
        FidelityCase(fixture: "procself"),
        FidelityCase(fixture: "tcphalfclosed", args: ["closewait"]),
        FidelityCase(fixture: "tcphalfclosed", args: ["finwait2"]),
        FidelityCase(fixture: "udpdest"),
        FidelityCase(fixture: "peercred"),
        FidelityCase(fixture: "peercred", options: ["--continue"]),
        FidelityCase(fixture: "scmcreds"),
        FidelityCase(fixture: "pkeys"),
        FidelityCase(fixture: "nnpthread"),
        FidelityCase(fixture: "nnpthread", args: ["main"]),
        FidelityCase(fixture: "rlimuid"),
        FidelityCase(fixture: "alarmabs"),
        FidelityCase(fixture: "pidfdthread"),
    ]
}
