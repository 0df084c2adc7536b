import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Terminal ioctls (ioctl_tty(2), pty(7)) on the kernel's own struct termios (TCGETS: 36
/// bytes, c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[19]), not glibc's larger one.
/// The numbers are asm-generic/ioctls.h's, which x86_64 and arm64 share.
public enum Terminal {
    public static let getAttributes: UInt = 0x5401       // TCGETS
    public static let setAttributes: UInt = 0x5402       // TCSETS (no drain, no flush)
    public static let setControlling: UInt = 0x540E      // TIOCSCTTY
    public static let setForeground: UInt = 0x5410       // TIOCSPGRP
    public static let getWindowSize: UInt = 0x5413       // TIOCGWINSZ
    public static let setWindowSize: UInt = 0x5414       // TIOCSWINSZ
    public static let packet: UInt = 0x5420              // TIOCPKT
    public static let getPTYNumber: UInt = 0x8004_5430   // TIOCGPTN
    public static let setPTYLock: UInt = 0x4004_5431     // TIOCSPTLCK
    public static let getPacket: UInt = 0x8004_5438      // TIOCGPKT
    public static let getPTYLock: UInt = 0x8004_5439     // TIOCGPTLCK
    public static let setExclusive: UInt = 0x540C        // TIOCEXCL
    public static let getExclusive: UInt = 0x8004_5440   // TIOCGEXCL

    /// Offsets and bits of the kernel termios (asm-generic/termbits.h).
    public static let iflagOffset = 0, oflagOffset = 4, lflagOffset = 12, ccOffset = 17
    public static let veof = 4, vtime = 5, vmin = 6, veol = 11, veol2 = 16
    public static let ISIG: UInt32 = 0x1, ICANON: UInt32 = 0x2, ECHO: UInt32 = 0x8, ECHOE: UInt32 = 0x10, ECHOK: UInt32 = 0x20
    public static let ECHONL: UInt32 = 0x40, ECHOCTL: UInt32 = 0x200, ECHOKE: UInt32 = 0x800, IEXTEN: UInt32 = 0x8000
    public static let inputTranslations: UInt32 = 0x8 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400   // PARMRK ISTRIP INLCR IGNCR ICRNL IUCLC IXON
    public static let OPOST: UInt32 = 0x1

    public static func attributes(_ fd: Int32) -> [UInt8]? {
        var buf = [UInt8](repeating: 0, count: 64)
        let r = buf.withUnsafeMutableBytes { ioctl(fd, getAttributes, $0.baseAddress!) }
        return r == 0 ? Array(buf[0..<36]) : nil
    }

    @discardableResult
    public static func setAttributes(_ fd: Int32, _ t: [UInt8]) -> Bool {
        var buf = t + [UInt8](repeating: 0, count: max(0, 64 - t.count))
        return buf.withUnsafeMutableBytes { ioctl(fd, setAttributes, $0.baseAddress!) } == 0
    }

    public static func flag(_ t: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(t[offset]) | UInt32(t[offset + 1]) << 8 | UInt32(t[offset + 2]) << 16 | UInt32(t[offset + 3]) << 24
    }

    public static func setFlag(_ t: inout [UInt8], _ offset: Int, _ v: UInt32) {
        for i in 0..<4 { t[offset + i] = UInt8((v >> (8 * UInt32(i))) & 0xff) }
    }

    /// An int-valued ioctl that fills an int (TIOCGPTN, TIOCGPTLCK, TIOCGPKT).
    public static func intValue(_ fd: Int32, _ request: UInt) -> Int32? {
        var v: Int32 = 0
        return ioctl(fd, request, &v) == 0 ? v : nil
    }

    /// An ioctl that takes a pointer to an int (TIOCSPTLCK, TIOCPKT, TIOCSPGRP).
    @discardableResult
    public static func setIntValue(_ fd: Int32, _ request: UInt, _ value: Int32) -> Bool {
        var v = value
        return ioctl(fd, request, &v) == 0
    }

    /// rows, columns, x pixels, y pixels.
    public static func windowSize(_ fd: Int32) -> [UInt16]? {
        var w = [UInt16](repeating: 0, count: 4)
        return w.withUnsafeMutableBytes { ioctl(fd, getWindowSize, $0.baseAddress!) } == 0 ? w : nil
    }

    @discardableResult
    public static func setWindowSize(_ fd: Int32, _ w: [UInt16]) -> Bool {
        var v = w
        return v.withUnsafeMutableBytes { ioctl(fd, setWindowSize, $0.baseAddress!) } == 0
    }

    public static let simulateInput: UInt = 0x5412       // TIOCSTI

    /// Puts `bytes` in the input queue of terminal `fd` as if typed, one TIOCSTI each
    /// (ioctl_tty(2); CAP_SYS_ADMIN for a terminal other than the caller's own): the line
    /// discipline takes each at once, under the settings the terminal has now. Bytes
    /// written to a pty master are taken later, from a work queue (flush_to_ldisc), maybe
    /// under settings changed meanwhile. Returns how many were taken (all, or up to the
    /// first refused).
    public static func simulateInput(_ fd: Int32, _ bytes: Data) -> Int {
        var n = 0
        for b in bytes {
            var c = b
            if ioctl(fd, simulateInput, &c) != 0 { break }
            n += 1
        }
        return n
    }

    /// The lines of a terminal in canonical mode (`fd` non-blocking) read one by one: the
    /// bytes, and where in them an end-of-file mark stood. A canonical read ends at a line
    /// end (NL, EOL, EOL2, kept in the bytes) or at an EOF mark (not returned: then the
    /// read returns what came before it, 0 bytes at a line's start). `lineEnds`: the
    /// terminal's NL, VEOL and VEOL2. Stops at the partial line being typed (EAGAIN).
    public static func readLines(_ fd: Int32, lineEnds: Set<UInt8>) -> (bytes: Data, eofs: [Int]) {
        var out = Data(), eofs = [Int]()
        var buf = [UInt8](repeating: 0, count: 65536)
        // A hung-up terminal reads 0 for good: bounded by the queue's size (4 KiB).
        for _ in 0..<8192 {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { break }
            // A hung-up terminal reads 0 for good, with POLLHUP: not a mark.
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if n == 0, poll(&p, 1, 0) == 1, p.revents & Int16(POLLHUP) != 0 { break }
            out.append(contentsOf: buf[0..<n])
            if n == 0 || !lineEnds.contains(buf[n - 1]) { eofs.append(out.count) }
        }
        return (out, eofs)
    }

    /// Reads what is queued on `fd` without waiting (the fd must be O_NONBLOCK).
    public static func drain(_ fd: Int32) -> Data {
        var out = Data()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// Writes all of `data` (the fd may be non-blocking: a pty's buffers hold 4 KiB and more).
    /// Gives up (errno EAGAIN) after two seconds without progress: a terminal whose output is
    /// stopped never takes a byte (a checkpoint hung there).
    public static func writeAll(_ fd: Int32, _ data: Data) -> Bool {
        var off = 0, waited = 0
        while off < data.count {
            let n = data.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 && errno == EAGAIN {
                waited += 1
                if waited > 2000 { errno = EAGAIN; return false }
                usleep(1000)
                continue
            }
            if n <= 0 { return false }
            off += n
            waited = 0
        }
        return true
    }

    public static let flowControl: UInt = 0x540A          // TCXONC
    public static let IXON: UInt32 = 0x400
    public static let vstop = 9                            // c_cc[VSTOP]

    /// Whether the output of the terminal whose slave is `s` and master `m` is stopped (^S
    /// with IXON, or tcflow(3) TCOOFF): a pty slave then has no room to write (pty_write_room
    /// is 0, so poll gives no POLLOUT). A master whose queue is full looks the same, and is
    /// told apart by its queue: a stopped terminal's is not full.
    public static func outputStopped(slave s: Int32, master m: Int32) -> Bool {
        var p = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, 0) == 0 || p.revents & Int16(POLLOUT) == 0 else { return false }
        let queued = intValue(m, 0x541B /* FIONREAD */) ?? 0
        return queued < 4000
    }

    /// Starts the output of slave `s` again (TCXONC TCOON; also after TCOOFF, which a change
    /// of IXON does not undo).
    public static func startOutput(_ s: Int32) { _ = ioctl(s, flowControl, 1) }

    /// Stops it as the program or its user had (`how`: 1 the STOP character, typed on the
    /// master as ^S is, when IXON is on; 2 tcflow(3) TCOOFF, which the kernel marks apart:
    /// ^Q does not undo it).
    public static func stopOutput(slave s: Int32, master m: Int32, termios t: [UInt8], how: Int32) {
        if how == 1, flag(t, iflagOffset) & IXON != 0, t.count > ccOffset + vstop, t[ccOffset + vstop] != 0 {
            var c = t[ccOffset + vstop]
            if write(m, &c, 1) == 1 { return }
        }
        _ = ioctl(s, flowControl, 0)
    }
}
