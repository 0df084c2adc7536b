import ArgumentParser
import Foundation
import SSILocalCluster
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

struct DashboardForward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Serve node K's dashboard on this machine's loopback (a local cluster in network namespaces).",
        discussion: """
        In a local cluster as root, node K's dashboard listens on 127.0.0.1:718K inside the \\
        node's network namespace, which this machine's browser cannot reach. This command \\
        listens on 127.0.0.1:PORT here and relays each connection to it, until Ctrl-C.

        Examples:
          ssi dashboard forward 1               then open http://127.0.0.1:7181/
          ssi dashboard forward 2 --port 9000
        """)
    @Argument(help: "The node of the local cluster.") var node: Int
    @Option(help: "The port on this machine's 127.0.0.1 (default 7180+K).") var port: Int?

    func run() throws {
        let lc = LocalCluster()
        guard let plan = lc.plan() else {
            fail(SSIError(.notFound, "no local cluster here (\(lc.dir) has no plan)", hint: "ssi cluster up starts one; a real node's dashboard is on its own dashboard = HOST:PORT"))
        }
        guard (1...plan.nodes).contains(node) else {
            fail(SSIError(.invalidArgument, "the local cluster has nodes 1..\(plan.nodes), not \(node)", hint: "ssi cluster status lists them"))
        }
        let target = lc.dashboardPort(node)
        guard plan.netns else {
            print("node \(node)'s dashboard is already on this machine: http://127.0.0.1:\(target)/")
            return
        }
        let here = port ?? target
        let nsPath = "/var/run/netns/\(lc.nodeNamespace(node))"
        let ns = open(nsPath, O_RDONLY | O_CLOEXEC)
        guard ns >= 0 else { fail(SSIError.sys("open \(nsPath) (node \(node)'s network namespace)", errno: errno, hint: "is the local cluster up? run as root")) }
        let lfd = try Relay.listen(port: here)
        print("node \(node)'s dashboard: http://127.0.0.1:\(here)/  (relayed into \(lc.nodeNamespace(node)); Ctrl-C stops)")
        fflush(nil)
        while true {
            let c = accept(lfd, nil, nil)
            if c < 0 { if errno == EINTR || errno == ECONNABORTED { continue }; fail(SSIError.sys("accept on 127.0.0.1:\(here)", errno: errno)) }
            Thread { Relay.serve(client: c, namespace: ns, port: target) }.start()
        }
    }
}

/// A TCP relay from this namespace into another, one thread per connection.
enum Relay {
    static func address(_ port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        return a
    }

    static func listen(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = address(port)
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard fd >= 0, r == 0, Glibc.listen(fd, 16) == 0 else {
            throw SSIError.sys("listen on 127.0.0.1:\(port)", errno: errno, hint: "is the port taken? give --port")
        }
        return fd
    }

    /// CLONE_NEWNET of sched.h (linux/sched.h: 0x40000000), hidden like setns.
    static let newNet: Int32 = 0x4000_0000

    /// setns(2), which Glibc's Swift module does not declare (it sits behind _GNU_SOURCE).
    static let setns: @convention(c) (Int32, Int32) -> Int32 = {
        unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns"), to: (@convention(c) (Int32, Int32) -> Int32).self)
    }()

    /// setns(2) moves only the calling thread: this connection's thread enters the node's
    /// namespace, and the socket it makes there belongs to that namespace for good, while
    /// the listener stays in ours.
    static func serve(client: Int32, namespace: Int32, port: Int) {
        defer { close(client) }
        guard setns(namespace, Self.newNet) == 0 else { return }
        let up = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard up >= 0 else { return }
        defer { close(up) }
        var a = address(port)
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(up, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { return }
        pump(client, up)
    }

    /// Copies both ways until either side closes.
    static func pump(_ a: Int32, _ b: Int32) {
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        var buf = [UInt8](repeating: 0, count: 65536)
        while poll(&fds, 2, -1) >= 0 {
            for (i, from) in [a, b].enumerated() where fds[i].revents != 0 {
                let n = read(from, &buf, buf.count)
                if n <= 0 { return }
                var off = 0
                while off < n {
                    let w = buf[off..<n].withUnsafeBytes { send(i == 0 ? b : a, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if w <= 0 { return }
                    off += w
                }
            }
        }
    }
}
