import Foundation
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A server and its clients inside the application: unix and TCP sockets.
@Suite("C/R of sockets", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: ptrace, clone3 with set_tid, TCP_REPAIR (CAP_NET_ADMIN)"))
struct SocketTests {
    @Test("unix listener with accepted and pending connections, datagrams with senders, seqpacket records, TCP with 256 KiB in flight")
    func serverAndClients() throws {
        try World.checkAfterRestart("sockets") { w, app in
            // The listener's path taken by a live socket: restart refuses, names it, leaves nothing.
            let path = "\(w.dir)/srv.sock"
            unlink(path)
            let squatter = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(squatter) }
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { dst in path.utf8CString.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(dst.count))) } }
            let bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(squatter, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            try #require(bound == 0 && listen(squatter, 1) == 0)
            let busy = try w.ssi("restart", "\(app)")
            #expect(busy.status != 0 && busy.stderr.contains("\(path) is in use by a running program"), "\(busy.output)")
            #expect(processState(app) == nil, "a refused restart must leave no process behind")
        }
    }

    @Test("a connection to a peer outside the application fails the checkpoint naming PID, fd and peer; -i restores it closed")
    func peerOutside() throws {
        let w = try World("sockout")
        // The peer: a TCP listener held by the test.
        let l = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(l) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &sin) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(l, $0, len) == 0 && listen(l, 4) == 0 && getsockname(l, $0, &len) == 0 }
        }
        try #require(ok)
        let port = UInt16(bigEndian: sin.sin_port)
        let py = try python3Executable()
        let app = try w.start([py, "-u", "-c", """
            import socket, sys, time, signal
            s = socket.create_connection(("127.0.0.1", \(port)))
            print("fd", s.fileno(), flush=True)
            signal.signal(signal.SIGUSR1, lambda *a: None)
            signal.pause()
            try:
                s.send(b"x"); print("STILL OPEN", flush=True)
            except OSError as e:
                print("CLOSED", e.errno, flush=True)
            """])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("fd "))
        let fd = w.logValue("fd ")
        let r = try w.ssi("checkpoint", "\(app)")
        #expect(r.status != 0 && r.stderr.contains("PID \(app) fd \(fd): TCP connection") && r.stderr.contains("127.0.0.1:\(port)")
                && r.stderr.contains("outside the application"), "\(r.output)")
        #expect(!FileManager.default.fileExists(atPath: "\(w.chkpt)/\(app)/v1"))
        #expect(processState(app) == "S" || processState(app) == "R")
        try w.killAndRestart(app, ["-i"])
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("CLOSED 9"), "the fd must be closed after -i: \(w.log())")
        reap(app)
    }
}

extension SocketTests {
    @Test("a pidfd of a process outside the application fails the checkpoint naming PID, fd and that process; -i restores it closed")
    func pidfdOutside() throws {
        let w = try World("pidfdout")
        let py = try python3Executable()
        let app = try w.start([py, "-u", "-c", """
            import os, signal
            p = os.pidfd_open(os.getppid())
            print("fd", p, flush=True)
            signal.signal(signal.SIGUSR1, lambda *a: None)
            signal.pause()
            try:
                os.fstat(p); print("STILL OPEN", flush=True)
            except OSError as e:
                print("CLOSED", e.errno, flush=True)
            """])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("fd "))
        let fd = w.logValue("fd ")
        try w.expectRefused(app, ["PID \(app) fd \(fd): a pidfd of PID", "not part of the application"])
        try w.killAndRestart(app, ["-i"])
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("CLOSED 9"), "the fd must be closed after -i: \(w.log())")
        reap(app)
    }

    @Test("a netlink socket with a kernel answer not yet read fails the checkpoint naming PID and fd, the application goes on; once read, the socket is saved and answers after restart")
    func netlinkQueued() throws {
        let w = try World("netlinkq")
        let py = try python3Executable()
        // RTM_GETLINK (18) with NLM_F_REQUEST|NLM_F_DUMP (0x301): struct nlmsghdr and a
        // struct rtgenmsg, 20 bytes (netlink(7), rtnetlink(7)).
        let app = try w.start([py, "-u", "-c", """
            import socket, struct, signal, select
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
            s.bind((0, 0))
            def req(seq): s.send(struct.pack("=LHHLLBxxx", 20, 18, 0x301, seq, 0, 0))
            req(1)
            print("fd", s.fileno(), flush=True)
            phase = [0]
            def on(*a): phase[0] += 1
            signal.signal(signal.SIGUSR1, on)
            while phase[0] < 1: signal.pause()
            while select.select([s], [], [], 0.2)[0]: s.recv(65536)
            print("DRAINED", flush=True)
            while phase[0] < 2: signal.pause()
            req(2)
            got = s.recv(65536) if select.select([s], [], [], 2)[0] else b""
            seq = struct.unpack("=LHHLL", got[:16])[3] if len(got) >= 16 else -1
            print("ANSWERED" if seq == 2 else "NO ANSWER %d" % seq, flush=True)
            """])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("fd "))
        let fd = w.logValue("fd ")
        usleep(200_000)
        try w.expectRefused(app, ["PID \(app) fd \(fd): netlink socket", "not yet read"])
        kill(app, SIGUSR1)
        #expect(w.waitLog("DRAINED"), "\(w.log())")
        try w.killAndRestart(app)
        usleep(200_000)
        kill(app, SIGUSR1)
        #expect(w.waitLog("ANSWERED"), "the restored socket must answer a new request: \(w.log())")
        reap(app)
    }

    @Test("a packet socket with a ring mapped in memory (PACKET_RX_RING, as tcpdump has) fails the checkpoint naming PID and fd; the application goes on")
    func packetRingRefused() throws {
        let w = try World("packetring")
        let py = try python3Executable()
        // struct tpacket_req { block_size, block_nr, frame_size, frame_nr } (packet(7)),
        // PACKET_RX_RING 5 at SOL_PACKET 263, then the ring mapped.
        let app = try w.start([py, "-u", "-c", """
            import socket, struct, mmap, time
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.setsockopt(263, 5, struct.pack("IIII", 4096, 1, 2048, 2))
            ring = mmap.mmap(s.fileno(), 4096)
            print("fd", s.fileno(), flush=True)
            while True: time.sleep(0.05)
            """])
        defer { w.cleanUp(app) }
        #expect(w.waitLog("fd "), "\(w.log())")
        let fd = w.logValue("fd ")
        try w.expectRefused(app, ["PID \(app) fd \(fd): packet socket with a ring mapped"])
    }

    @Test("a threaded python3 TCP server and its client, checkpointed mid-conversation, killed and restarted twice: the conversation goes on")
    func pythonServer() throws {
        let w = try World("pyserver")
        let app = try w.start(["/bin/sh", "\(TestEnv.repoRoot)/Tests/Fixtures/pyserver.sh"])
        defer {
            // The server is a child of the client (the shell exec'd it); cleanUp kills the root only.
            let kids = (try? run(["pgrep", "-P", "\(app)"]).stdout)?.split(separator: "\n").compactMap { Int32($0) } ?? []
            for p in kids { w.killAndReap(p) }
            w.cleanUp(app)
        }
        func lastCount() -> Int { w.log().split(separator: "\n").compactMap { $0.hasPrefix("OK ") ? Int($0.dropFirst(3)) : nil }.last ?? 0 }
        #expect(waitUntil(20) { lastCount() >= 400 }, "\(w.log())")
        // Twice: the second time the connection and listener are the restored ones.
        for round in 1...2 {
            let ck = try w.checkpointKill(app)
            try #require(ck.status == 0, "round \(round): \(ck.output)")
            let before = lastCount()
            let rs = try w.ssi("restart", "\(app)")
            try #require(rs.status == 0, "round \(round): \(rs.output)")
            #expect(waitUntil(20) { lastCount() >= before + 600 || w.log().contains("FAIL") }, "\(w.log())")
            #expect(!w.log().contains("FAIL") && lastCount() >= before + 600, "round \(round): \(w.log())")
        }
    }
}
