import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// eventfd, timerfd, signalfd and epoll: anonymous inodes whose whole state /proc/PID/fdinfo
// shows (proc(5)), created anew at restart in the process with that state.

extension ProcessDumper {
    /// eventfd, timerfd, signalfd and epoll: /proc/PID/fdinfo shows all their state
    /// (proc(5), "/proc/pid/fdinfo").
    func anonInode(fd: Int32, link: String, flags: Int32, cloexec: Bool, info fdinfo: FdInfo) throws -> FileDescriptorImage? {
        var img = FileDescriptorImage(fd: fd, kind: .eventfd, path: link, flags: flags, closeOnExec: cloexec, position: 0)
        var info = fdinfo
        if link == "anon_inode:[timerfd]", (info.lines["it_interval"] ?? "(0, 0)") != "(0, 0)", (info.lines["it_value"] ?? "") == "(0, 0)" {
            // A periodic timer that expired and has not been read stays expired, unarmed, until
            // a read or timerfd_gettime forwards it (fs/timerfd.c): fdinfo then shows no time
            // left and only the first expiration, and the restart made it a disarmed timer.
            // timerfd_gettime through a copy forwards it as the program's next read would,
            // counting the periods it missed into its unread expirations.
            if let copy = try? fdCopy(fd: fd) {
                var spec = [Int64](repeating: 0, count: 4)   // struct itimerspec
                _ = spec.withUnsafeMutableBytes { Syscall.timerfd_gettime.callHere(Int(copy), Int(bitPattern: $0.baseAddress)) }
                close(copy)
                info = (try? FdInfo.read(pid: pid, fd: fd)) ?? info
            }
        }
        func pair(_ key: String) -> (Int64, Int64) {
            let nums = (info.lines[key] ?? "").split(whereSeparator: { !"0123456789-".contains($0) }).compactMap { Int64($0) }
            return nums.count == 2 ? (nums[0], nums[1]) : (0, 0)
        }
        switch link {
        case "anon_inode:[eventfd]":
            img.eventCount = UInt64((info.lines["eventfd-count"] ?? "0").trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
            img.eventSemaphore = (info.lines["eventfd-semaphore"] ?? "0").trimmingCharacters(in: .whitespaces) == "1"
        case "anon_inode:[timerfd]":
            img.kind = .timerfd
            let v = pair("it_value"), i = pair("it_interval")
            img.timer = TimerState(clockID: Int32(info.lines["clockid"] ?? "1") ?? 1, valueSeconds: v.0, valueNanoseconds: v.1,
                                   intervalSeconds: i.0, intervalNanoseconds: i.1, ticks: UInt64(info.lines["ticks"] ?? "0") ?? 0)
            // fdinfo prints "settime flags" in octal (fs/timerfd.c, timerfd_show). An absolute
            // timer (TFD_TIMER_ABSTIME) keeps its deadline on its own clock, not what was left:
            // a CLOCK_REALTIME deadline must not move by the time the application was down.
            let settime = Int32((info.lines["settime flags"] ?? "0").trimmingCharacters(in: .whitespaces), radix: 8) ?? 0
            if settime != 0 { img.timer!.settimeFlags = settime }
            if settime & 1 != 0 && (v.0 != 0 || v.1 != 0) {
                let deadline = Clock.nanoseconds(img.timer!.clockID) + v.0 * 1_000_000_000 + v.1
                img.timer!.deadlineSeconds = deadline / 1_000_000_000
                img.timer!.deadlineNanoseconds = deadline % 1_000_000_000
            }
        case "anon_inode:[pidfd]":
            // fdinfo's NSpid lists the process's ids from /proc's namespace (ours) down to its
            // own: the last is the one its holder, in the same namespace, uses (proc(5)).
            // "Pid: -1": the process was reaped, and nothing can name it again.
            img.kind = .pidfd
            guard let ns = info.lines["NSpid"]?.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.flatMap({ Int32($0) }), ns > 0 else {
                throw SSIError(.unsupported, "PID \(pid) fd \(fd): a pidfd of a process that was reaped is not supported; nothing was written",
                               hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
            }
            img.pidfdTarget = ns
        case "anon_inode:[signalfd]":
            img.kind = .signalfd
            img.signalMask = UInt64((info.lines["sigmask"] ?? "0").trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
        case "anon_inode:[eventpoll]":
            img.kind = .epoll
            // "tfd: N events: HEX data: HEX ...", one line per registered fd.
            var targets = [EpollTarget]()
            var files = [(ino: UInt64, sdev: UInt64)?]()
            for line in try ProcFS.read("/proc/\(pid)/fdinfo/\(fd)").split(separator: "\n") where line.hasPrefix("tfd:") {
                let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard w.count >= 6, let t = Int32(w[1]), let ev = UInt32(w[3], radix: 16), let data = UInt64(w[5], radix: 16) else { continue }
                targets.append(EpollTarget(fd: t, events: ev, data: data))
                // "ino:HEX sdev:HEX": the entry's file (ep_show_fdinfo).
                let field = { (name: String) in w.first { $0.hasPrefix(name) }.flatMap { UInt64($0.dropFirst(name.count), radix: 16) } }
                files.append(field("ino:").flatMap { ino in field("sdev:").map { (ino, $0) } })
            }
            img.epollTargets = try findMovedTargets(targets, files: files, epoll: fd)
        default:
            return nil
        }
        return img
    }

    /// An epoll entry is keyed by its file and the fd number it was added with; the number
    /// may since name another file (closed, reused by dup2) while the entry's file lives on
    /// at another number. kcmp(2) KCMP_EPOLL_TFD tells which fd holds each entry's file.
    /// `files`: each entry's inode and device as the epoll set's fdinfo names them. A socket
    /// at the entry's number with that inode is the entry's file (a socket has one open file
    /// description: it cannot be opened again through /proc), told without kcmp, whose
    /// KCMP_EPOLL_TFD walks the set from its start for each entry (get_epoll_tfile_raw_ptr:
    /// O(entries^2) for a server's set of 10,000 connections).
    func findMovedTargets(_ targets: [EpollTarget], files: [(ino: UInt64, sdev: UInt64)?] = [], epoll efd: Int32) throws -> [EpollTarget] {
        var out = targets
        var seen = [Int32: Int]()
        lazy var fds = (try? openFDs(of: pid)) ?? []
        for i in out.indices {
            let t = out[i].fd
            let nth = seen[t, default: 0]
            seen[t] = nth + 1
            if i < files.count, let f = files[i], isSocket(fd: t, inode: f.ino, device: f.sdev) { continue }
            if Kcmp.isEpollTarget(ProcessID(pid), fd: t, epoll: efd, target: t, nth: nth) { continue }
            if let via = fds.first(where: { $0 != t && Kcmp.isEpollTarget(ProcessID(pid), fd: $0, epoll: efd, target: t, nth: nth) }) {
                out[i].viaFD = via
            } else {
                // No fd of this process holds the entry's file: it lives on in another
                // process (a child that inherited it before this one closed its own fd, the
                // epoll(7) FAQ's case), where no epoll_ctl of this process can reach it.
                // checkSharedEpolls decides (-1: not here).
                out[i].viaFD = -1
            }
        }
        return out
    }

    /// Whether fd `fd` of the process is a socket with this inode on this device (the
    /// kernel's dev_t, major << 20 | minor, as fdinfo prints it; stat(2) encodes it another way).
    func isSocket(fd: Int32, inode: UInt64, device: UInt64) -> Bool {
        var st = stat()
        guard stat("/proc/\(pid)/fd/\(fd)", &st) == 0, st.st_mode & S_IFMT == S_IFSOCK, UInt64(st.st_ino) == inode else { return false }
        let d = UInt64(st.st_dev)
        let major = ((d >> 8) & 0xfff) | ((d >> 32) & ~UInt64(0xfff)), minor = (d & 0xff) | ((d >> 12) & ~UInt64(0xff))
        return major << 20 | minor == device
    }

    /// An epoll instance shared by several fds (after dup() or fork()) is rebuilt once, by
    /// one of its holders, and handed to the others (ProcessRestorer.restoreLateEpolls):
    /// its entries are keyed by file and fd number (epoll_ctl(2)), so it must be built in a
    /// process that has every file it watches. The first holder (by PID, then fd) where
    /// kcmp(2) KCMP_EPOLL_TFD finds each entry's file keeps the entries in its image; the
    /// others' are dropped (nil), which is how the restart tells the builder. Refused, naming
    /// the holders: an instance none of whose holders has every watched file open (an entry
    /// whose file only lives on in a process that does not hold the instance), and epoll
    /// sets nested with a shared one (one is built before the other exists). With -i those
    /// fds are restored closed.
    static func checkSharedEpolls(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool) throws {
        var groups = [String: [(pid: Int32, fd: Int32)]]()
        for (pid, fds) in tables {
            for f in fds where f.kind == .epoll { if let id = f.sharedID { groups[id, default: []].append((pid, f.fd)) } }
        }
        func image(_ m: (pid: Int32, fd: Int32)) -> FileDescriptorImage? { tables[m.pid]?.first { $0.fd == m.fd } }
        func refuse(_ id: String, _ why: String) throws {
            let members = groups[id]!.sorted { ($0.pid, $0.fd) < ($1.pid, $1.fd) }
            if ignoreUnsupported {
                for m in members {
                    tables[m.pid]!.removeAll { $0.fd == m.fd }
                    // Another epoll set of the process that watched it must not add it again.
                    for i in tables[m.pid]!.indices where tables[m.pid]![i].kind == .epoll {
                        tables[m.pid]![i].epollTargets?.removeAll { ($0.viaFD ?? $0.fd) == m.fd }
                    }
                }
                return
            }
            let holders = members.map { "PID \($0.pid) fd \($0.fd)" }.joined(separator: ", ")
            throw SSIError(.unsupported, "PID \(members[0].pid) fd \(members[0].fd): an epoll instance shared by several fds (\(holders)) \(why); nothing was written and the application goes on",
                           hint: "use `ssi checkpoint -i` to restore it as a closed fd")
        }
        // An instance of one fd with an entry whose file no fd of its process holds
        // (findMovedTargets): refused by name, or with -i restored without that entry.
        for (pid, fds) in tables.sorted(by: { $0.key < $1.key }) {
            for (i, f) in fds.enumerated() where f.kind == .epoll && f.sharedID == nil {
                guard let lost = f.epollTargets?.first(where: { $0.viaFD == -1 }) else { continue }
                if ignoreUnsupported {
                    tables[pid]![i].epollTargets?.removeAll { $0.viaFD == -1 }
                    continue
                }
                throw SSIError(.unsupported, "PID \(pid) fd \(f.fd): an entry of this epoll set (added as fd \(lost.fd)) watches a file that no fd of PID \(pid) holds any more: it lives on in another process (a child that inherited it before PID \(pid) closed its own), and the restart could not register it again; nothing was written and the application goes on",
                               hint: "have the program remove the entry (EPOLL_CTL_DEL) before closing its fd, or use `ssi checkpoint -i` to restore the epoll set without that entry")
            }
        }
        for id in groups.keys.sorted() {
            let members = groups[id]!.sorted { ($0.pid, $0.fd) < ($1.pid, $1.fd) }
            // Nested with another epoll set, either way: an epoll fd of a holder among its
            // entries, or one of its fds among the entries of an epoll set of that holder.
            let nested = members.contains { m in
                let epolls = tables[m.pid]!.filter { $0.kind == .epoll }
                let own = Set(members.filter { $0.pid == m.pid }.map(\.fd)), all = Set(epolls.map(\.fd))
                return epolls.contains { e in (e.epollTargets ?? []).contains { t in
                    let watched = t.viaFD ?? t.fd
                    return own.contains(e.fd) ? all.contains(watched) : own.contains(watched)
                } }
            }
            if nested { try refuse(id, "watches or is watched by another epoll set, which is not supported yet"); continue }
            // The builder: every entry's file found in its own fd table.
            let builder = members.first { m in
                guard let f = image(m) else { return false }
                var seen = [Int32: Int]()
                return (f.epollTargets ?? []).allSatisfy { t in
                    let nth = seen[t.fd, default: 0]
                    seen[t.fd] = nth + 1
                    return Kcmp.isEpollTarget(ProcessID(m.pid), fd: t.viaFD ?? t.fd, epoll: m.fd, target: t.fd, nth: nth)
                }
            }
            guard let builder else {
                try refuse(id, "watches files that no single one of its holders has all open")
                continue
            }
            for m in members where m != builder {
                if let i = tables[m.pid]!.firstIndex(where: { $0.fd == m.fd }) { tables[m.pid]![i].epollTargets = nil }
            }
        }
    }
}

extension ProcessDumper {
    /// A pidfd names a process of the application: one outside it (its launcher, a
    /// daemon) would be another process, or none, wherever the application restarts.
    /// `pids`: the application's processes, by our ids.
    static func completePidfds(_ tables: inout [Int32: [FileDescriptorImage]], pids: Set<Int32>, ignoreUnsupported: Bool) throws {
        for (pid, fds) in tables {
            var keep = [FileDescriptorImage]()
            for f in fds {
                guard f.kind == .pidfd else { keep.append(f); continue }
                let target = (try? FdInfo.read(pid: pid, fd: f.fd))?.lines["Pid"].flatMap { Int32($0) } ?? -1
                if pids.contains(target) { keep.append(f); continue }
                if ignoreUnsupported { continue }
                throw SSIError(.unsupported, "PID \(pid) fd \(f.fd): a pidfd of PID \(target), which is not part of the application; nothing was written",
                               hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
            }
            tables[pid] = keep
        }
    }
}

extension ProcessRestorer {
    /// Pidfds, once every process of the application exists (a parent's pidfd of a child
    /// is restored before the child is): pidfd_open(2) in the process, of the PID it sees,
    /// with PIDFD_NONBLOCK (O_NONBLOCK) and PIDFD_THREAD (O_EXCL) as they were.
    func restorePidfds() throws {
        for f in image.fds where f.kind == .pidfd {
            guard let target = f.pidfdTarget else { continue }
            let fd = try inj.call("pidfd_open(\(target)) for fd \(f.fd)", .pidfd_open, UInt64(target), UInt64(f.flags & (O_NONBLOCK | O_EXCL)))
            if fd != UInt64(f.fd) {
                try inj.call("dup3 pidfd to \(f.fd)", .dup3, fd, UInt64(f.fd), UInt64(f.closeOnExec ? O_CLOEXEC : 0))
                try inj.call("close", .close, fd)
            } else if !f.closeOnExec {
                try inj.call("fcntl F_SETFD", .fcntl, fd, UInt64(F_SETFD), 0)
            }
        }
    }

    /// Whether epoll fd `f` is built after every process exists (restoreLateEpolls) rather
    /// than with the process's other fds: shared with other fds (checkSharedEpolls), or
    /// watching a pidfd (made once the process it names exists), or watching such a set.
    func isLateEpoll(_ f: FileDescriptorImage, depth: Int = 0) -> Bool {
        guard f.kind == .epoll else { return false }
        if f.sharedID != nil { return true }
        guard depth < 4 else { return false }
        return (f.epollTargets ?? []).contains { t in
            guard let w = fdByNumber[t.viaFD ?? t.fd] else { return false }
            return w.kind == .pidfd || isLateEpoll(w, depth: depth + 1)
        }
    }

    /// Epoll instances left for when every process has its other fds and its pidfds
    /// (isLateEpoll). A shared one (checkSharedEpolls) is built by the holder whose image
    /// keeps the entries, put at each of its fds of it, then copied by ssi from it
    /// (pidfd_getfd(2)) and taken by every other holder (FDTransfer): one open file
    /// description, as before. Before `finish`, while the processes still run with ssi's
    /// credentials (pidfd_getfd needs PTRACE_MODE_ATTACH_REALCREDS) and hold ssi's pidfd.
    /// Sets that watch another epoll set come after it.
    static func restoreLateEpolls(_ restorers: [ProcessRestorer]) throws {
        var holders = [String: [(ProcessRestorer, FileDescriptorImage)]]()
        var order = [String]()
        for pr in restorers {
            for f in pr.image.fds where pr.isLateEpoll(f) {
                let id = f.sharedID ?? "late \(pr.pid):\(f.fd)"
                if holders[id] == nil { order.append(id) }
                holders[id, default: []].append((pr, f))
            }
        }
        func watchesEpoll(_ id: String) -> Bool {
            holders[id]!.contains { pr, f in (f.epollTargets ?? []).contains { t in pr.image.fds.contains { $0.fd == (t.viaFD ?? t.fd) && $0.kind == .epoll } } }
        }
        order = order.filter { !watchesEpoll($0) } + order.filter(watchesEpoll)
        for id in order {
            let all = holders[id]!
            guard let (builder, model) = all.first(where: { $0.1.epollTargets != nil }) else {
                throw SSIError(.corrupt, "the epoll instance \(id) shared by \(all.map { "PID \($0.0.pid) fd \($0.1.fd)" }.joined(separator: ", ")) has no holder that keeps its entries",
                               hint: "restart another version")
            }
            let made = try builder.createAnonInode(model)
            let mine = all.filter { $0.0 === builder }.map(\.1)
            for f in mine { try builder.placeFD(made, as: f) }
            if !mine.contains(where: { UInt64($0.fd) == made }) { try builder.inj.call("close", .close, made) }
            guard let placed = mine.first?.fd else { continue }
            let copy = try FDTransfer.copy(fd: placed, from: builder.inj.pid)
            defer { close(copy) }
            for (pr, f) in all where pr !== builder {
                let got = try FDTransfer.take(copy, inj: pr.inj, ssiPidFD: pr.ssiPidFD, what: "PID \(pr.pid) fd \(f.fd) (an epoll instance of PID \(builder.pid))")
                try pr.placeFD(got, as: f)
                if got != UInt64(f.fd) { try pr.inj.call("close", .close, got) }
            }
        }
    }

    /// eventfd, timerfd, signalfd, epoll: created anew with the saved state.
    func createAnonInode(_ f: FileDescriptorImage) throws -> UInt64 {
        let flags = UInt64(f.flags & O_NONBLOCK)
        switch f.kind {
        case .eventfd:
            let fd = try inj.call("eventfd2", .eventfd2, 0, flags | (f.eventSemaphore == true ? 1 : 0))
            if let n = f.eventCount, n > 0 {
                try mem.write(words: [n], to: scratch)
                try inj.call("write eventfd", .write, fd, scratch, 8)
            }
            return fd
        case .timerfd:
            var t = f.timer ?? TimerState(clockID: Clock.monotonic, valueSeconds: 0, valueNanoseconds: 0, intervalSeconds: 0, intervalNanoseconds: 0, ticks: 0)
            let elapsed = timeSinceTimersRead()
            if (t.settimeFlags ?? 0) & 1 == 0, t.valueSeconds != 0 || t.valueNanoseconds != 0, elapsed > 0, clocksThatRun.contains(t.clockID) {
                // A relative timer moves on by the time since the checkpoint; the periods it
                // missed meanwhile are expirations not read yet (ticks), as they would be, and
                // its next expiry stays on its schedule.
                let (left, missed) = Self.scheduleKept(t.valueSeconds * 1_000_000_000 + t.valueNanoseconds,
                                                       interval: t.intervalSeconds * 1_000_000_000 + t.intervalNanoseconds, elapsed: elapsed)
                (t.valueSeconds, t.valueNanoseconds) = (left / 1_000_000_000, left % 1_000_000_000)
                t.ticks += UInt64(missed)
            }
            let fd = try inj.call("timerfd_create", .timerfd_create, UInt64(t.clockID), flags)
            let flags = t.settimeFlags ?? 0
            if t.valueSeconds != 0 || t.valueNanoseconds != 0 || flags & 2 != 0 {
                // struct itimerspec { it_interval, it_value }: relative to now, or with
                // TFD_TIMER_ABSTIME the saved deadline. TFD_TIMER_CANCEL_ON_SET is accepted
                // only with an absolute CLOCK_REALTIME(_ALARM) timer (timerfd_create(2)), as
                // it was set, so the flags are given back as they were.
                let spec: [Int64] = flags & 1 != 0
                    ? [t.intervalSeconds, t.intervalNanoseconds, t.deadlineSeconds ?? 0, t.deadlineNanoseconds ?? 0]
                    : [t.intervalSeconds, t.intervalNanoseconds, t.valueSeconds, t.valueNanoseconds]
                try mem.write(words: spec, to: scratch)
                try inj.call("timerfd_settime", .timerfd_settime, fd, UInt64(flags), scratch, 0)
            }
            if t.ticks > 0 {
                // TFD_IOC_SET_TICKS = _IOW('T', 0, u64): expirations not yet read (needs CONFIG_CHECKPOINT_RESTORE).
                try mem.write(words: [t.ticks], to: scratch)
                let r = try inj.raw(.ioctl, fd, 0x4008_5400, scratch)
                if r < 0 { warn("PID \(pid) fd \(f.fd): \(t.ticks) unread timerfd expirations are lost (TFD_IOC_SET_TICKS: \(String(cString: strerror(Int32(-r)))))") }
            }
            return fd
        case .signalfd:
            try mem.write(words: [f.signalMask ?? 0], to: scratch)
            return try inj.call("signalfd4", .signalfd4, UInt64.max, scratch, 8, flags)
        case .epoll:
            var fd = try inj.call("epoll_create1", .epoll_create1, 0)
            // The new instance takes the lowest free number, which may be the number an entry
            // is keyed by (its file now lives at another fd, or is lent to it below): moved
            // above every number the image uses first.
            let numbers = Set((f.epollTargets ?? []).flatMap { [$0.fd, $0.viaFD ?? $0.fd] })
            if numbers.contains(Int32(truncatingIfNeeded: fd)) {
                let top = UInt64(max(image.fds.map(\.fd).max() ?? 2, numbers.max() ?? 2)) + 1
                let moved = try inj.call("fcntl F_DUPFD epoll", .fcntl, fd, UInt64(F_DUPFD_CLOEXEC), top)
                try inj.call("close", .close, fd)
                fd = moved
            }
            for t in f.epollTargets ?? [] {
                try mem.write(Arch.epollEvent(events: t.events, data: t.data), to: scratch)
                guard let via = t.viaFD else {
                    try inj.call("epoll_ctl(ADD \(t.fd))", .epoll_ctl, fd, 1, UInt64(t.fd), scratch)
                    continue
                }
                // The entry's file under its old number: fd t is lent to it for the ADD (its
                // own file kept aside meanwhile), then given back.
                let aside = try inj.raw(.fcntl, UInt64(t.fd), UInt64(F_DUPFD_CLOEXEC), 3)
                try inj.call("dup3 \(via) to \(t.fd)", .dup3, UInt64(via), UInt64(t.fd), 0)
                try inj.call("epoll_ctl(ADD \(t.fd) of fd \(via))", .epoll_ctl, fd, 1, UInt64(t.fd), scratch)
                if aside >= 0 {
                    let cloexec = fdByNumber[t.fd]?.closeOnExec == true
                    try inj.call("dup3 back", .dup3, UInt64(aside), UInt64(t.fd), UInt64(cloexec ? O_CLOEXEC : 0))
                    try inj.call("close", .close, UInt64(aside))
                } else {
                    try inj.call("close", .close, UInt64(t.fd))
                }
            }
            try settleReportedEdges(epoll: fd, f)
            return fd
        default:
            throw SSIError(.corrupt, "fd \(f.fd) of PID \(pid) has kind \(f.kind), which is not an anonymous inode")
        }
    }
}

// Edge-triggered epoll entries (epoll(7), EPOLLET): an entry is reported when its file
// becomes ready, and not again until the next change. EPOLL_CTL_ADD of a file that is ready
// puts the entry on the new instance's ready list, so after a restart every ready ET entry
// was reported once more, though the program had had that edge (nginx, Go and libuv read
// until EAGAIN, but a program that counts on one report per edge does not). The ready list
// cannot be read, only taken: the dump runs epoll_wait in the process (timeout 0) for each
// instance with ET entries, which tells the entries on the list, and gives them back at once
// with EPOLL_CTL_MOD (which queues an entry whose file is ready, and arms a one-shot one
// again); then a poll(2) of the other ET entries' files tells those ready off the list: their
// edge was reported. Restart, after the ADDs, takes the whole list (epoll_wait) and MODs back
// every entry but those.
extension ProcessDumper {
    static let epollET: UInt32 = 1 << 31, epollExclusive: UInt32 = 1 << 28

    /// Marks `edgeReported` on the ET entries of this process's epoll instances whose edge
    /// was reported. An instance is left as it is when it cannot be told exactly: an entry
    /// under a reused number (viaFD), EPOLLEXCLUSIVE (refuses MOD), two entries with one data
    /// value, or an epoll set among its entries.
    func markReportedEdges(_ s: ScratchPage, fds: inout [FileDescriptorImage]) throws {
        let epollFDs = Set(fds.filter { $0.kind == .epoll }.map(\.fd))
        for i in fds.indices where fds[i].kind == .epoll {
            guard let targets = fds[i].epollTargets, targets.contains(where: { $0.events & Self.epollET != 0 }),
                  !targets.contains(where: { $0.viaFD != nil || $0.events & Self.epollExclusive != 0 || epollFDs.contains($0.fd) }),
                  Set(targets.map(\.data)).count == targets.count else { continue }
            let e = UInt64(fds[i].fd)
            let size = UInt64((targets.count + 1) * max(Arch.epollEventSize, 8) + 4095) / 4096 * 4096
            let area = try s.inj.call("mmap for epoll_wait", .mmap, 0, size, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0)
            defer { _ = try? s.inj.raw(.munmap, area, size) }
            let n = try s.inj.raw(.epoll_pwait, e, area, UInt64(targets.count + 1), 0, 0, 8)
            guard n >= 0 else { continue }
            let reported = n == 0 ? [] : Set(Arch.epollEventData(try s.mem.read(UInt8.self, count: Int(n) * Arch.epollEventSize, at: area), count: Int(n)))
            for t in targets where reported.contains(t.data) {
                try s.mem.write(Arch.epollEvent(events: t.events, data: t.data), to: area)
                let r = try s.inj.raw(.epoll_ctl, e, 3 /* EPOLL_CTL_MOD */, UInt64(t.fd), area)
                if r < 0 { warn("PID \(pid) fd \(fds[i].fd): epoll entry of fd \(t.fd) not queued again after the checkpoint read it: \(String(cString: strerror(Int32(-r))))") }
            }
            let off = targets.indices.filter { targets[$0].events & Self.epollET != 0 && !reported.contains(targets[$0].data) }
            guard !off.isEmpty else { continue }
            // struct pollfd { int fd; short events; short revents; }
            var polls = [UInt8]()
            for k in off {
                withUnsafeBytes(of: targets[k].fd.littleEndian) { polls += $0 }
                withUnsafeBytes(of: Int16(truncatingIfNeeded: targets[k].events & 0xffff).littleEndian) { polls += $0 }
                polls += [0, 0]
            }
            try s.mem.write(polls, to: area)
            guard try s.inj.raw(.poll, area, UInt64(off.count), 0) >= 0 else { continue }
            let back = try s.mem.read(UInt8.self, count: polls.count, at: area)
            for (j, k) in off.enumerated() {
                let revents = UInt32(UInt16(back[j * 8 + 6]) | UInt16(back[j * 8 + 7]) << 8)
                if revents & (targets[k].events | UInt32(POLLERR) | UInt32(POLLHUP)) & 0xffff != 0 { fds[i].epollTargets![k].edgeReported = true }
            }
        }
    }
}

extension ProcessRestorer {
    /// After an instance's ADDs: its ready list taken, and every entry but those whose edge
    /// was reported queued again (EPOLL_CTL_MOD queues an entry whose file is ready).
    func settleReportedEdges(epoll fd: UInt64, _ f: FileDescriptorImage) throws {
        let targets = f.epollTargets ?? []
        guard targets.contains(where: { $0.edgeReported == true }) else { return }
        let need = UInt64((targets.count + 1) * Arch.epollEventSize)
        guard need < scratchSize / 2 else { return }
        _ = try inj.raw(.epoll_pwait, fd, scratch, UInt64(targets.count + 1), 0, 0, 8)
        for t in targets where t.edgeReported != true && t.viaFD == nil {
            try mem.write(Arch.epollEvent(events: t.events, data: t.data), to: scratch)
            let r = try inj.raw(.epoll_ctl, fd, 3 /* EPOLL_CTL_MOD */, UInt64(t.fd), scratch)
            if r < 0 { warn("PID \(pid) fd \(f.fd): epoll entry of fd \(t.fd) not queued again: \(String(cString: strerror(Int32(-r))))") }
        }
    }
}
