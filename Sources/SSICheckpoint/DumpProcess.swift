import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

/// Reads the whole state of one stopped process (see docs/snapshot-format.md for what each
/// field means). The caller holds it in a ptrace stop; this type only reads, except for the
/// short syscalls it injects to learn what /proc does not show (sigactions, sigaltstack,
/// brk, clear_child_tid, pdeath signal), after which the registers are put back.
struct ProcessDumper {
    let pid: Int32
    var ignoreUnsupported = false
    /// The parent, when it is part of the application and stopped too: pages still shared
    /// copy-on-write with it are not saved again (see VMA.inherited).
    var parent: Int32? = nil
    /// The system's unix sockets (sock_diag), to recognise socketpairs.
    var unixSockets: [UInt32: UnixSocketInfo] = [:]
    /// 1 while describing a socket in flight in another (SCM_RIGHTS): no deeper nesting.
    var inFlightDepth = 0
    /// CLOCK_MONOTONIC (ns) when each task was seen stopped (SeizedApplication.stoppedAt).
    var stoppedAt: [Int32: Int64] = [:]

    // MARK: file descriptors (checked first: an unsupported fd fails before anything is written)

    func dumpFileDescriptors() throws -> [FileDescriptorImage] {
        var out = [FileDescriptorImage]()
        for fd in try openFDs(of: pid) {
            let link = try ProcFS.readLink("/proc/\(pid)/fd/\(fd)")
            let info = try FdInfo.read(pid: pid, fd: fd)
            let cloexec = info.flags & O_CLOEXEC != 0
            let flags = info.flags & ~O_CLOEXEC
            var st = stat()
            if stat("/proc/\(pid)/fd/\(fd)", &st) != 0 { throw SSIError.sys("stat fd \(fd) of PID \(pid) (\(link))", errno: errno) }
            let mode = st.st_mode & S_IFMT
            func unsupported(_ kind: String) throws {
                if ignoreUnsupported { return }
                throw SSIError(.unsupported, "PID \(pid) fd \(fd): \(kind) (\(link)) is not supported by the checkpoint engine yet; nothing was written and the application goes on",
                               hint: "close it before checkpointing, or use `ssi checkpoint -i` to restore it as a closed fd")
            }
            if link.hasPrefix("pipe:[") {
                let ino = UInt64(st.st_ino)
                var img = FileDescriptorImage(fd: fd, kind: .pipe, path: link, flags: flags, closeOnExec: cloexec, position: 0)
                img.pipeID = ino
                out.append(img)
                continue
            }
            if link.hasPrefix("socket:") {
                do {
                    out.append(try dumpSocket(fd: fd, inode: UInt32(truncatingIfNeeded: st.st_ino), link: link, flags: flags, cloexec: cloexec))
                } catch let u as UnsupportedSocket {
                    try unsupported(u.kind)
                }
                continue
            }
            if link == "anon_inode:inotify" {
                do { out.append(try inotify(fd: fd, link: link, flags: flags, cloexec: cloexec)) } catch let e as SSIError where e.kind == .unsupported && ignoreUnsupported {}
                continue
            }
            if link.hasPrefix("anon_inode:") {
                if let img = try anonInode(fd: fd, link: link, flags: flags, cloexec: cloexec, info: info) { out.append(img) } else {
                    try unsupported("\(link.dropFirst("anon_inode:".count)) file")
                }
                continue
            }
            // A terminal whose pty is gone reads "/dev/pts/N (deleted)": still a terminal, which
            // `restart -t` replaces by the caller's.
            if link.hasSuffix(" (deleted)") && mode == S_IFREG {
                // An unlinked file or a memfd: its content goes into the snapshot.
                var img = FileDescriptorImage(fd: fd, kind: .regular, path: String(link.dropLast(" (deleted)".count)), flags: flags,
                                              closeOnExec: cloexec, position: info.pos)
                img.size = Int64(st.st_size)
                img.deletedFileID = ProcessDumper.fileID(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
                out.append(img)
                continue
            }
            if link.hasSuffix(" (deleted)") && mode != S_IFCHR { try unsupported("unlinked special file"); continue }
            let path = link.hasSuffix(" (deleted)") ? String(link.dropLast(" (deleted)".count)) : link
            guard link.hasPrefix("/") else { try unsupported("special file"); continue }
            switch mode {
            case S_IFREG:
                var img = FileDescriptorImage(fd: fd, kind: .regular, path: link, flags: flags, closeOnExec: cloexec, position: info.pos)
                img.size = Int64(st.st_size)
                out.append(img)
            case S_IFDIR:
                out.append(FileDescriptorImage(fd: fd, kind: .directory, path: link, flags: flags, closeOnExec: cloexec, position: info.pos))
            case S_IFCHR:
                let major = (st.st_rdev >> 8) & 0xfff
                let minor = st.st_rdev & 0xff
                // Terminals: /dev/pts/N (136-143), virtual consoles (4), /dev/tty and /dev/console (5).
                let tty = (136...143).contains(major) || major == 4 || (major == 5 && minor <= 1)
                out.append(FileDescriptorImage(fd: fd, kind: tty ? .tty : .charDevice, path: path, flags: flags, closeOnExec: cloexec, position: info.pos))
            case S_IFIFO:
                out.append(fifo(fd: fd, path: path, flags: flags, cloexec: cloexec, st: st))
            default:
                try unsupported("block device or special file")
            }
        }
        return out
    }

    /// The id /proc/PID/maps would show for a file: "major:minor" in hex, then the inode
    /// (new_encode_dev layout of st_dev).
    static func fileID(dev: UInt64, ino: UInt64) -> String {
        let major = (dev >> 8) & 0xfff, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
        return String(format: "%02llx:%02llx:%llu", major, minor, ino)
    }

    /// Saves the content of every unlinked file or memfd the process uses (through an fd or
    /// a mapping), once per file; returns their descriptions.
    func dumpDeletedFiles(fds: [FileDescriptorImage], vmas: [VMA], writer: SnapshotWriter, done: inout Set<String>) throws -> [DeletedFile] {
        var out = [DeletedFile]()
        var sources = [(id: String, path: String, source: String)]()
        for f in fds { if let id = f.deletedFileID { sources.append((id, f.path, "/proc/\(pid)/fd/\(f.fd)")) } }
        for v in vmas {
            if let id = v.deletedFileID {
                sources.append((id, v.path ?? v.name, "/proc/\(pid)/map_files/\(String(v.start, radix: 16))-\(String(v.end, radix: 16))"))
            }
        }
        for (id, path, source) in sources where !done.contains(id) {
            done.insert(id)
            let fd = open(source, O_RDONLY | O_CLOEXEC)
            if fd < 0 { throw SSIError.sys("PID \(pid): open the unlinked file \(path) through \(source)", errno: errno) }
            defer { close(fd) }
            var st = stat()
            fstat(fd, &st)
            let name = "file-\(id.replacingOccurrences(of: ":", with: "-")).img"
            let stream = try writer.createStream(name)
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buf.deallocate() }
            while true {
                let n = read(fd, buf.baseAddress, buf.count)
                if n < 0 { if errno == EINTR { continue }; throw SSIError.sys("read \(source)", errno: errno) }
                if n == 0 { break }
                try stream.append(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            }
            writer.addFinished(try stream.finish(name: name, sync: false))
            out.append(DeletedFile(id: id, path: path, isMemfd: path.hasPrefix("/memfd:"), size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
                                   seals: FileSeals.get(fd), contentFile: name))
        }
        return out
    }

    /// eventfd, timerfd, signalfd and epoll: /proc/PID/fdinfo shows all their state
    /// (proc(5), "/proc/pid/fdinfo").
    func anonInode(fd: Int32, link: String, flags: Int32, cloexec: Bool, info: FdInfo) throws -> FileDescriptorImage? {
        var img = FileDescriptorImage(fd: fd, kind: .eventfd, path: link, flags: flags, closeOnExec: cloexec, position: 0)
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
        case "anon_inode:[signalfd]":
            img.kind = .signalfd
            img.signalMask = UInt64((info.lines["sigmask"] ?? "0").trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
        case "anon_inode:[eventpoll]":
            img.kind = .epoll
            // "tfd: N events: HEX data: HEX ...", one line per registered fd.
            var targets = [EpollTarget]()
            for line in try ProcFS.read("/proc/\(pid)/fdinfo/\(fd)").split(separator: "\n") where line.hasPrefix("tfd:") {
                let w = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard w.count >= 6, let t = Int32(w[1]), let ev = UInt32(w[3], radix: 16), let data = UInt64(w[5], radix: 16) else { continue }
                targets.append(EpollTarget(fd: t, events: ev, data: data))
            }
            img.epollTargets = targets
        default:
            return nil
        }
        return img
    }

    /// Pipes are restored whole when both ends are inside the application (any of its
    /// processes); their bytes are read without consuming them: tee(2) duplicates a pipe's
    /// content into another pipe.
    static func completePipes(_ tables: inout [Int32: [FileDescriptorImage]], ignoreUnsupported: Bool) throws {
        var ends = [UInt64: [(pid: Int32, fd: Int32, write: Bool)]]()
        for (pid, fds) in tables { for f in fds where f.kind == .pipe { ends[f.pipeID!, default: []].append((pid, f.fd, f.flags & O_ACCMODE == O_WRONLY)) } }
        for (ino, list) in ends {
            guard let reader = list.first(where: { !$0.write }), list.contains(where: { $0.write }) else {
                if ignoreUnsupported {
                    for pid in tables.keys { tables[pid]!.removeAll { $0.pipeID == ino } }
                    continue
                }
                let e = list[0]
                throw SSIError(.unsupported, "PID \(e.pid) fd \(e.fd): pipe whose other end is outside the application is not supported yet; nothing was written",
                               hint: "checkpoint the whole pipeline as one application (ssi run -- sh -c '...'), or use -i")
            }
            let (data, size) = try ProcessDumper(pid: reader.pid).peekPipe(fd: reader.fd)
            for pid in tables.keys {
                for i in tables[pid]!.indices where tables[pid]![i].pipeID == ino {
                    tables[pid]![i].pipeData = data
                    tables[pid]![i].pipeSize = size
                }
            }
        }
    }

    /// Marks fds that share one open file description, within a process (dup) or across
    /// processes (fork), by comparing them with kcmp(2) KCMP_FILE among fds of the same inode.
    static func markSharedDescriptions(_ tables: inout [Int32: [FileDescriptorImage]]) {
        struct Member { var pid: Int32; var index: Int; var fd: Int32 }
        var byInode = [String: [Member]]()
        for (pid, fds) in tables {
            for (i, f) in fds.enumerated() where f.kind != .pipe && f.kind != .unixSocket && f.kind != .tcpSocket {
                var st = stat()
                guard stat("/proc/\(pid)/fd/\(f.fd)", &st) == 0 else { continue }
                byInode["\(st.st_dev):\(st.st_ino)", default: []].append(Member(pid: pid, index: i, fd: f.fd))
            }
        }
        for (_, members) in byInode where members.count > 1 {
            var reps = [(rep: Member, members: [Member])]()
            for m in members.sorted(by: { ($0.pid, $0.fd) < ($1.pid, $1.fd) }) {
                // kcmp(2): 0 when both fds refer to the same open file description.
                if let k = reps.firstIndex(where: { Kcmp.compare(ProcessID($0.rep.pid), ProcessID(m.pid), .file, UInt($0.rep.fd), UInt(m.fd)) == 0 }) {
                    reps[k].members.append(m)
                } else {
                    reps.append((m, [m]))
                }
            }
            for group in reps where group.members.count > 1 {
                let id = "\(group.rep.pid):\(group.rep.fd)"
                for m in group.members { tables[m.pid]![m.index].sharedID = id }
            }
        }
    }

    func peekPipe(fd: Int32) throws -> (Data, Int32) {
        // Opening /proc/PID/fd/N of a pipe opens the same pipe (fifo_open).
        let src = open("/proc/\(pid)/fd/\(fd)", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if src < 0 { throw SSIError.sys("open pipe fd \(fd) of PID \(pid)", errno: errno) }
        defer { close(src) }
        let size = Pipe.capacity(src)
        let p = try Pipe.create(flags: O_CLOEXEC | O_NONBLOCK)
        defer { close(p.read); close(p.write) }
        Pipe.setCapacity(p.write, max(size, 65536))
        var data = Data()
        let n = Pipe.tee(from: src, to: p.write, count: Int(size))
        if n > 0 {
            var buf = [UInt8](repeating: 0, count: Int(n))
            let r = read(p.read, &buf, Int(n))
            if r != n { throw SSIError(.system, "short read while copying the pipe of PID \(pid) fd \(fd)") }
            data = Data(buf)
        } else if n < 0 && n != -Int(EAGAIN) {
            throw SSIError.sys("tee from pipe fd \(fd) of PID \(pid)", errno: Int32(-n))
        }
        return (data, size)
    }

    // MARK: state that needs injected syscalls

    struct InjectedState {
        struct PerThread {
            var altStack = AltStack()
            var clearChildTID: UInt64 = 0
        }
        var sigactions: [SigAction] = []
        var brk: UInt64 = 0
        var parentDeathSignal: Int32 = 0
        var dumpable: Int32 = 1
        var childSubreaper = false
        var intervalTimers: [IntervalTimer] = []
        var posixTimers: [PosixTimer] = []
        var threads: [PerThread] = []
    }

    /// Runs the syscalls that read what /proc does not show, in the process (main thread)
    /// and in each of its threads for per-thread state; every task's registers and signal
    /// mask are put back afterwards.
    func dumpInjected(saved: Registers, status: ProcStatus, threads tids: [Int32]) throws -> InjectedState {
        var st = InjectedState()
        let main = Tracee.adoptTraceMe(ProcessID(pid))
        let inj = try Injector(pid: ProcessID(pid), base: saved)
        let guardMain = try SignalMaskGuard(tracee: main, saved: saved)
        defer { guardMain.restore() }
        let scratch = try inj.call("mmap scratch page", .mmap, 0, 4096, UInt64(PROT_READ | PROT_WRITE), UInt64(MAP_PRIVATE | MAP_ANONYMOUS), UInt64.max, 0)
        defer { _ = try? inj.raw(.munmap, scratch, 4096) }
        let mem = RemoteMemory(pid: ProcessID(pid))
        let interesting = status.hexMask("SigCgt") | status.hexMask("SigIgn")
        for sig in Int32(1)...64 where interesting & (1 << UInt64(sig - 1)) != 0 {
            try inj.call("rt_sigaction(\(sig))", .rt_sigaction, UInt64(sig), 0, scratch, 8)
            let b = try mem.readBytes(at: scratch, count: 32)
            let w = b.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
            st.sigactions.append(SigAction(signal: sig, handler: w[0], flags: w[1], restorer: w[2], mask: w[3]))
        }
        st.brk = try inj.call("brk(0)", .brk, 0)
        try inj.prctl(.getParentDeathSignal, scratch)
        st.parentDeathSignal = try mem.readBytes(at: scratch, count: 4).withUnsafeBytes { $0.load(as: Int32.self) }
        st.dumpable = Int32(truncatingIfNeeded: try inj.prctl(.getDumpable))
        try inj.prctl(.getChildSubreaper, scratch)
        st.childSubreaper = try mem.readBytes(at: scratch, count: 4).withUnsafeBytes { $0.load(as: Int32.self) } != 0
        // Timers: remaining time and interval, as getitimer/timer_gettime report them.
        for which in Int32(0)...2 {
            try inj.call("getitimer(\(which))", .getitimer, UInt64(which), scratch)
            let v = try mem.readBytes(at: scratch, count: 32).withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
            if v[2] != 0 || v[3] != 0 { st.intervalTimers.append(IntervalTimer(which: which, interval: [v[0], v[1]], value: [v[2], v[3]])) }
        }
        for var timer in ProcessDumper.parseTimers((try? ProcFS.read("/proc/\(pid)/timers")) ?? "") {
            try inj.call("timer_gettime(\(timer.id))", .timer_gettime, UInt64(timer.id), scratch)
            let v = try mem.readBytes(at: scratch, count: 32).withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
            timer.interval = [v[0], v[1]]
            timer.value = [v[2], v[3]]
            st.posixTimers.append(timer)
        }
        for tid in tids {
            var t = InjectedState.PerThread()
            let tracee = Tracee.adoptTraceMe(ProcessID(tid))
            let regs = tid == pid ? saved : try tracee.registers()
            let tinj = tid == pid ? inj : Injector(pid: ProcessID(tid), base: regs, gadget: inj.gadget)
            let g = tid == pid ? nil : try SignalMaskGuard(tracee: tracee, saved: regs)
            defer { g?.restore() }
            try tinj.call("sigaltstack", .sigaltstack, 0, scratch)
            let ss = try mem.readBytes(at: scratch, count: 24).withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
            t.altStack.sp = ss[0]; t.altStack.flags = Int32(truncatingIfNeeded: ss[1]); t.altStack.size = ss[2]
            // PR_GET_TID_ADDRESS needs CONFIG_CHECKPOINT_RESTORE; without it the value stays 0.
            if (try? tinj.prctl(.getTidAddress, scratch)) != nil {
                t.clearChildTID = try mem.readBytes(at: scratch, count: 8).withUnsafeBytes { $0.load(as: UInt64.self) }
            }
            st.threads.append(t)
        }
        return st
    }

    /// /proc/PID/timers (proc(5)): "ID:", "signal: SIG/VALUE", "notify: KIND/pid.N", "ClockID:".
    static func parseTimers(_ text: String) -> [PosixTimer] {
        var out = [PosixTimer]()
        var cur: PosixTimer? = nil
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "ID":
                if let c = cur { out.append(c) }
                cur = PosixTimer(id: Int32(parts[1]) ?? 0, clockID: 0, signal: 0, sigevValue: 0, notify: 0, notifyTID: 0, interval: [0, 0], value: [0, 0])
            case "signal":
                let sv = parts[1].split(separator: "/")
                cur?.signal = Int32(sv.first ?? "0") ?? 0
                cur?.sigevValue = UInt64(sv.count > 1 ? String(sv[1]) : "0", radix: 16) ?? 0
            case "notify":
                let kind = parts[1].split(separator: "/").first ?? ""
                cur?.notify = kind == "none" ? 1 : (kind == "thread" ? 4 : 0)
                cur?.notifyTID = Int32(parts[1].split(separator: ".").last ?? "0") ?? 0
            case "ClockID":
                cur?.clockID = Int32(parts[1]) ?? 0
            default:
                break
            }
        }
        if let c = cur { out.append(c) }
        return out
    }

    // MARK: memory

    static func classify(_ m: MapsEntry) -> VMA.Kind? {
        switch m.name {
        case "[vdso]": return .vdso
        case "[vvar]": return .vvar
        case "[vvar_vclock]": return .vvarVclock
        case "[vsyscall]": return nil
        default:
            if m.name.hasPrefix("/SYSV") { return .sysvShm }
            if m.inode == 0 || m.name == "/dev/zero (deleted)" || m.name.hasPrefix("[anon_shmem") { return .anonymous }
            return .file
        }
    }

    /// Reads /proc/PID/smaps only for the VmFlags lines (the one place they are shown).
    func vmFlags() throws -> [UInt64: [String]] {
        var out = [UInt64: [String]]()
        var current: UInt64 = 0
        let keep: Set<Substring> = ["gd", "dc", "dd", "hg", "nh", "wf"]
        for line in try ProcFS.read("/proc/\(pid)/smaps").split(separator: "\n") {
            if line.hasPrefix("VmFlags:") {
                out[current] = line.dropFirst(8).split(separator: " ").filter { keep.contains($0) }.map(String.init)
            } else if let dash = line.firstIndex(of: "-"), let start = UInt64(line[..<dash], radix: 16), line.first?.isHexDigit == true,
                      line.split(separator: " ").count >= 5 {
                current = start
            }
        }
        return out
    }

    /// Writes the present pages of every VMA to `pages` and returns the VMA list.
    func dumpMemory(to pages: StreamFile) throws -> [VMA] {
        let maps = MapsEntry.parse(try ProcFS.read("/proc/\(pid)/maps"))
        let flags = try vmFlags()
        let pm = open("/proc/\(pid)/pagemap", O_RDONLY | O_CLOEXEC)
        if pm < 0 { throw SSIError.sys("open /proc/\(pid)/pagemap", errno: errno) }
        defer { close(pm) }
        let mem = RemoteMemory(pid: ProcessID(pid))
        let memFD = open("/proc/\(pid)/mem", O_RDONLY | O_CLOEXEC)
        if memFD < 0 { throw SSIError.sys("open /proc/\(pid)/mem", errno: errno) }
        defer { close(memFD) }
        let bufSize = 8 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: bufSize, alignment: 4096)
        defer { buf.deallocate() }
        var vmas = [VMA]()
        // The parent's areas, to find those inherited at fork and still identical.
        var parentMaps = [UInt64: MapsEntry]()
        var parentFlags = [UInt64: [String]]()
        var ppm: Int32 = -1
        if let parent {
            for e in MapsEntry.parse((try? ProcFS.read("/proc/\(parent)/maps")) ?? "") { parentMaps[e.start] = e }
            parentFlags = (try? ProcessDumper(pid: parent).vmFlags()) ?? [:]
            ppm = open("/proc/\(parent)/pagemap", O_RDONLY | O_CLOEXEC)
        }
        defer { if ppm >= 0 { close(ppm) } }
        for m in maps {
            guard let kind = ProcessDumper.classify(m) else { continue }
            var path: String? = nil
            var deletedID: String? = nil
            if kind == .file {
                if m.name.hasSuffix(" (deleted)") {
                    deletedID = "\(m.device):\(m.inode)"
                    path = String(m.name.dropLast(" (deleted)".count))
                } else {
                    path = m.name
                }
            }
            var vma = VMA(start: m.start, end: m.end, read: m.read, write: m.write, exec: m.exec, shared: m.shared, kind: kind,
                          name: m.name, path: path, fileOffset: m.offset, vmFlags: flags[m.start] ?? [])
            if kind == .sysvShm { vma.sysvShmID = Int32(truncatingIfNeeded: m.inode) }
            vma.deletedFileID = deletedID
            // What must be saved: anonymous memory (private or shared) that is present or
            // swapped; for private file mappings only pages the process changed (COW copies,
            // which pagemap shows as not file-backed); shared file mappings live in their file.
            let wantsPages: Bool
            switch kind {
            case .anonymous: wantsPages = true
            case .file: wantsPages = !m.shared
            default: wantsPages = false
            }
            if wantsPages {
                var runs: [(UInt64, UInt64)]
                // An area the parent has identically (same range, protection, file, offset and
                // flags, none of MADV_DONTFORK/WIPEONFORK) was inherited at fork.
                if ppm >= 0, let pe = parentMaps[m.start], pe == m, kind != .sysvShm, !m.shared || kind == .anonymous,
                   parentFlags[m.start] == flags[m.start], !(flags[m.start] ?? []).contains(where: { $0 == "dc" || $0 == "wf" }) {
                    // A shared anonymous area with the parent's very inode (MapsEntry compares
                    // it: the shmem object behind /dev/zero) is one object with the parent's:
                    // kept from the fork at restart, with no page of its own.
                    let (own, drop) = m.shared ? ([], []) : try inheritedRuns(pagemap: pm, parentPagemap: ppm, vma: m, fileBacked: kind == .file)
                    runs = own
                    vma.inherited = true
                    vma.dropPages = drop.map { PageRun(address: $0.0, count: $0.1, fileOffset: 0) }
                } else {
                    runs = try presentRuns(pagemap: pm, vma: m, fileBacked: kind == .file)
                }
                var batch = [(UInt64, Int)]()
                var batchBytes = 0
                func flush() throws {
                    guard batchBytes > 0 else { return }
                    let b = UnsafeMutableRawBufferPointer(rebasing: buf[0..<batchBytes])
                    // Through /proc/PID/mem, not process_vm_readv: the latter pins pages
                    // (FOLL_PIN), and since Linux 5.19 pinning an anonymous page shared
                    // copy-on-write unshares it (mm/gup.c, gup_must_unshare), so a checkpoint
                    // would copy every page a parent shares with its children.
                    var off = 0
                    for (a, l) in batch { try mem.forcedRead(into: UnsafeMutableRawBufferPointer(rebasing: buf[off..<(off + l)]), at: a, fd: memFD); off += l }
                    try pages.append(UnsafeRawBufferPointer(b))
                    batch.removeAll(keepingCapacity: true)
                    batchBytes = 0
                }
                for (addr, count) in runs {
                    vma.pages.append(PageRun(address: addr, count: count, fileOffset: pages.size + UInt64(batchBytes)))
                    var a = addr
                    var left = Int(count * SnapshotFormat.pageSize)
                    while left > 0 {
                        let take = min(left, bufSize - batchBytes)
                        batch.append((a, take))
                        batchBytes += take
                        a += UInt64(take)
                        left -= take
                        if batchBytes == bufSize { try flush() }
                    }
                }
                try flush()
            }
            vmas.append(vma)
        }
        return vmas
    }

    /// For an area inherited from the parent: the runs of this process's own pages (to save),
    /// and the runs where the parent has a page of its own and this process has none (to
    /// drop at restart). A page present in both with the same page frame (pagemap bits 0-54,
    /// shown to CAP_SYS_ADMIN) is still shared copy-on-write: neither saved nor dropped.
    func inheritedRuns(pagemap: Int32, parentPagemap: Int32, vma: MapsEntry, fileBacked: Bool) throws -> ([(UInt64, UInt64)], [(UInt64, UInt64)]) {
        let n = Int(vma.size / SnapshotFormat.pageSize)
        func entries(_ fd: Int32) throws -> [UInt64] {
            var e = [UInt64](repeating: 0, count: n)
            let got = e.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n * 8, off_t((vma.start / SnapshotFormat.pageSize) * 8)) }
            if got != n * 8 { throw SSIError.sys("read pagemap of the tree of PID \(pid)", errno: errno) }
            return e
        }
        let c = try entries(pagemap), p = try entries(parentPagemap)
        let pfnMask: UInt64 = (1 << 55) - 1
        func own(_ e: UInt64) -> Bool {
            let present = e & (1 << 63) != 0, swapped = e & (1 << 62) != 0, file = e & (1 << 61) != 0
            return fileBacked ? ((present && !file) || swapped) : (present || swapped)
        }
        var save = [Bool](repeating: false, count: n), drop = [Bool](repeating: false, count: n)
        for i in 0..<n {
            let sharedFrame = c[i] & (1 << 63) != 0 && p[i] & (1 << 63) != 0 && c[i] & pfnMask == p[i] & pfnMask && c[i] & pfnMask != 0
            save[i] = own(c[i]) && !sharedFrame
            drop[i] = own(p[i]) && !own(c[i])
        }
        func runs(_ flags: [Bool]) -> [(UInt64, UInt64)] {
            var out = [(UInt64, UInt64)]()
            var start = -1
            for i in 0...n {
                let on = i < n && flags[i]
                if on && start < 0 { start = i }
                if !on && start >= 0 { out.append((vma.start + UInt64(start) * SnapshotFormat.pageSize, UInt64(i - start))); start = -1 }
            }
            return out
        }
        return (runs(save), runs(drop))
    }

    /// Runs of pages to save in one VMA, from /proc/PID/pagemap (bit 63 present, 62 swapped,
    /// 61 file-page or shared-anonymous: Documentation/admin-guide/mm/pagemap.rst).
    func presentRuns(pagemap: Int32, vma: MapsEntry, fileBacked: Bool) throws -> [(UInt64, UInt64)] {
        let n = Int(vma.size / SnapshotFormat.pageSize)
        var entries = [UInt64](repeating: 0, count: n)
        let want = n * 8
        let got = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, want, off_t((vma.start / SnapshotFormat.pageSize) * 8)) }
        if got != want { throw SSIError.sys("read /proc/\(pid)/pagemap", errno: errno) }
        var runs = [(UInt64, UInt64)]()
        var runStart = -1
        for i in 0...n {
            var keep = false
            if i < n {
                let e = entries[i]
                let present = e & (1 << 63) != 0, swapped = e & (1 << 62) != 0, file = e & (1 << 61) != 0
                keep = fileBacked ? ((present && !file) || swapped) : (present || swapped)
            }
            if keep && runStart < 0 { runStart = i }
            if !keep && runStart >= 0 {
                runs.append((vma.start + UInt64(runStart) * SnapshotFormat.pageSize, UInt64(i - runStart)))
                runStart = -1
            }
        }
        return runs
    }
}
