import CSSILinux
import SSISystem

/// A system call, by name. Its number is the architecture's (Arch/Syscalls+<arch>.swift
/// defines every one the injection library and the engine use); outside that folder a
/// syscall is only ever named, so no number can be written by mistake for another
/// architecture, and `Syscall` has no public initialiser.
public struct Syscall: Hashable, Sendable, CustomStringConvertible {
    /// The number in the architecture's syscall table.
    let number: Int
    public let name: String

    init(_ number: Int, _ name: String) {
        self.number = number
        self.name = name
    }

    /// The syscall with this number, named if known.
    init(number: Int) { self = Syscall.known[number] ?? Syscall(number, "syscall \(number)") }

    private static let known: [Int: Syscall] = Dictionary(Syscall.all.map { ($0.number, $0) }, uniquingKeysWith: { a, _ in a })

    /// Makes this syscall in the calling process (not injected): its result, or -errno.
    public func callHere(_ a1: Int = 0, _ a2: Int = 0, _ a3: Int = 0, _ a4: Int = 0, _ a5: Int = 0, _ a6: Int = 0) -> Int {
        cssi_syscall6(number, a1, a2, a3, a4, a5, a6)
    }

    public static func == (a: Syscall, b: Syscall) -> Bool { a.number == b.number }
    public func hash(into h: inout Hasher) { h.combine(number) }
    public var description: String { name }
}

/// What /proc/TID/syscall shows of a task (proc(5)): the syscall it is blocked in with its
/// arguments, or nil when it runs or is not in a syscall.
public struct BlockedSyscall: Sendable {
    public var syscall: Syscall
    public var arguments: [UInt64]

    public static func of(_ tid: ProcessID) -> BlockedSyscall? {
        guard let text = try? ProcFS.read("/proc/\(tid)/syscall") else { return nil }
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let first = f.first, let nr = Int(first), nr >= 0 else { return nil }
        let args = f.dropFirst().prefix(6).map { UInt64($0.dropFirst(2), radix: 16) ?? 0 }
        return BlockedSyscall(syscall: Syscall(number: nr), arguments: Array(args))
    }
}
