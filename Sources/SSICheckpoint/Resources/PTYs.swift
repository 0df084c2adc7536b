import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// Pseudo-terminal pairs inside the application (pty(7)): a master (/dev/ptmx) held by the
// application, its slave /dev/pts/N. The checkpoint saves the pair's index, the slave's
// termios and window size, the master's lock and packet mode, and the bytes queued each way,
// read through ssi's own slave fd and a copy of the master and written back at once. Restart
// opens /dev/ptmx until it gets the same index (a new master takes the lowest free one),
// sets everything again before any process exists, hands the master to the processes that
// held it (the same description), reopens the slave by name for the others, and makes it the
// controlling terminal of its session (TIOCSCTTY, before the leader forks) with its
// foreground group (TIOCSPGRP, once every group exists).

enum PTYs {
    static func slavePath(_ n: Int32) -> String { "/dev/pts/\(n)" }

    /// `t` with echo, signals, extended and input/output translations off, canonical mode
    /// as it is: bytes written to the master then land in the slave's queue as they were
    /// (a full line stays a line, a partial one partial), and bytes written to the slave
    /// reach the master untouched (ioctl_tty(2), termios(3)).
    static func quiet(_ t: [UInt8]) -> [UInt8] {
        var q = t
        Terminal.setFlag(&q, Terminal.lflagOffset, Terminal.flag(t, Terminal.lflagOffset)
                         & ~(Terminal.ECHO | Terminal.ECHOE | Terminal.ECHOK | Terminal.ECHONL | Terminal.ECHOCTL | Terminal.ECHOKE | Terminal.ISIG | Terminal.IEXTEN))
        Terminal.setFlag(&q, Terminal.iflagOffset, Terminal.flag(t, Terminal.iflagOffset) & ~Terminal.inputTranslations)
        Terminal.setFlag(&q, Terminal.oflagOffset, Terminal.flag(t, Terminal.oflagOffset) & ~Terminal.OPOST)
        return q
    }

    /// Queues `toSlave` (as if typed) and `toMaster` (as if output) on the pair, then gives
    /// the slave its settings `t` (TCSETS neither drains nor flushes).
    /// Stopped output is started for the bytes written to the slave, and stopped again after
    /// (`stopped`).
    static func refill(master m: Int32, slave s: Int32, termios t: [UInt8], toSlave: Data, toMaster: Data, eofs: [Int]? = nil,
                       stopped: Int32? = nil) -> Bool {
        guard Terminal.setAttributes(s, quiet(t)) else { return false }
        if stopped != nil { Terminal.startOutput(s) }
        // Typed into the slave's queue by TIOCSTI, taken at once under the quiet settings.
        // Written to the master, they were taken later (flush_to_ldisc, a work queue),
        // often once the settings were back: echoed to the master a second time, and an
        // EOF mark turned into ^@. Each EOF mark is the terminal's VEOF again, which
        // canonical mode (kept by quiet) makes a mark. The master's way if TIOCSTI is refused.
        let veof = t[Terminal.ccOffset + Terminal.veof]
        var typed = Data()
        var from = 0
        for at in (eofs ?? []) where at >= from && at <= toSlave.count {
            typed += toSlave[toSlave.startIndex + from..<toSlave.startIndex + at]
            typed.append(veof)
            from = at
        }
        typed += toSlave[toSlave.startIndex + from..<toSlave.endIndex]
        let taken = Terminal.simulateInput(s, typed)
        let ok = (taken == typed.count || Terminal.writeAll(m, typed.dropFirst(taken))) && Terminal.writeAll(s, toMaster)
        Terminal.setAttributes(s, t)
        if let how = stopped { Terminal.stopOutput(slave: s, master: m, termios: t, how: how) }
        return ok
    }

    /// The pair of master `m` (a copy of the application's fd): its state and queued bytes,
    /// put back before returning.
    static func save(master m: Int32, index: Int32, who: String) throws -> PTYImage {
        // A master not unlocked yet (posix_openpt(3) without unlockpt(3)): its slave opens
        // with EIO until it is. Unlocked for ssi's open, locked again after.
        let wasLocked = (Terminal.intValue(m, Terminal.getPTYLock) ?? 0) != 0
        if wasLocked { Terminal.setIntValue(m, Terminal.setPTYLock, 0) }
        let s = open(slavePath(index), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        if wasLocked { Terminal.setIntValue(m, Terminal.setPTYLock, 1) }
        guard s >= 0 else { throw SSIError.sys("\(who): open the slave \(slavePath(index)) of its pseudo-terminal", errno: errno) }
        defer { close(s) }
        guard let t = Terminal.attributes(s) else { throw SSIError.sys("\(who): TCGETS on \(slavePath(index))", errno: errno) }
        var img = PTYImage(index: index, termios: Data(t))
        if let w = Terminal.windowSize(s) { (img.rows, img.columns, img.xPixels, img.yPixels) = (w[0], w[1], w[2], w[3]) }
        img.locked = wasLocked
        // Before anything changes it: leaving IXON off (quiet) would start stopped output.
        var stopped: Int32? = Terminal.outputStopped(slave: s, master: m) ? 1 : nil
        img.packetMode = (Terminal.intValue(m, Terminal.getPacket) ?? 0) != 0
        if (Terminal.intValue(s, Terminal.getExclusive) ?? 0) != 0 { img.exclusive = true }
        // Everything queued for the slave, a partial line included: non-canonical with VMIN
        // 0 makes every byte readable at once (leaving canonical mode ends the line editing,
        // n_tty_set_termios).
        // In canonical mode, the complete lines first, read one by one, which tells where
        // an EOF mark stood (read raw, a mark is a 0 byte like a typed NUL).
        if Terminal.flag(t, Terminal.lflagOffset) & Terminal.ICANON != 0, Terminal.setAttributes(s, quiet(t)) {
            // NL and VEOL end a line, VEOL2 with IEXTEN; unset (0), they make NUL one
            // (n_tty_receive_char_canon compares with the value as it is).
            let cc = { (i: Int) in t[Terminal.ccOffset + i] }
            let extended = Terminal.flag(t, Terminal.lflagOffset) & Terminal.IEXTEN != 0
            let ends = Set([UInt8(ascii: "\n"), cc(Terminal.veol)] + (extended ? [cc(Terminal.veol2)] : []))
            let lines = Terminal.readLines(s, lineEnds: ends)
            img.toSlave = lines.bytes
            img.toSlaveEOFs = lines.eofs.isEmpty ? nil : lines.eofs
        }
        var raw = quiet(t)
        Terminal.setFlag(&raw, Terminal.lflagOffset, Terminal.flag(raw, Terminal.lflagOffset) & ~Terminal.ICANON)
        raw[Terminal.ccOffset + Terminal.vmin] = 0
        raw[Terminal.ccOffset + Terminal.vtime] = 0
        guard Terminal.setAttributes(s, raw) else { throw SSIError.sys("\(who): TCSETS on \(slavePath(index))", errno: errno) }
        // IXON now off: output stopped by the STOP character runs again (n_tty_set_termios);
        // stopped by TCOOFF it stays so.
        if stopped != nil, Terminal.outputStopped(slave: s, master: m) { stopped = 2 }
        img.outputStop = stopped
        img.toSlave += Terminal.drain(s)
        Terminal.setAttributes(s, t)
        // Everything queued for the master, through the application's own description: made
        // non-blocking for the read, packet mode off (it would add a status byte per read),
        // then both as they were.
        let fl = fcntl(m, F_GETFL)
        _ = fcntl(m, F_SETFL, fl | O_NONBLOCK)
        if img.packetMode { Terminal.setIntValue(m, Terminal.packet, 0) }
        img.toMaster = Terminal.drain(m)
        if img.packetMode { Terminal.setIntValue(m, Terminal.packet, 1) }
        _ = fcntl(m, F_SETFL, fl)
        guard refill(master: m, slave: s, termios: t, toSlave: img.toSlave, toMaster: img.toMaster, eofs: img.toSlaveEOFs, stopped: stopped) else {
            throw SSIError.sys("\(who): writing back the \(img.toSlave.count) + \(img.toMaster.count) bytes queued on \(slavePath(index))", errno: errno)
        }
        return img
    }

    /// The index of the slave device `dev` (st_rdev or /proc/PID/stat tty_nr) when it is a
    /// Unix 98 pty slave (major 136: devpts numbers them by minor, up to 2^20).
    static func slaveIndex(_ dev: UInt64) -> Int32? {
        let major = (dev >> 8) & 0xfff, minor = (dev & 0xff) | ((dev >> 12) & 0xfff00)
        return (136...143).contains(major) ? Int32((major - 136) * 256 + minor) : nil
    }
}

extension ProcessDumper {
    func ptyMaster(fd: Int32, flags: Int32, cloexec: Bool) throws -> FileDescriptorImage {
        let m = try fdCopy(fd: fd)
        defer { close(m) }
        guard let index = Terminal.intValue(m, Terminal.getPTYNumber) else { throw SSIError.sys("PID \(pid) fd \(fd): TIOCGPTN on /dev/ptmx", errno: errno) }
        var img = FileDescriptorImage(fd: fd, kind: .ptyMaster, path: "/dev/ptmx", flags: flags, closeOnExec: cloexec, position: 0)
        img.pty = try PTYs.save(master: m, index: index, who: "PID \(pid) fd \(fd)")
        return img
    }

    /// Slave fds of pairs whose master is in the application, and each process's controlling
    /// terminal when it is one of them (/proc/PID/stat tty_nr, and tpgid for a leader).
    static func completePTYs(_ tables: inout [Int32: [FileDescriptorImage]]) -> Set<Int32> {
        let masters = Set(tables.values.flatMap { $0 }.compactMap { $0.kind == .ptyMaster ? $0.pty?.index : nil })
        guard !masters.isEmpty else { return [] }
        for (pid, fds) in tables {
            for (i, f) in fds.enumerated() where f.kind == .tty && f.path.hasPrefix("/dev/pts/") {
                if let n = Int32(f.path.dropFirst("/dev/pts/".count)), masters.contains(n) { tables[pid]![i].ptyIndex = n }
            }
        }
        return masters
    }

    /// The controlling terminal and foreground group of `pid`, when the terminal is the
    /// slave of one of `masters`.
    static func controllingPTY(_ pid: Int32, masters: Set<Int32>) -> (index: Int32, foreground: Int32)? {
        guard !masters.isEmpty, let text = try? ProcFS.read("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let f = text[text.index(after: close)...].split(separator: " ")
        // After the command: state, ppid, pgrp, session, tty_nr, tpgid (proc_pid_stat(5)).
        guard f.count > 5, let tty = Int64(f[4]), let tpgid = Int32(f[5]), let n = PTYs.slaveIndex(UInt64(UInt32(truncatingIfNeeded: tty))), masters.contains(n) else { return nil }
        return (n, tpgid)
    }
}

/// The pairs a restart makes again, held by ssi until every process has its fds.
final class PTYRegistry {
    /// By the index the snapshot saved.
    private(set) var masters: [Int32: Int32] = [:]
    private var slaves: [Int32] = []
    /// Saved index -> the index the pair has now, where it differs (`create`, anyIndex).
    private(set) var renumbered: [Int32: Int32] = [:]

    /// The index pair `n` of the snapshot has now.
    func current(_ n: Int32) -> Int32 { renumbered[n] ?? n }

    /// The slave's path for a saved one: /dev/pts/N of a renumbered pair gives its new name.
    func path(_ f: FileDescriptorImage) -> String {
        guard let n = f.ptyIndex, let now = renumbered[n] else { return f.path }
        return PTYs.slavePath(now)
    }

    /// Makes every pair again. With `anyIndex` (a migration's takeover: the source copy,
    /// frozen on this machine or holding the index on its own, has the same index in use,
    /// and on another machine someone else may), a pair whose index is taken gets the lowest
    /// free one: the processes' fds, controlling terminal and foreground group follow it,
    /// and only a name the program kept (ttyname(3) read before) is the old one.
    func create(from images: [ProcessImage], anyIndex: Bool = false) throws {
        for image in images {
            for f in image.fds where f.kind == .ptyMaster {
                guard let p = f.pty, masters[p.index] == nil else { continue }
                let who = "PID \(image.pid) fd \(f.fd)"
                let (m, n) = try openMaster(index: p.index, who: who, anyIndex: anyIndex)
                masters[p.index] = m
                if n != p.index {
                    renumbered[p.index] = n
                    warn("\(who): /dev/pts/\(p.index) is in use here: the pseudo-terminal pair is /dev/pts/\(n) now")
                }
                guard Terminal.setIntValue(m, Terminal.setPTYLock, 0) else { throw SSIError.sys("\(who): unlock /dev/pts/\(n)", errno: errno) }
                let s = open(PTYs.slavePath(n), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
                guard s >= 0 else { throw SSIError.sys("\(who): open \(PTYs.slavePath(n))", errno: errno) }
                slaves.append(s)
                Terminal.setWindowSize(s, [p.rows, p.columns, p.xPixels, p.yPixels])
                guard PTYs.refill(master: m, slave: s, termios: [UInt8](p.termios), toSlave: p.toSlave, toMaster: p.toMaster, eofs: p.toSlaveEOFs,
                                  stopped: p.outputStop) else {
                    throw SSIError.sys("\(who): settings or queued bytes of \(PTYs.slavePath(n))", errno: errno)
                }
                if p.packetMode { Terminal.setIntValue(m, Terminal.packet, 1) }
                if p.locked { Terminal.setIntValue(m, Terminal.setPTYLock, 1) }
                // The restore opens the slave as root (credentials come last), which
                // exclusive mode lets through.
                if p.exclusive == true { _ = ioctl(s, Terminal.setExclusive) }
            }
        }
    }

    /// A master whose slave is /dev/pts/`index`, and that index: /dev/ptmx gives the lowest
    /// free index, so lower free ones are held meanwhile; an index in use fails the restart,
    /// named, or with `anyIndex` the pair takes the next free one.
    private func openMaster(index: Int32, who: String, anyIndex: Bool) throws -> (Int32, Int32) {
        var held = [Int32]()
        defer { for fd in held { close(fd) } }
        while true {
            let m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
            guard m >= 0 else { throw SSIError.sys("\(who): open /dev/ptmx for /dev/pts/\(index)", errno: errno) }
            guard let n = Terminal.intValue(m, Terminal.getPTYNumber) else { close(m); throw SSIError.sys("\(who): TIOCGPTN", errno: errno) }
            if n == index { return (m, n) }
            if n > index {
                // The lowest free index, as a new pair would get: the first one held (the
                // others are let go by the defer), or this one.
                if anyIndex {
                    guard !held.isEmpty else { return (m, n) }
                    close(m)
                    let first = held.removeFirst()
                    return (first, Terminal.intValue(first, Terminal.getPTYNumber) ?? n)
                }
                close(m)
                throw SSIError(.busy, "\(who): the pseudo-terminal /dev/pts/\(index) it had is in use here; nothing was restarted",
                               hint: "end the program that holds /dev/pts/\(index) (fuser /dev/pts/\(index)), then restart again")
            }
            held.append(m)
            if held.count > 4096 { throw SSIError(.busy, "\(who): no /dev/pts/\(index) after 4096 new pseudo-terminals") }
        }
    }

    func closeAll() {
        for fd in masters.values { close(fd) }
        for fd in slaves { close(fd) }
        masters = [:]
        slaves = []
    }
}

extension ProcessRestorer {
    /// The pair's master, ssi's description (shared by every process that held it), with
    /// the fd's status flags.
    func takePTYMaster(_ f: FileDescriptorImage) throws -> UInt64 {
        guard let n = f.pty?.index, let mine = ptys?.masters[n] else { throw SSIError(.corrupt, "PID \(image.pid) fd \(f.fd): pseudo-terminal master without its pair") }
        let fd = try FDTransfer.take(mine, inj: inj, ssiPidFD: ssiPidFD, what: "pseudo-terminal master of fd \(f.fd)")
        try inj.call("fcntl F_SETFL", .fcntl, fd, UInt64(F_SETFL), UInt64(f.flags & ~O_ACCMODE))
        return fd
    }

    /// A session leader whose controlling terminal was a pair's slave takes it again
    /// (TIOCSCTTY, ioctl_tty(2)), before it forks the session's other processes, which
    /// inherit it.
    func restoreControllingTerminal() throws {
        guard let saved = image.controllingPTY, image.sid == image.pid else { return }
        let n = ptys?.current(saved) ?? saved
        let fd = try openRaw(PTYs.slavePath(n), flags: O_RDWR | O_NOCTTY)
        if fd < 0 { throw SSIError.sys("PID \(pid): open \(PTYs.slavePath(n)), its controlling terminal", errno: Int32(-fd)) }
        let r = try inj.raw(.ioctl, UInt64(fd), UInt64(Terminal.setControlling), 0)
        _ = try inj.raw(.close, UInt64(fd))
        if r < 0 { throw SSIError.sys("PID \(pid): TIOCSCTTY \(PTYs.slavePath(n))", errno: Int32(-r)) }
    }

    /// Its foreground process group (TIOCSPGRP), once every group exists; run in the
    /// session leader, whose signals are all blocked (no SIGTTOU).
    func restoreForegroundGroup() throws {
        guard let saved = image.controllingPTY, let fg = image.foregroundGroup, fg > 0, image.sid == image.pid else { return }
        let n = ptys?.current(saved) ?? saved
        let fd = try openRaw(PTYs.slavePath(n), flags: O_RDWR | O_NOCTTY)
        if fd < 0 { throw SSIError.sys("PID \(pid): open \(PTYs.slavePath(n))", errno: Int32(-fd)) }
        try mem.write(words: [UInt64(UInt32(bitPattern: fg))], to: scratch + 2048)
        let r = try inj.raw(.ioctl, UInt64(fd), UInt64(Terminal.setForeground), scratch + 2048)
        _ = try inj.raw(.close, UInt64(fd))
        if r < 0 { warn("PID \(pid): foreground group \(fg) of \(PTYs.slavePath(n)) not restored: \(String(cString: strerror(Int32(-r))))") }
    }
}

extension ProcessRestorer {
    /// A hung-up terminal fd: the slave of a new pair of ssi's, given to the process, whose
    /// master ssi then closes (pty(7): the slave is hung up, as the program's was).
    func hungUpTerminal(_ f: FileDescriptorImage) throws -> UInt64 {
        let who = "PID \(image.pid) fd \(f.fd)"
        let m = Glibc.open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard m >= 0 else { throw SSIError.sys("\(who): open /dev/ptmx for its hung-up terminal", errno: errno) }
        defer { close(m) }
        Terminal.setIntValue(m, Terminal.setPTYLock, 0)
        guard let n = Terminal.intValue(m, Terminal.getPTYNumber) else { throw SSIError.sys("\(who): TIOCGPTN", errno: errno) }
        let s = Glibc.open(PTYs.slavePath(n), O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard s >= 0 else { throw SSIError.sys("\(who): open \(PTYs.slavePath(n)) for its hung-up terminal", errno: errno) }
        defer { close(s) }
        let fd = try FDTransfer.take(s, inj: inj, ssiPidFD: ssiPidFD, what: "hung-up terminal fd \(f.fd)")
        warn("\(who): its terminal \(f.path) was gone when it was checkpointed (hung up: the session that ran it had ended); it is restored hung up, reads giving end of file and writes EIO; `ssi restart -t` gives it this terminal instead")
        try inj.call("fcntl F_SETFL fd \(f.fd)", .fcntl, fd, UInt64(F_SETFL), UInt64(f.flags & (O_NONBLOCK | O_APPEND)))
        return fd
    }
}
