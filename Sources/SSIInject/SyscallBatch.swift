import Foundation
import SSISystem

/// Many independent syscalls run in a stopped tracee with one resume instead of one each.
///
/// Each injected syscall costs a ptrace round trip (set registers, single step, wait, read
/// registers: about 25 us); a dump asks 62 signal dispositions per process and a restore
/// sets them again, with dozens of mmaps besides, all while the application is frozen. A
/// batch writes a small loop (Arch.batchLoop) and a table of calls into an executable area
/// of the tracee, resumes it once with PTRACE_CONT, and takes the SIGTRAP of the loop's
/// final `int3`; the results are in the table.
///
/// The calls must not depend on each other's results (each gets its arguments from the
/// table as written). Falls back to one call at a time when the tracee's injected calls run
/// between syscall stops (a SIGTRAP handler, blocked or pending SIGTRAP: the int3's forced
/// SIGTRAP would change them, as a single step's would, see Injector.useSyscallStops), when
/// not every signal is blocked (a signal delivered while the loop runs would be taken by the
/// stop and lost), and when SSI_NO_BATCH=1 (to compare).
public struct SyscallBatch {
    public struct Call {
        public var syscall: Syscall
        public var args: [UInt64]
        public init(_ syscall: Syscall, _ args: UInt64...) { (self.syscall, self.args) = (syscall, args) }
        public init(_ syscall: Syscall, args: [UInt64]) { (self.syscall, self.args) = (syscall, args) }
    }

    static let disabled = ProcessInfo.processInfo.environment["SSI_NO_BATCH"] == "1"

    /// Bytes of the area taken by the loop before the table.
    static let codeBytes = 64
    static var entryBytes: Int { Arch.batchEntryWords * 8 }

    /// How many calls fit in an area of `size` bytes.
    public static func capacity(_ size: Int) -> Int { max(0, (size - codeBytes) / entryBytes) }

    /// Runs `calls` in the tracee of `inj` and returns their raw results (negative errno on
    /// failure), in order. `area` is `size` bytes of the tracee mapped readable, writable and
    /// executable, unused by the calls themselves (nil: none could be mapped, one call at a
    /// time); the tracee's registers are left changed (the caller puts them back, as for
    /// every injected call).
    public static func run(_ calls: [Call], with inj: Injector, area: UInt64?, size: Int) throws -> [Int64] {
        guard !calls.isEmpty else { return [] }
        guard let area else { return try calls.map { try inj.rawArgs($0.syscall, $0.args) } }
        let perRound = capacity(size)
        guard perRound > 0 else { throw SSIError(.system, "the batch area of PID \(inj.pid) is too small (\(size) bytes)") }
        let tracee = Tracee.adoptTraceMe(inj.pid)
        let allBlocked = ((try? tracee.sigmask()) ?? 0) | Self.unblockable == ~UInt64(0)
        if disabled || calls.count < 3 || !allBlocked || Injector.usesSyscallStops(inj.pid) {
            return try calls.map { try inj.rawArgs($0.syscall, $0.args) }
        }
        var results: [Int64] = []
        results.reserveCapacity(calls.count)
        var start = 0
        while start < calls.count {
            let part = calls[start..<min(calls.count, start + perRound)]
            results += try runRound(Array(part), inj: inj, tracee: tracee, area: area)
            start += part.count
        }
        if Injector.trace {
            for (c, r) in zip(calls, results) {
                let hex = c.args.map { "0x" + String($0, radix: 16) }.joined(separator: ", ")
                FileHandle.standardError.write(Data("ssi: [\(inj.pid)] \(c.syscall)(\(hex)) = \(r) (batch)\n".utf8))
            }
        }
        return results
    }

    /// SIGKILL and SIGSTOP: never blocked, whatever the mask says (sigprocmask(2)); and
    /// SIGTRAP, which the forced SIGTRAP of an earlier single step unblocked
    /// (force_sig_info_to_task) and whose only source here is our own int3 or single step
    /// (a process with a SIGTRAP of its own runs its calls between syscall stops instead).
    static let unblockable: UInt64 = (1 << 8) | (1 << 18) | (1 << 4)

    private static func runRound(_ calls: [Call], inj: Injector, tracee: Tracee, area: UInt64) throws -> [Int64] {
        let words = Arch.batchEntryWords
        var image = [UInt8](repeating: 0, count: codeBytes + calls.count * entryBytes)
        image.replaceSubrange(0..<Arch.batchLoop.count, with: Arch.batchLoop)
        var table = [UInt64](repeating: 0, count: calls.count * words)
        for (i, c) in calls.enumerated() {
            table[i * words] = UInt64(c.syscall.number)
            for (k, a) in c.args.prefix(6).enumerated() { table[i * words + 1 + k] = a }
        }
        table.withUnsafeBytes { image.replaceSubrange(codeBytes..<image.count, with: $0) }
        let mem = RemoteMemory(pid: inj.pid)
        try image.withUnsafeBytes { try mem.write($0, to: area) }
        let tableAddress = area + UInt64(codeBytes)
        try tracee.setRegisters(inj.base.preparedForBatch(code: area, table: tableAddress, count: calls.count))
        try Injector.resumeUntilTrap(tracee, doing: "a batch of \(calls.count) syscalls (\(calls[0].syscall)...)") { try tracee.cont() }
        // The loop stops at its int3 only after the last entry: anywhere else, a result
        // would be missing.
        let ip = try tracee.registers().instructionPointer
        guard ip == area + UInt64(Arch.batchLoop.count) else {
            throw SSIError(.system, "PID \(inj.pid) stopped at 0x\(String(ip, radix: 16)) in its batch of syscalls, not at its end")
        }
        var out = [UInt64](repeating: 0, count: calls.count * words)
        try out.withUnsafeMutableBytes { _ = try mem.read(into: $0, from: [(tableAddress, $0.count)]) }
        return (0..<calls.count).map { Int64(bitPattern: out[$0 * words + words - 1]) }
    }
}
