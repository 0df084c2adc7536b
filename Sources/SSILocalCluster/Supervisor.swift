import Foundation
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

extension LocalCluster {
    // MARK: the supervisor

    /// Runs in the background for the cluster's life: parent and reaper of etcd and the
    /// daemons; starts a node again when `start-K` appears; on SIGTERM stops them all.
    public func supervise() throws -> Never {
        Proc.becomeSubreaper()
        guard let plan = plan(), let argvData = FileManager.default.contents(atPath: "\(dir)/etcd.argv"),
              let etcdArgv = try JSONSerialization.jsonObject(with: argvData) as? [String] else {
            throw SSIError(.notFound, "no local cluster plan in \(dir)")
        }
        var sigs = sigset_t()
        sigemptyset(&sigs)
        sigaddset(&sigs, SIGTERM); sigaddset(&sigs, SIGINT); sigaddset(&sigs, SIGCHLD); sigaddset(&sigs, SIGHUP)
        sigprocmask(SIG_BLOCK, &sigs, nil)
        try FileManager.default.createDirectory(atPath: "\(dir)/pids", withIntermediateDirectories: true)
        func record(_ name: String, _ pid: pid_t) {
            try? "\(pid)".write(toFile: "\(dir)/pids/\(name)", atomically: true, encoding: .utf8)
        }
        var children: [pid_t] = []
        let etcd = try Proc.spawn(etcdArgv, log: "\(dir)/etcd.log")
        record("etcd", etcd)
        children.append(etcd)
        func startNode(_ k: Int) throws {
            var argv = [plan.ssid, "--config", "\(dir)/node\(k).conf"]
            argv = inNode(k, netns: plan.netns) + argv
            let p = try Proc.spawn(argv, log: log(node: k))
            record("node\(k)", p)
            children.append(p)
        }
        for k in 1...plan.nodes { try startNode(k) }
        var ts = timespec(tv_sec: 0, tv_nsec: 100_000_000)
        while true {
            let s = sigtimedwait(&sigs, nil, &ts)
            if s == SIGTERM || s == SIGINT || s == SIGHUP { break }
            Proc.reapAll()
            for k in 1...plan.nodes where FileManager.default.fileExists(atPath: "\(dir)/start-\(k)") {
                try? startNode(k)
                unlink("\(dir)/start-\(k)")
            }
        }
        // Daemons first (they revoke their leases in etcd), then etcd.
        let nodes = children.filter { $0 != etcd && Proc.alive($0) }
        for p in nodes { kill(p, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(3)
        while nodes.contains(where: Proc.alive) && ContinuousClock.now < deadline { Proc.reapAll(); usleep(20_000) }
        for p in children where Proc.alive(p) && p != etcd { kill(p, SIGKILL) }
        kill(etcd, SIGTERM)
        let d2 = ContinuousClock.now + .seconds(3)
        while Proc.alive(etcd) && ContinuousClock.now < d2 { Proc.reapAll(); usleep(20_000) }
        if Proc.alive(etcd) { kill(etcd, SIGKILL) }
        while children.contains(where: Proc.alive) { Proc.reapAll(); usleep(20_000) }
        Proc.reapAll()
        exit(0)
    }
}
