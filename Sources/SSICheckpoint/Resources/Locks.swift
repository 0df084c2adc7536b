import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// File locks held at checkpoint: POSIX record locks (fcntl F_SETLK, owned by the process),
// OFD locks (F_OFD_SETLK, owned by the open file description) and flock(2) locks (also the
// description's). /proc/PID/fdinfo/N lists the locks of the file open on fd N that this
// process or this description holds, one "lock:" line each in the /proc/locks format
// (proc(5)); restart takes each again, in the process, on the same fd.

extension ProcessDumper {
    /// The locks shown for fd `fd`, or nil if none.
    func dumpLocks(fd: Int32) -> [FileLock]? {
        guard let text = try? ProcFS.read("/proc/\(pid)/fdinfo/\(fd)") else { return nil }
        var out = [FileLock]()
        for line in text.split(separator: "\n") where line.hasPrefix("lock:") {
            // "lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 99" (or "-> ..." for a
            // waiter, which holds nothing, and "EOF" for a lock to the end of the file).
            let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            // A lease reads "lock:\t1: LEASE  ACTIVE    READ 1234 fe:00:5678 0 EOF"; one being
            // broken ("BREAKING") is given up by then: not kept.
            guard w.count >= 9, w[2] != "->", ["POSIX", "OFDLCK", "FLOCK", "LEASE"].contains(w[2]),
                  w[3] == (w[2] == "LEASE" ? "ACTIVE" : "ADVISORY"), let start = Int64(w[7]) else { continue }
            let end = w[8] == "EOF" ? nil : Int64(w[8])
            // POSIX locks of a process show on every fd of that file: kept once, on the first.
            out.append(FileLock(kind: w[2], write: w[4] == "WRITE", start: start, end: end))
        }
        return out.isEmpty ? nil : out
    }

    /// A POSIX lock belongs to the process, not to the fd it was taken through: keep it on
    /// the first fd of the file only.
    static func dedupPosixLocks(_ fds: inout [FileDescriptorImage]) {
        var seen = Set<String>()
        for i in fds.indices {
            guard let locks = fds[i].locks else { continue }
            let kept = locks.filter { l in
                guard l.kind == "POSIX" else { return true }
                return seen.insert("\(fds[i].path)|\(l.start)|\(l.end ?? -1)|\(l.write)").inserted
            }
            fds[i].locks = kept.isEmpty ? nil : kept
        }
    }
}

extension ProcessRestorer {
    /// Takes every saved lock again, in the process, once its fds are in place. A lock that
    /// someone else took meanwhile fails the restart, naming the file.
    func restoreLocks() throws {
        for f in image.fds {
            for l in f.locks ?? [] {
                let what = "PID \(pid) fd \(f.fd): \(l.kind) \(l.write ? "write" : "read") lock on \(f.path) [\(l.start), \(l.end.map(String.init) ?? "EOF")]"
                if l.kind == "LEASE" {
                    // F_SETLEASE 1024 with F_RDLCK 0 / F_WRLCK 1. The kernel refuses a read
                    // lease on a file someone has open for writing now, and a write lease on
                    // one open anywhere else (fcntl(2), "Leases"): the application would have
                    // seen its lease broken by that; it runs on without one, said here.
                    let r = try inj.raw(.fcntl, UInt64(f.fd), 1024, l.write ? 1 : 0)
                    if r < 0 { warn("\(what): not taken again: \(String(cString: strerror(Int32(-r))))") }
                    continue
                }
                let r = try FileLockCalls.apply(l, fd: f.fd, take: true, inj: inj, mem: mem, scratch: scratch)
                if r < 0 {
                    throw SSIError.sys("\(what): taking it again", errno: Int32(-r), hint: "another process holds a conflicting lock on \(f.path) now: stop it, then restart again")
                }
            }
        }
    }
}

/// The syscalls that take or drop one saved lock in a stopped process, injected.
enum FileLockCalls {
    /// Returns the syscall's result (a negative errno on failure). Never waits: flock(2)
    /// with LOCK_NB, fcntl(2) F_SETLK / F_OFD_SETLK, not their waiting forms.
    static func apply(_ l: FileLock, fd: Int32, take: Bool, inj: Injector, mem: RemoteMemory, scratch: UInt64) throws -> Int64 {
        if l.kind == "FLOCK" {
            // LOCK_SH 1, LOCK_EX 2, LOCK_NB 4, LOCK_UN 8.
            return try inj.raw(.flock, UInt64(fd), take ? (l.write ? 6 : 5) : 8)
        }
        // struct flock (x86_64): l_type (F_RDLCK 0, F_WRLCK 1, F_UNLCK 2), l_whence
        // (SEEK_SET), l_start, l_len (0: to the end of the file), l_pid (0 for OFD locks).
        let len = l.end.map { $0 - l.start + 1 } ?? 0
        let type: UInt64 = take ? (l.write ? 1 : 0) : 2
        try mem.write(words: [type | (UInt64(SEEK_SET) << 16), UInt64(bitPattern: l.start), UInt64(bitPattern: len), 0], to: scratch)
        // F_SETLK 6, F_OFD_SETLK 37 (fcntl(2)).
        return try inj.raw(.fcntl, UInt64(fd), l.kind == "OFDLCK" ? 37 : 6, scratch)
    }

    /// Runs `body` in process `pid` (stopped under us) with a scratch page for arguments,
    /// its registers, signal mask and memory layout put back afterwards.
    static func inProcess(_ pid: Int32, threads: [Int32], _ body: (Injector, RemoteMemory, UInt64) throws -> Void) throws {
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let saved = try main.registers()
        // As the dump does: a process that handles SIGTRAP gets syscall stops, not steps.
        let trapSensitive = ProcessDumper.trapSensitive(pid: pid, tids: threads)
        if trapSensitive { Injector.useSyscallStops(threads) }
        defer { if trapSensitive { Injector.useSyscallStops(threads, false) } }
        let inj = try Injector(pid: ProcessID(pid), base: saved)
        let guardMask = try SignalMaskGuard(tracee: main, saved: saved)
        defer { guardMask.restore() }
        let scratch = try inj.call("mmap a scratch page", .mmap, 0, 4096, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0)
        defer { _ = try? inj.raw(.munmap, scratch, 4096) }
        try body(inj, RemoteMemory(pid: ProcessID(pid)), scratch)
    }
}

/// The file locks of a migration's source copy, let go of once its image is committed on the
/// target (CheckpointOptions.handOverLocks), so that the target can take them: on one machine,
/// or on a file system the nodes share, the frozen copy would otherwise hold every lock the
/// target's restore must take (the restore fails with EAGAIN), and it holds them until it is
/// killed, which waits for the target. Leases stay (their restore only warns). If the
/// migration fails, `takeBack` takes them again in the stopped copy before it goes on.
public final class HandedOverLocks: @unchecked Sendable {
    struct Held: Codable {
        var pid: Int32
        var fd: Int32
        var path: String
        var lock: FileLock
    }
    let root: Int32
    let held: [Held]
    public var count: Int { held.count }

    init(root: Int32, held: [Held]) { (self.root, self.held) = (root, held) }

    /// One line of JSON, for a daemon that dies mid-migration to find once restarted (its
    /// marker file, Migrate.swift): the stopped copy must get its locks back before it goes on.
    public func encoded() -> String {
        String(decoding: (try? JSONEncoder().encode(held)) ?? Data("[]".utf8), as: UTF8.self)
    }

    /// The locks `encoded` wrote, of the copy whose root is `root`; nil if it does not parse.
    public static func decoded(root: Int32, _ line: String) -> HandedOverLocks? {
        guard let held = try? JSONDecoder().decode([Held].self, from: Data(line.utf8)), !held.isEmpty else { return nil }
        return HandedOverLocks(root: root, held: held)
    }

    /// The locks of the seized processes that go to a migration's target: all but leases.
    static func toHandOver(_ seized: SeizedApplication, fdTables: [Int32: [FileDescriptorImage]]) -> [Held] {
        var held = [Held]()
        for pid in seized.tree.pids where seized.threads[pid] != nil {
            for f in fdTables[pid] ?? [] { for l in f.locks ?? [] where l.kind != "LEASE" { held.append(Held(pid: pid, fd: f.fd, path: f.path, lock: l)) } }
        }
        return held
    }

    /// Lets go of every lock but leases in the seized processes. A failure takes back what
    /// was let go of, then throws: the application keeps its locks and goes on.
    static func letGo(_ seized: SeizedApplication, fdTables: [Int32: [FileDescriptorImage]]) throws -> HandedOverLocks? {
        let held = toHandOver(seized, fdTables: fdTables)
        guard !held.isEmpty else { return nil }
        let locks = HandedOverLocks(root: seized.root, held: held)
        let results = try locks.apply(held, take: false, in: seized)
        let refused = results.filter { $0.errno != 0 }
        guard refused.isEmpty else {
            let released = results.filter { $0.errno == 0 }.map(\.held)
            let notBack = ((try? locks.apply(released, take: true, in: seized)) ?? []).filter { $0.errno != 0 }.count
            let why = refused.map { Self.name($0.held) + ": " + String(cString: strerror($0.errno)) }.joined(separator: "; ")
            throw SSIError(.system, "could not let go of the file locks of application \(seized.root) for its target: \(why)"
                           + (notBack > 0 ? "; \(notBack) were not taken back" : ""), hint: "the application goes on here with its locks; try the migration again")
        }
        return locks
    }

    /// Takes every lock back in the stopped source copy (seized for the moment, left
    /// stopped). A lock another process holds (the copy the target was restoring, not yet
    /// gone) is tried again for up to two seconds. Returns the locks that failed otherwise,
    /// each named, and those still held by another process, for `keepTakingBack`.
    public func takeBack() -> (failed: [String], stillHeld: HandedOverLocks?) {
        let seized = SeizedApplication(root: root)
        defer { seized.release() }
        do { try seized.seize() } catch { return (["every lock of application \(root) (it could not be seized: \(error))"], nil) }
        var failed = [String](), left = held
        for attempt in 0..<200 where !left.isEmpty {
            if attempt > 0 { usleep(10_000) }
            let r = pass(left, seized)
            failed += r.failed
            left = r.held
        }
        return (failed, left.isEmpty ? nil : HandedOverLocks(root: root, held: left))
    }

    /// Goes on taking back the locks another process held when the copy went on (`takeBack`):
    /// on a thread of its own, every quarter of a second, the running copy seized for the
    /// moment of each try (as a checkpoint seizes it), until every lock is back, the copy is
    /// gone, or ten minutes passed. The copy the target was restoring lets them go when it
    /// is removed (its node gives the restore up, or its daemon dies with it).
    public func keepTakingBack(done: @escaping @Sendable (_ left: [String]) -> Void) {
        let t = Thread { [self] in
            var left = held
            let deadline = Date().addingTimeInterval(600)
            while !left.isEmpty && Date() < deadline && kill(root, 0) == 0 {
                usleep(250_000)
                let seized = SeizedApplication(root: root)
                guard (try? seized.seize()) != nil else { continue }
                let r = pass(left, seized)
                seized.release()
                left = r.held
                if !r.failed.isEmpty { done(r.failed + left.map { Self.name($0) + ": held by another process" }); return }
            }
            done(left.map { Self.name($0) + ": held by another process" })
        }
        t.start()
    }

    /// One try at every lock of `locks` in the seized copy: those that failed for good,
    /// named, and those another process holds (a conflict: F_SETLK's EAGAIN or EACCES,
    /// flock's EWOULDBLOCK).
    private func pass(_ locks: [Held], _ seized: SeizedApplication) -> (failed: [String], held: [Held]) {
        let results: [(held: Held, errno: Int32)]
        do { results = try apply(locks, take: true, in: seized) } catch {
            return (["\(locks.count) locks of application \(root): \(error)"], [])
        }
        let failed = results.filter { $0.errno != 0 && $0.errno != EAGAIN && $0.errno != EACCES }
        return (failed.map { Self.name($0.held) + ": " + String(cString: strerror($0.errno)) },
                results.filter { $0.errno == EAGAIN || $0.errno == EACCES }.map(\.held))
    }

    static func name(_ h: Held) -> String {
        "PID \(h.pid) fd \(h.fd): \(h.lock.kind) \(h.lock.write ? "write" : "read") lock on \(h.path) [\(h.lock.start), \(h.lock.end.map(String.init) ?? "EOF")]"
    }

    /// Takes or drops `locks` in the seized processes, one injection session per process;
    /// each lock's errno (0: done). Throws only when a process cannot be injected into. A
    /// process whose leader exited is reached through a live thread (ExitedLeader).
    private func apply(_ locks: [Held], take: Bool, in seized: SeizedApplication) throws -> [(held: Held, errno: Int32)] {
        var out = [(held: Held, errno: Int32)]()
        for (pid, list) in Dictionary(grouping: locks, by: \.pid).sorted(by: { $0.key < $1.key }) {
            let handle = seized.exitedLeaders[pid] ?? pid
            try FileLockCalls.inProcess(handle, threads: seized.threads[pid] ?? [handle]) { inj, mem, scratch in
                for h in list {
                    let r = try FileLockCalls.apply(h.lock, fd: h.fd, take: take, inj: inj, mem: mem, scratch: scratch)
                    out.append((h, r < 0 ? Int32(-r) : 0))
                }
            }
        }
        return out
    }
}
