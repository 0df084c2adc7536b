import Foundation
import SSIIPC
import SSISystem
import SSITestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A fresh IPC namespace per script: `unshare --ipc` runs /bin/sh with $S the built `ssi`
/// and $T the ipc_tool fixture (Tests/Fixtures/ipc_tool.c), in a temporary directory. The
/// host's IPC objects are never seen nor touched.
struct IPCWorld {
    let dir: String
    let tool: String

    init(_ tag: String) throws {
        dir = try TestEnv.makeTempDir("ipc-\(tag)")
        tool = try TestEnv.fixture("ipc_tool")
    }

    func sh(_ script: String) throws -> CommandResult {
        try run(["/usr/bin/unshare", "--ipc", "/bin/sh", "-c", "set -e\n" + script],
                env: ["S": TestEnv.ssi, "T": tool], cwd: dir)
    }

    /// Lines of stdout starting with "NAME: ", without the prefix.
    func values(_ r: CommandResult, _ name: String) -> [String] {
        r.stdout.split(separator: "\n").filter { $0.hasPrefix("\(name): ") }.map { String($0.dropFirst(name.count + 2)) }
    }

    func cleanUp() { try? FileManager.default.removeItem(atPath: dir) }
}

@Suite("ssi ipc checkpoint/restart", .serialized,
       .enabled(if: TestEnv.isRoot, "needs root: unshare --ipc (a fresh IPC namespace) and writing /proc/sys/kernel/*_next_id"))
struct IPCTests {
    @Test("a message queue with messages of several types comes back with its key, id, mode, qbytes and messages in order")
    func queueRoundTrip() throws {
        let w = try IPCWorld("queue")
        defer { w.cleanUp() }
        let r = try w.sh("""
            $T mkq 0x100 >/dev/null                      # id 0: so that the queue under test is not the first
            q=$($T mkq 0x1234 0640)
            $T rm q 0
            $T send $q 5 first; $T send $q 7 second; $T send $q 5 ""; $T send $q 3 "fourth message"
            $T qset $q 1000 1001 0640 12000
            echo "ID: $q"; echo "BEFORE: $($T qstat $q)"
            $S ipc checkpoint -q $q q.dat
            echo "FILEMODE: $(stat -c %a q.dat)"
            $T rm q $q
            $S ipc restart -q q.dat
            echo "AFTER: $($T qstat $q)"
            echo "NEXTID: $(cat /proc/sys/kernel/msg_next_id)"
            for i in 1 2 3 4; do echo "MSG: $($T recv $q)"; done
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "ID") == ["1"])
        let before = w.values(r, "BEFORE"), after = w.values(r, "AFTER")
        #expect(before.count == 1 && before == after, "\(r.output)")
        #expect(before.first?.contains("key=4660 uid=1000 gid=1001 mode=640 qbytes=12000 qnum=4") == true, "\(r.output)")
        #expect(w.values(r, "FILEMODE") == ["600"])
        #expect(w.values(r, "NEXTID") == ["-1"])
        #expect(w.values(r, "MSG") == ["5 first", "7 second", "5 ", "3 fourth message"], "\(r.output)")
    }

    @Test("10,000 messages of mixed types and sizes: checkpoint leaves the queue exactly as it was, restart gives it back exactly")
    func bigQueue() throws {
        let w = try IPCWorld("bigqueue")
        defer { w.cleanUp() }
        let r = try w.sh("""
            echo 20000000 > /proc/sys/kernel/msgmnb
            q=$($T mkq 0x7000 0640)
            echo "SENT: $($T fill $q 10000)"
            echo "BEFORE: $($T qstat $q)"
            $S ipc checkpoint -q $q q.dat
            echo "KEPT: $($T qstat $q)"
            echo "LEFT: $($T drain $q)"
            $T rm q $q
            $S ipc restart -q q.dat
            echo "AFTER: $($T qstat $q)"
            echo "BACK: $($T drain $q)"
            """)
        #expect(r.status == 0, "\(r.output)")
        let sent = w.values(r, "SENT")
        #expect(sent.count == 1 && sent.first?.hasPrefix("10000 ") == true, "\(r.output)")
        #expect(w.values(r, "LEFT") == sent, "the checkpoint changed the queue: \(r.output)")
        #expect(w.values(r, "BACK") == sent, "the restored queue differs: \(r.output)")
        let before = w.values(r, "BEFORE")
        #expect(before.first?.hasSuffix("qnum=10000") == true && w.values(r, "KEPT") == before && w.values(r, "AFTER") == before, "\(r.output)")
    }

    @Test("a checkpoint that fails after taking messages puts every one back, in order, and writes no file")
    func failureMidway() throws {
        let w = try IPCWorld("qfail")
        defer { w.cleanUp() }
        let r = try w.sh("""
            echo 20000000 > /proc/sys/kernel/msgmnb
            q=$($T mkq 0x7001 0600)
            echo "SENT: $($T fill $q 3000)"
            if SSI_TEST_MSGQ_FAIL_AT=1234 $S ipc checkpoint -q $q q.dat 2>err; then echo "SAVED: yes"; fi
            echo "ERR: $(head -1 err)"
            [ -e q.dat ] || echo "NOFILE: yes"
            echo "KEPT: $($T drain $q)"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "SAVED").isEmpty, "\(r.output)")
        #expect(w.values(r, "ERR").first?.contains("injected failure after taking 1234 messages from message queue id") == true, "\(r.output)")
        #expect(w.values(r, "NOFILE") == ["yes"])
        #expect(w.values(r, "KEPT") == w.values(r, "SENT") && w.values(r, "SENT").first?.hasPrefix("3000 ") == true, "\(r.output)")
    }

    @Test("a queue whose qbytes is above msgmnb gets it back (CAP_SYS_RESOURCE, or msgmnb raised for one call)")
    func largeQbytes() throws {
        let w = try IPCWorld("qbytes")
        defer { w.cleanUp() }
        let r = try w.sh("""
            echo 40000 > /proc/sys/kernel/msgmnb
            q=$($T mkq 0x51 0600); $T send $q 9 big; $T qset $q 0 0 0600 30000
            echo 16384 > /proc/sys/kernel/msgmnb
            $S ipc checkpoint -q $q q.dat; $T rm q $q
            $S ipc restart -q q.dat
            echo "AFTER: $($T qstat $q)"
            echo "MSGMNB: $(cat /proc/sys/kernel/msgmnb)"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "AFTER").first?.hasSuffix("qbytes=30000 qnum=1") == true, "\(r.output)")
        #expect(w.values(r, "MSGMNB") == ["16384"])
    }

    @Test("a semaphore array comes back with every value, its owner and mode")
    func semaphores() throws {
        let w = try IPCWorld("sem")
        defer { w.cleanUp() }
        let r = try w.sh("""
            s=$($T mksem 0x5e5 6 0604)
            $T semset $s 0 1 2 300 32767 9
            echo "BEFORE: $($T semstat $s) $($T semget $s)"
            $S ipc checkpoint -s $s s.dat
            $T rm s $s
            $S ipc restart -s s.dat
            echo "AFTER: $($T semstat $s) $($T semget $s)"
            """)
        #expect(r.status == 0, "\(r.output)")
        let before = w.values(r, "BEFORE")
        #expect(before == ["key=1509 uid=0 gid=0 mode=604 nsems=6 0 1 2 300 32767 9"], "\(r.output)")
        #expect(w.values(r, "AFTER") == before, "\(r.output)")
    }

    @Test("every object of a namespace with many is seen: /proc/sysvipc read to its end")
    func manyObjects() throws {
        // Foundation's String(contentsOfFile:) read the first 4 KiB of /proc/sysvipc/sem
        // (about 40 arrays): the SEM_UNDO holds of a process using a later one were never
        // measured, and a process attached to a later segment was refused at restart as
        // attached to one that does not exist. Made here in ssi's own namespace (private
        // keys, removed after), as the engine reads it.
        let tool = try TestEnv.fixture("ipc_tool")
        var sems = [Int32](), segments = [Int32]()
        defer {
            for id in sems { _ = try? run([tool, "rm", "s", "\(id)"]) }
            for id in segments { _ = try? run([tool, "rm", "m", "\(id)"]) }
        }
        for _ in 0..<80 {
            if let id = Int32(try run([tool, "mksem", "0", "2"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) { sems.append(id) }
            if let id = Int32(try run([tool, "mkshm", "0", "4096"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) { segments.append(id) }
        }
        #expect(sems.count == 80 && segments.count == 80)
        let seen = Set(SysVIPC.semaphoreArrays().keys)
        #expect(sems.allSatisfy(seen.contains), "arrays not listed: \(sems.filter { !seen.contains($0) })")
        let listed = Set(try SysVIPC.ids(.sharedMemory))
        #expect(segments.allSatisfy(listed.contains), "segments not listed: \(segments.filter { !listed.contains($0) })")
        #expect(segments.allSatisfy { SysVIPC.segmentExists(key: nil, id: $0) })
    }

    @Test("a shared memory segment saves only its touched pages and gets them back")
    func sharedMemory() throws {
        let w = try IPCWorld("shm")
        defer { w.cleanUp() }
        let r = try w.sh("""
            m=$($T mkshm 0x5a5a 4194304 0660)             # 4 MiB: 1024 pages
            $T touch $m 0 17 100 34 1023 51
            echo "BEFORE: $($T shmstat $m)"
            $S ipc checkpoint -m $m m.dat
            echo "SIZE: $(stat -c %s m.dat)"
            $T rm m $m
            $S ipc restart -m m.dat
            echo "AFTER: $($T shmstat $m)"
            echo "RSS: $(awk -v id=$m '$2 == id { print $15 }' /proc/sysvipc/shm)"
            for p in 0 100 1023 5; do echo "PAGE: $p $($T peek $m $p)"; done
            """)
        #expect(r.status == 0, "\(r.output)")
        let before = w.values(r, "BEFORE")
        #expect(before == ["key=23130 uid=0 gid=0 mode=660 size=4194304"], "\(r.output)")
        #expect(w.values(r, "AFTER") == before)
        let size = try #require(w.values(r, "SIZE").first.flatMap { Int($0) })
        // 3 touched pages; the header, metadata and trailer take well under a page.
        #expect(size >= 3 * 4096 && size < 4 * 4096, "file is \(size) bytes")
        #expect(w.values(r, "RSS") == ["\(3 * 4096)"], "restored segment should have exactly the 3 saved pages: \(r.output)")
        #expect(w.values(r, "PAGE") == ["0 17 17", "100 34 34", "1023 51 51", "5 0 0"], "\(r.output)")
    }

    @Test("a locked segment is locked again; one removed while attached comes back unmarked, with a warning")
    func segmentFlags() throws {
        let w = try IPCWorld("shmflags")
        defer { w.cleanUp() }
        let r = try w.sh("""
            a=$($T mkshm 0x10c 65536); $T touch $a 2 7; $T lock $a
            $S ipc checkpoint -m $a locked.dat; $T rm m $a
            $S ipc restart -m locked.dat
            echo "LOCKED: $(awk -v id=$a '$2 == id { print $3 }' /proc/sysvipc/shm)"
            $T rm m $a
            d=$($T mkshm 0x10d 65536); $T touch $d 3 8
            $T hold $d 3 > held & sleep 0.3
            $T rm m $d                                     # marked for removal, still attached
            echo "MARKED: $(awk -v id=$d '$2 == id { print $1, $3 }' /proc/sysvipc/shm)"
            $S ipc checkpoint -m $d removed.dat
            wait
            [ -z "$(awk -v id=$d '$2 == id' /proc/sysvipc/shm)" ] && echo "GONE: yes"
            $S ipc restart -m removed.dat 2>err
            echo "WARN: $(cat err)"
            echo "RESTORED: $(awk -v id=$d '$2 == id { print $1, $3 }' /proc/sysvipc/shm) $($T peek $d 3)"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "LOCKED") == ["2600"], "\(r.output)")
        #expect(w.values(r, "MARKED") == ["0 1600"], "\(r.output)")
        #expect(w.values(r, "GONE") == ["yes"])
        #expect(w.values(r, "WARN").first?.contains("had been removed (IPC_RMID) while still attached") == true, "\(r.output)")
        #expect(w.values(r, "RESTORED") == ["0 600 8 8"], "\(r.output)")
    }

    @Test("a key or id in use is refused naming the object that holds it, and nothing is changed")
    func conflicts() throws {
        let w = try IPCWorld("conflict")
        defer { w.cleanUp() }
        let r = try w.sh("""
            q=$($T mkq 0x1234); $T send $q 1 kept
            $S ipc checkpoint -q $q q.dat
            $T rm q $q
            other=$($T mkq 0x1234)                        # same key, another id
            echo "OTHER: $other"
            before=$(cat /proc/sysvipc/msg)
            if $S ipc restart -q q.dat 2>err1; then echo "RESTORED1: yes"; fi
            echo "ERR1: $(head -1 err1)"
            [ "$before" = "$(cat /proc/sysvipc/msg)" ] && echo "UNCHANGED1: yes"
            $T rm q $other
            echo $q > /proc/sys/kernel/msg_next_id
            holder=$($T mkq 0x999)                        # another key, the same id
            echo "HOLDER: $holder"
            before=$(cat /proc/sysvipc/msg)
            if $S ipc restart -q q.dat 2>err2; then echo "RESTORED2: yes"; fi
            echo "ERR2: $(head -1 err2)"
            [ "$before" = "$(cat /proc/sysvipc/msg)" ] && echo "UNCHANGED2: yes"
            echo "NEXTID: $(cat /proc/sys/kernel/msg_next_id)"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "RESTORED1").isEmpty && w.values(r, "RESTORED2").isEmpty, "\(r.output)")
        let other = w.values(r, "OTHER").first ?? "?"
        #expect(w.values(r, "ERR1").first?.contains("key 0x00001234 is in use by message queue id \(other)") == true, "\(r.output)")
        #expect(w.values(r, "ERR2").first?.contains("id 0 is in use by message queue id 0 key 0x00000999") == true, "\(r.output)")
        #expect(w.values(r, "HOLDER") == ["0"])
        #expect(w.values(r, "UNCHANGED1") == ["yes"] && w.values(r, "UNCHANGED2") == ["yes"], "\(r.output)")
        #expect(w.values(r, "NEXTID") == ["-1"])
    }

    @Test("corrupt, truncated and foreign files are refused naming the file, before anything is created")
    func badFiles() throws {
        let w = try IPCWorld("bad")
        defer { w.cleanUp() }
        let r = try w.sh("""
            q=$($T mkq 0x42); for i in 1 2 3 4 5 6 7 8; do $T send $q $i "message number $i"; done
            $S ipc checkpoint -q $q good.dat
            $T rm q $q
            size=$(stat -c %s good.dat)
            cp good.dat flipped.dat; printf 'X' | dd of=flipped.dat bs=1 seek=$((size - 40)) conv=notrunc 2>/dev/null
            head -c $((size - 20)) good.dat > truncated.dat
            cp good.dat header.dat; printf '\\377' | dd of=header.dat bs=1 seek=9 conv=notrunc 2>/dev/null
            echo "just some text" > text.dat
            for f in flipped truncated header text; do
              if $S ipc restart -q $f.dat 2>err; then echo "RESTORED: $f"; fi
              echo "ERR: $f $(head -1 err)"
            done
            echo "OBJECTS: $(tail -n +2 /proc/sysvipc/msg | wc -l)"
            $S ipc restart -q good.dat >/dev/null && echo "GOOD: yes"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "RESTORED").isEmpty, "\(r.output)")
        let errs = w.values(r, "ERR")
        #expect(errs.count == 4)
        #expect(errs.contains { $0.hasPrefix("flipped ") && $0.contains("flipped.dat is corrupt: its CRC-32C does not match") }, "\(errs)")
        #expect(errs.contains { $0.hasPrefix("truncated ") && $0.contains("truncated.dat is truncated") }, "\(errs)")
        #expect(errs.contains { $0.hasPrefix("header ") && $0.contains("header.dat is corrupt: its header checksum") }, "\(errs)")
        #expect(errs.contains { $0.hasPrefix("text ") && $0.contains("text.dat is not a SwiftSSI IPC snapshot") }, "\(errs)")
        #expect(w.values(r, "OBJECTS") == ["0"])
        #expect(w.values(r, "GOOD") == ["yes"])
    }

    @Test("the wrong kind, an existing output file and a missing object are refused clearly")
    func wrongKindAndExistingFile() throws {
        let w = try IPCWorld("kind")
        defer { w.cleanUp() }
        let r = try w.sh("""
            m=$($T mkshm 0x77 65536); $T touch $m 1 9
            $S ipc checkpoint -m $m m.dat
            $T rm m $m
            if $S ipc restart -q m.dat 2>err; then echo "RESTORED: -q"; fi
            echo "KIND: $(cat err | tr '\\n' ' ')"
            echo "OBJECTS: $(tail -n +2 /proc/sysvipc/shm | wc -l)"
            echo previous > exists.dat
            s=$($T mksem 0x88 2)
            if $S ipc checkpoint -s $s exists.dat 2>err; then echo "WROTE: exists"; fi
            echo "EXISTS: $(head -1 err)"
            echo "CONTENT: $(cat exists.dat)"
            if $S ipc checkpoint -q 4242 none.dat 2>err; then echo "WROTE: none"; fi
            echo "MISSING: $(head -1 err)"
            [ -e none.dat ] || echo "NOFILE: yes"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "RESTORED").isEmpty && w.values(r, "WROTE").isEmpty, "\(r.output)")
        let kind = w.values(r, "KIND").first ?? ""
        #expect(kind.contains("m.dat holds a shared memory segment, not a message queue") && kind.contains("ssi ipc restart -m m.dat"), "\(kind)")
        #expect(w.values(r, "OBJECTS") == ["0"])
        #expect(w.values(r, "EXISTS").first?.contains("exists.dat already exists") == true, "\(r.output)")
        #expect(w.values(r, "CONTENT") == ["previous"])
        #expect(w.values(r, "MISSING").first?.contains("there is no message queue with id 4242") == true, "\(r.output)")
        #expect(w.values(r, "NOFILE") == ["yes"])
    }

    @Test("a non-root owner can checkpoint its own objects; restore as non-root says it needs root")
    func nonRoot() throws {
        let w = try IPCWorld("nonroot")
        defer { w.cleanUp() }
        chmod(w.dir, 0o777)
        let r = try w.sh("""
            q=$($T mkq 0x4321 0600); $T send $q 2 mine
            $T qset $q 65534 65534 0600 16384
            nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
            nobody $S ipc checkpoint -q $q user.dat && echo "SAVED: yes"
            echo "OWNER: $(stat -c %u user.dat)"
            $T rm q $q
            if nobody $S ipc restart -q user.dat 2>err; then echo "RESTORED: yes"; fi
            echo "ERR: $(cat err | tr '\\n' ' ')"
            echo "OBJECTS: $(tail -n +2 /proc/sysvipc/msg | wc -l)"
            r=$($T mkq 0x99 0600)
            if nobody $S ipc checkpoint -q $r other.dat 2>err; then echo "SAVED2: yes"; fi
            echo "ERR2: $(head -1 err)"
            """)
        #expect(r.status == 0, "\(r.output)")
        #expect(w.values(r, "SAVED") == ["yes"], "\(r.output)")
        #expect(w.values(r, "OWNER") == ["65534"])
        #expect(w.values(r, "RESTORED").isEmpty)
        let err = w.values(r, "ERR").first ?? ""
        #expect(err.contains("needs root") && err.contains("msg_next_id") && err.contains("sudo"), "\(err)")
        #expect(w.values(r, "OBJECTS") == ["0"])
        #expect(w.values(r, "SAVED2").isEmpty)
        #expect(w.values(r, "ERR2").first?.contains("no read permission on message queue id") == true, "\(r.output)")
    }

    @Test("a process attached to a segment: restart refuses while the segment is missing, re-attaches once it is restored")
    func attachedSegment() throws {
        let dir = try TestEnv.makeTempDir("ipc-attach")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try run(["unshare", "--ipc", "--pid", "--fork", "--mount-proc", "/bin/bash",
                         "\(TestEnv.repoRoot)/Tests/Fixtures/shm-attach-scenario.sh", TestEnv.ssi, try TestEnv.fixture("ipc_tool"), dir])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let err = lines.first { $0.hasPrefix("ERR: ") } ?? ""
        #expect(err.contains("0x00007777") || err.contains("7777"), "\(r.output)")
        #expect(err.contains("does not exist"), "\(r.output)")
        #expect(lines.contains { $0.hasPrefix("HINT: ") && $0.contains("ssi ipc restart -m") }, "\(r.output)")
        #expect(lines.contains("RESTARTED"), "\(r.output)")
        let addr = lines.first { $0.hasPrefix("ADDR: ") }?.dropFirst(6).split(separator: "/").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
        #expect(addr.count == 2 && !addr[0].isEmpty && addr[0] == addr[1], "not re-attached at the same address: \(r.output)")
        #expect(lines.contains("PEEK: 90 90"), "the restored segment lost its content: \(r.output)")
    }

    @Test("the seed's scenario: two processes, one queue, a log; freeze, save queue and app, restart both")
    func seedScenario() throws {
        let dir = try TestEnv.makeTempDir("ipc-seed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let app = try TestEnv.fixture("msgapp")
        // Fresh IPC and PID namespaces: the script is PID 1 there and reaps the orphans, and
        // the host's queues are never touched.
        let r = try run(["unshare", "--ipc", "--pid", "--fork", "--mount-proc", "/bin/bash",
                         "\(TestEnv.repoRoot)/Tests/Fixtures/msgqueue-scenario.sh", TestEnv.ssi, app, dir])
        #expect(r.stdout.contains("SCENARIO PASS"), "\(r.output)\n\((try? String(contentsOfFile: "\(dir)/out.log", encoding: .utf8)) ?? "")")
        #expect(r.stdout.contains("EXIT 0"), "\(r.output)")
    }
}

/// Needs neither root nor a namespace: the file is refused before any IPC call.
@Suite("ssi ipc file checks without root")
struct IPCFileTests {
    @Test("a file that is not an IPC snapshot is refused naming it")
    func notASnapshot() throws {
        let dir = try TestEnv.makeTempDir("ipc-file")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "hello\n".write(toFile: "\(dir)/x.dat", atomically: false, encoding: .utf8)
        let r = try run([TestEnv.ssi, "ipc", "restart", "-q", "\(dir)/x.dat"])
        #expect(r.status == 1 && r.stderr.contains("\(dir)/x.dat is not a SwiftSSI IPC snapshot"), "\(r.output)")
        #expect(throws: (any Error).self) { try SysVIPC.inspect("\(dir)/x.dat") }
        let missing = try run([TestEnv.ssi, "ipc", "restart", "\(dir)/nope.dat"])
        #expect(missing.status == 1 && missing.stderr.contains("cannot open \(dir)/nope.dat"), "\(missing.output)")
        // Read-only look at this namespace's /proc/sysvipc/shm: no segment has id Int32.max.
        #expect(!SysVIPC.segmentExists(key: nil, id: Int32.max))
        do {
            try SysVIPC.requireSegment(key: 0x1234, id: Int32.max)
            Issue.record("requireSegment should throw for a missing segment")
        } catch {
            #expect("\(error)".contains("shared memory segment id \(Int32.max) key 0x00001234 does not exist") && "\(error)".contains("ssi ipc restart -m"), "\(error)")
        }
        let noKind = try run([TestEnv.ssi, "ipc", "checkpoint", "0", "\(dir)/y.dat"])
        #expect(noKind.status != 0 && noKind.stderr.contains("-q (message queue)"), "\(noKind.output)")
    }
}

/// IPC snapshots written before they became archives (format version 1) are still read.
@Suite("ssi ipc files of format version 1")
struct LegacyIPCFileTests {
    /// A semaphore array saved by a version 1 ssi, laid out by hand as docs/ipc.md describes.
    static func versionOneFile(values: [UInt16]) -> [UInt8] {
        let meta = Array("""
            {"cgid":0,"cuid":0,"date":"2026-01-01T00:00:00Z","format":"swiftssi-ipc","formatVersion":1,"gid":0,"id":32768,\
            "key":4660,"kernel":"6.18.0","kind":"sem","mode":384,"semaphores":{"values":[\(values.map(String.init).joined(separator: ","))]},"uid":0}
            """.utf8)
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        var file = Array("SSI-IPC\n".utf8) + le(UInt32(1)) + le(UInt32(2)) + le(UInt64(meta.count)) + le(UInt64(0))
        file += le(CRC32C.checksum(file)) + le(UInt32(0))
        file += meta
        file += le(CRC32C.checksum(file)) + Array("END\n".utf8)
        return file
    }

    @Test("queue metadata written before the saved times and pids were recorded still decodes")
    func queueMetadataWithoutTimes() throws {
        let old = Data("""
            {"cgid":0,"cuid":0,"date":"2026-01-01T00:00:00Z","format":"swiftssi-ipc","formatVersion":2,"gid":0,"id":1,\
            "key":4660,"kernel":"6.18.0","kind":"msg","mode":384,"queue":{"bytes":5,"messages":1,"qbytes":16384},"uid":0}
            """.utf8)
        let info = try JSONDecoder().decode(IPCSnapshotInfo.self, from: old)
        #expect(info.queue?.messages == 1 && info.queue?.bytes == 5 && info.queue?.sendTime == nil && info.queue?.readBy == nil)
    }

    @Test("a version 1 file is verified and read; a damaged one is refused")
    func readsVersionOne() throws {
        let dir = try TestEnv.makeTempDir("ipc-v1")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bytes = LegacyIPCFileTests.versionOneFile(values: [1, 2, 3])
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/sem.dat"))
        let info = try SysVIPC.inspect("\(dir)/sem.dat", kind: .semaphoreArray)
        #expect(info.formatVersion == 1 && info.kind == .semaphoreArray && info.key == 0x1234 && info.id == 32768)
        #expect(info.semaphores?.values == [1, 2, 3] && info.mode == 0o600)
        bytes[bytes.count - 20] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/bad.dat"))
        do {
            _ = try SysVIPC.inspect("\(dir)/bad.dat")
            Issue.record("a damaged version 1 file was accepted")
        } catch let e as SSIError {
            #expect(e.message.contains("bad.dat is corrupt: its CRC-32C does not match"), "\(e)")
        }
    }
}
