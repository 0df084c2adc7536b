#if canImport(Glibc)
import Glibc
#endif

/// Readers for /proc/PID files (proc(5)). Reads are plain open/read/close: /proc files are
/// generated on read, so they are read whole, once.
public enum ProcFS {
    /// Reads a whole file as bytes. Throws .notFound / .system naming the path.
    public static func readBytes(_ path: String) throws -> [UInt8] {
        let fd = Int32(try checkLibc("open \(path)") { Int(open(path, O_RDONLY | O_CLOEXEC)) })
        defer { close(fd) }
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try checkLibc("read \(path)") { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }

    public static func read(_ path: String) throws -> String {
        String(decoding: try readBytes(path), as: UTF8.self)
    }

    /// The parent's PID of `pid`: field 4 of /proc/PID/stat, after the command name in
    /// parentheses (which may itself hold spaces and parentheses: proc(5)); nil if gone.
    public static func parentPID(_ pid: Int32) -> Int32? {
        guard let s = try? read("/proc/\(pid)/stat"), let close = s.lastIndex(of: ")") else { return nil }
        let f = s[s.index(after: close)...].split(separator: " ")
        return f.count > 1 ? Int32(f[1]) : nil
    }

    public static func readLink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = try checkLibc("readlink \(path)") { readlink(path, &buf, buf.count - 1) }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Writes a small string to a /proc or /sys file.
    public static func write(_ path: String, _ text: String) throws {
        let fd = Int32(try checkLibc("open \(path)") { Int(open(path, O_WRONLY | O_CLOEXEC)) })
        defer { close(fd) }
        let bytes = Array(text.utf8)
        try checkLibc("write \(path)") { bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
    }
}

/// One line of /proc/PID/maps.
public struct MapsEntry: Sendable, Equatable {
    public var start: UInt64
    public var end: UInt64
    public var read: Bool, write: Bool, exec: Bool, shared: Bool
    public var offset: UInt64
    public var device: String
    public var inode: UInt64
    /// The path or pseudo name ([heap], [stack], [vdso], "/SYSV00000000 (deleted)"), or "".
    public var name: String

    public var size: UInt64 { end - start }
    public var isSpecialKernelMapping: Bool {
        name == "[vdso]" || name == "[vvar]" || name == "[vvar_vclock]" || name == "[vsyscall]"
    }

    public static func parse(_ text: String) -> [MapsEntry] {
        var text = text
        return text.withUTF8 { parse($0) }
    }

    /// Parsed on the bytes (a Character-wise split of the text cost more than the rest of a
    /// small process's memory dump; perf). "start-end perms offset dev inode [name]"; the
    /// name may contain spaces, and is the rest of the line after the padding.
    public static func parse(_ b: UnsafeBufferPointer<UInt8>) -> [MapsEntry] {
        var out = [MapsEntry]()
        ProcText.lines(b) { i, end in
            var p = i
            guard let s = ProcText.hex(b, &p, end), p < end, b[p] == UInt8(ascii: "-") else { return }
            p += 1
            guard let e = ProcText.hex(b, &p, end), p + 5 < end, b[p] == 32 else { return }
            p += 1
            let perms = (b[p], b[p + 1], b[p + 2], b[p + 3])
            p += 4
            ProcText.skipSpaces(b, &p, end)
            guard let offset = ProcText.hex(b, &p, end) else { return }
            ProcText.skipSpaces(b, &p, end)
            let devStart = p
            while p < end && b[p] != 32 { p += 1 }
            let device = String(decoding: UnsafeBufferPointer(rebasing: b[devStart..<p]), as: UTF8.self)
            ProcText.skipSpaces(b, &p, end)
            guard let inode = ProcText.decimal(b, &p, end) else { return }
            ProcText.skipSpaces(b, &p, end)
            let name = p < end ? String(decoding: UnsafeBufferPointer(rebasing: b[p..<end]), as: UTF8.self) : ""
            out.append(MapsEntry(start: s, end: e, read: perms.0 == UInt8(ascii: "r"), write: perms.1 == UInt8(ascii: "w"),
                                 exec: perms.2 == UInt8(ascii: "x"), shared: perms.3 == UInt8(ascii: "s"),
                                 offset: offset, device: device, inode: inode, name: name))
        }
        return out
    }
}

/// Byte-level reading of /proc text: numbers and fields without making Strings.
public enum ProcText {
    /// Calls `body` with the bounds of each line, its newline left out.
    @inline(__always)
    public static func lines(_ b: UnsafeBufferPointer<UInt8>, _ body: (_ start: Int, _ end: Int) -> Void) {
        var i = 0
        while i < b.count {
            var end = i
            while end < b.count && b[end] != 10 { end += 1 }
            body(i, end)
            i = end + 1
        }
    }

    /// Hex digits from `p` (at least one); `p` ends after them.
    @inline(__always)
    public static func hex(_ b: UnsafeBufferPointer<UInt8>, _ p: inout Int, _ end: Int) -> UInt64? {
        var v: UInt64 = 0
        let start = p
        while p < end {
            let c = b[p]
            let d: UInt8
            switch c {
            case 48...57: d = c - 48
            case 97...102: d = c - 87
            case 65...70: d = c - 55
            default: return p > start ? v : nil
            }
            v = v << 4 | UInt64(d)
            p += 1
        }
        return p > start ? v : nil
    }

    /// A decimal number from `p` (at least one digit; a sign is the caller's).
    @inline(__always)
    public static func decimal(_ b: UnsafeBufferPointer<UInt8>, _ p: inout Int, _ end: Int) -> UInt64? {
        var v: UInt64 = 0
        let start = p
        while p < end, b[p] >= 48, b[p] <= 57 {
            v = v &* 10 &+ UInt64(b[p] - 48)
            p += 1
        }
        return p > start ? v : nil
    }

    @inline(__always)
    public static func skipSpaces(_ b: UnsafeBufferPointer<UInt8>, _ p: inout Int, _ end: Int) {
        while p < end && b[p] == 32 { p += 1 }
    }
}

/// The fields of /proc/PID/stat that the engine uses (proc(5) numbers them from 1).
public struct ProcStat: Sendable {
    public var pid: Int32
    public var comm: String
    public var state: Character
    public var ppid: Int32, pgid: Int32, sid: Int32, ttyNr: Int32
    public var flags: UInt64
    public var startTime: UInt64
    public var startCode: UInt64, endCode: UInt64, startStack: UInt64
    public var startData: UInt64, endData: UInt64, startBrk: UInt64
    public var argStart: UInt64, argEnd: UInt64, envStart: UInt64, envEnd: UInt64
    public var exitSignal: Int32

    /// PF_KTHREAD from include/linux/sched.h.
    public var isKernelThread: Bool { flags & 0x0020_0000 != 0 }

    public static func read(pid: Int32) throws -> ProcStat {
        let text: String
        do { text = try ProcFS.read("/proc/\(pid)/stat") } catch {
            throw SSIError(.notFound, "no process with PID \(pid)", hint: "check the PID with ps; an application's id is the PID of its root process")
        }
        return try parse(text, pid: pid)
    }

    public static func parse(_ text: String, pid: Int32) throws -> ProcStat {
        var text = text
        return try text.withUTF8 { b -> ProcStat in
            // comm is in parentheses and may itself contain ") "; the last ')' ends it.
            guard let open = b.firstIndex(of: UInt8(ascii: "(")), let close = b.lastIndex(of: UInt8(ascii: ")")), open < close, close + 2 < b.count else {
                throw SSIError(.corrupt, "cannot parse /proc/\(pid)/stat")
            }
            let comm = String(decoding: UnsafeBufferPointer(rebasing: b[(open + 1)..<close]), as: UTF8.self)
            // The fields after it, by number (proc(5) numbers them from 1; field 3 is the
            // state), read on the bytes: making a String of each of 50 fields cost more than
            // reading the file.
            var f = [Int64](repeating: 0, count: 53)
            var p = close + 2
            let end = b.count
            let state = Character(Unicode.Scalar(b[p]))
            var n = 3
            while p < end && b[p] != 32 { p += 1 }
            while p < end && n < 52 {
                p += 1
                n += 1
                let negative = p < end && b[p] == UInt8(ascii: "-")
                if negative { p += 1 }
                let v = ProcText.decimal(b, &p, end) ?? 0
                f[n] = negative ? -Int64(truncatingIfNeeded: v) : Int64(truncatingIfNeeded: v)
                while p < end && b[p] != 32 && b[p] != 10 { p += 1 }
                if p < end && b[p] == 10 { break }
            }
            guard n >= 52 else { throw SSIError(.corrupt, "short /proc/\(pid)/stat") }
            func u(_ k: Int) -> UInt64 { UInt64(bitPattern: f[k]) }
            func i(_ k: Int) -> Int32 { Int32(truncatingIfNeeded: f[k]) }
            return ProcStat(pid: pid, comm: comm, state: state, ppid: i(4), pgid: i(5), sid: i(6), ttyNr: i(7),
                            flags: u(9), startTime: u(22), startCode: u(26), endCode: u(27), startStack: u(28),
                            startData: u(45), endData: u(46), startBrk: u(47), argStart: u(48), argEnd: u(49),
                            envStart: u(50), envEnd: u(51), exitSignal: i(38))
        }
    }
}

/// "Key:\tvalue" lines of /proc/PID/status.
public struct ProcStatus: Sendable {
    public var fields: [String: String]

    public static func read(pid: Int32) throws -> ProcStatus {
        parse(try ProcFS.read("/proc/\(pid)/status"))
    }

    public static func parse(_ text: String) -> ProcStatus {
        var text = text
        return text.withUTF8 { b in
            // On the bytes: "Key:<spaces or tabs>value" per line (a Character-wise split
            // and Foundation's trimming cost more than reading the file).
            var d = [String: String](minimumCapacity: 64)
            ProcText.lines(b) { i, end in
                var c = i
                while c < end && b[c] != UInt8(ascii: ":") { c += 1 }
                guard c < end else { return }
                var v = c + 1
                while v < end && (b[v] == 32 || b[v] == 9) { v += 1 }
                var e = end
                while e > v && (b[e - 1] == 32 || b[e - 1] == 9) { e -= 1 }
                d[String(decoding: UnsafeBufferPointer(rebasing: b[i..<c]), as: UTF8.self)] = String(decoding: UnsafeBufferPointer(rebasing: b[v..<e]), as: UTF8.self)
            }
            return ProcStatus(fields: d)
        }
    }

    public func ints(_ key: String) -> [Int64] {
        (fields[key] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int64($0) }
    }

    public func hexMask(_ key: String) -> UInt64 { UInt64(fields[key] ?? "0", radix: 16) ?? 0 }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = self[...]
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

/// /proc/PID/fdinfo/N: pos, flags (octal), mnt_id and type-specific lines.
public struct FdInfo: Sendable {
    public var pos: Int64
    public var flags: Int32
    public var lines: [String: String]

    public static func read(pid: Int32, fd: Int32) throws -> FdInfo {
        let st = ProcStatus.parse(try ProcFS.read("/proc/\(pid)/fdinfo/\(fd)"))
        return FdInfo(pos: Int64(st.fields["pos"] ?? "0") ?? 0, flags: Int32(st.fields["flags"] ?? "0", radix: 8) ?? 0,
                      lines: st.fields)
    }
}

/// The numeric names in a directory (/proc, /proc/PID/task, /proc/PID/fd), sorted; nil
/// if it cannot be opened (errno says why).
public func numericEntries(of path: String) -> [Int32]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var out = [Int32]()
    while let e = readdir(dir) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if let t = Int32(name) { out.append(t) }
    }
    return out.sorted()
}

/// A process and all its descendants, parents first, from the children lists of every thread
/// (/proc/PID/task/TID/children, proc(5), Linux 3.5); at most `limit` processes.
public func processTree(_ root: Int32, limit: Int = 100_000) -> [Int32] {
    var out: [Int32] = [], todo = [root], seen = Set<Int32>(), next = 0
    while next < todo.count, out.count < limit {
        let p = todo[next]
        next += 1
        guard seen.insert(p).inserted else { continue }
        out.append(p)
        for t in numericEntries(of: "/proc/\(p)/task") ?? [] {
            let kids = (try? ProcFS.read("/proc/\(p)/task/\(t)/children")) ?? ""
            todo += kids.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
    }
    return out
}

/// The PIDs of the threads of a process (/proc/PID/task).
public func threadIDs(of pid: Int32) throws -> [Int32] {
    guard let tids = numericEntries(of: "/proc/\(pid)/task") else {
        throw SSIError(.notFound, "no process with PID \(pid)", hint: "check the PID with ps")
    }
    return tids
}

/// The open file descriptor numbers of a process (/proc/PID/fd).
public func openFDs(of pid: Int32) throws -> [Int32] {
    guard let fds = numericEntries(of: "/proc/\(pid)/fd") else {
        throw SSIError.sys("open /proc/\(pid)/fd", errno: Glibc.errno)
    }
    return fds
}
