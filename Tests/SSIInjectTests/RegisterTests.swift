import CSSILinux
@testable import SSIInject
import SSISystem
import Testing

/// The architecture's register file: its named form in snapshots, the C struct ptrace
/// takes, and the roles the rest of SwiftSSI uses instead of register names.
@Suite("registers of this architecture")
struct RegisterTests {
    /// Every register a distinct value.
    static let named: [String: UInt64] = Dictionary(uniqueKeysWithValues: Registers.names.enumerated().map {
        ($0.element, 0x0101_0101_0101_0101 &* UInt64($0.offset + 1))
    })

    @Test("named form -> registers -> C struct -> named form is the identity, in the struct's order")
    func packing() throws {
        let r = try Registers(named: RegisterTests.named)
        #expect(r.named == RegisterTests.named)
        // The C struct holds the values in the order of the kernel's struct, which `names` lists.
        var raw = r.raw
        let words = withUnsafeBytes(of: &raw) { Array($0.bindMemory(to: UInt64.self)) }
        #expect(words.count == Registers.names.count && MemoryLayout<Registers.Raw>.size == Registers.names.count * 8)
        #expect(words == Registers.names.map { RegisterTests.named[$0]! })
        #expect(Registers(raw: raw).named == RegisterTests.named)
    }

    @Test("a snapshot missing a register is refused as corrupt, naming the register")
    func missingRegister() {
        var d = RegisterTests.named
        let gone = Registers.names[Registers.names.count / 2]
        d[gone] = nil
        do {
            _ = try Registers(named: d)
            Issue.record("registers without \(gone) were accepted")
        } catch let e as SSIError {
            #expect(e.kind == .corrupt && e.message.contains(gone))
        } catch { Issue.record("\(error)") }
    }

    @Test("roles: a syscall placed in the registers, its result and arguments")
    func roles() throws {
        let base = try Registers(named: RegisterTests.named)
        let r = base.preparedForSyscall(.mmap, [1, 2, 3, 4, 5, 6], at: 0x7000)
        #expect(r.instructionPointer == 0x7000 && r.arguments == [1, 2, 3, 4, 5, 6])
        #expect(r.syscall == nil, "a prepared syscall is not one the task is inside")
        #expect(r.named.filter { !["rax", "orig_rax", "rip", "rdi", "rsi", "rdx", "r10", "r8", "r9"].contains($0.key) }
                == base.named.filter { !["rax", "orig_rax", "rip", "rdi", "rsi", "rdx", "r10", "r8", "r9"].contains($0.key) })
        var short = base
        short.arguments = [9]
        #expect(short.arguments == [9, 0, 0, 0, 0, 0])
        var inside = RegisterTests.named
        inside["orig_rax"] = UInt64(Syscall.nanosleep.number)
        #expect(try Registers(named: inside).syscall == .nanosleep && Syscall(number: Syscall.nanosleep.number).name == "nanosleep")
    }

    @Test("restart rule: ERESTART_RESTARTBLOCK becomes ERESTARTNOHAND; other states are kept")
    func restartRule() throws {
        var d = RegisterTests.named
        d["orig_rax"] = UInt64(Syscall.nanosleep.number)
        d["rax"] = UInt64(bitPattern: -516)
        let resumed = SyscallRestart.registersForResume(try Registers(named: d))
        #expect(resumed.returnValue == -514)
        d["rax"] = UInt64(bitPattern: -512)
        #expect(SyscallRestart.registersForResume(try Registers(named: d)).returnValue == -512)
        d["orig_rax"] = UInt64.max
        d["rax"] = UInt64(bitPattern: -516)
        #expect(SyscallRestart.registersForResume(try Registers(named: d)).returnValue == -516)
    }

    @Test("interrupted relative sleeps: nanosleep and relative clock_nanosleep, not absolute ones")
    func sleeps() throws {
        var d = RegisterTests.named
        d["rax"] = UInt64(bitPattern: -516)
        d["orig_rax"] = UInt64(Syscall.nanosleep.number)
        var r = try Registers(named: d)
        let n = try #require(SyscallRestart.interruptedRelativeSleep(r))
        #expect(n.clockID == Clock.monotonic && n.rem == r.arguments[1])
        SyscallRestart.setSleepRequest(&r, to: 0xabc0)
        #expect(r.arguments[0] == 0xabc0)
        d["orig_rax"] = UInt64(Syscall.clock_nanosleep.number)
        d["rdi"] = UInt64(Clock.boottime); d["rsi"] = 0
        r = try Registers(named: d)
        let c = try #require(SyscallRestart.interruptedRelativeSleep(r))
        #expect(c.clockID == Clock.boottime && c.rem == r.arguments[3])
        SyscallRestart.setSleepRequest(&r, to: 0xdef0)
        #expect(r.arguments[2] == 0xdef0)
        d["rsi"] = 1   // TIMER_ABSTIME
        #expect(SyscallRestart.interruptedRelativeSleep(try Registers(named: d)) == nil)
    }
}
