#if arch(x86_64)
import CSSILinux
import SSISystem

/// A task's general-purpose registers (PTRACE_GETREGS). Code outside the Arch folder sees
/// only their roles (instruction pointer, stack pointer, syscall number, return value,
/// arguments) and the named form the snapshot keeps; the x86_64 names (rip, orig_rax...)
/// are written only here.
public struct Registers {
    /// struct user_regs_struct (sys/user.h), laid out by hand in the C shim.
    typealias Raw = cssi_user_regs
    var raw: Raw

    init(raw: Raw) { self.raw = raw }

    public var instructionPointer: UInt64 {
        get { raw.rip }
        set { raw.rip = newValue }
    }

    public var stackPointer: UInt64 { raw.rsp }

    /// The syscall the task was inside when it stopped (orig_rax >= 0), nil otherwise.
    public var syscall: Syscall? {
        let n = Int64(bitPattern: raw.orig_rax)
        return n >= 0 ? Syscall(number: Int(n)) : nil
    }

    /// A syscall's result once it returned (rax): negative errno on failure, and while a
    /// task is stopped inside an interrupted syscall, -ERESTART*.
    public var returnValue: Int64 { Int64(bitPattern: raw.rax) }

    /// The syscall arguments in order (rdi, rsi, rdx, r10, r8, r9: the `syscall` ABI).
    public var arguments: [UInt64] {
        get { [raw.rdi, raw.rsi, raw.rdx, raw.r10, raw.r8, raw.r9] }
        set {
            let a = newValue + Array(repeating: 0, count: max(0, 6 - newValue.count))
            raw.rdi = a[0]; raw.rsi = a[1]; raw.rdx = a[2]; raw.r10 = a[3]; raw.r8 = a[4]; raw.r9 = a[5]
        }
    }

    /// A copy of these registers set up to run `syscall` with `args` from a `syscall`
    /// instruction at `address`.
    public func preparedForSyscall(_ syscall: Syscall, _ args: [UInt64], at address: UInt64) -> Registers {
        var r = self
        r.raw.rax = UInt64(syscall.number)
        // orig_rax = -1 tells the kernel we are not inside a syscall, so that resuming from
        // the current stop does not apply a syscall restart to these registers.
        r.raw.orig_rax = UInt64.max
        r.raw.rip = address
        r.arguments = args
        return r
    }

    /// A copy of these registers set up to run Arch.batchLoop at `code` over `count`
    /// entries of the table at `table`.
    func preparedForBatch(code: UInt64, table: UInt64, count: Int) -> Registers {
        var r = self
        r.raw.orig_rax = UInt64.max
        r.raw.rip = code
        r.raw.rbx = table
        r.raw.r12 = UInt64(count)
        return r
    }

    /// The names of the register file, in struct user_regs_struct order.
    public static let names = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
                               "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs"]

    /// Named fields for the snapshot, so a human can read a core file.
    public var named: [String: UInt64] {
        ["r15": raw.r15, "r14": raw.r14, "r13": raw.r13, "r12": raw.r12, "rbp": raw.rbp, "rbx": raw.rbx, "r11": raw.r11,
         "r10": raw.r10, "r9": raw.r9, "r8": raw.r8, "rax": raw.rax, "rcx": raw.rcx, "rdx": raw.rdx, "rsi": raw.rsi,
         "rdi": raw.rdi, "orig_rax": raw.orig_rax, "rip": raw.rip, "cs": raw.cs, "eflags": raw.eflags, "rsp": raw.rsp,
         "ss": raw.ss, "fs_base": raw.fs_base, "gs_base": raw.gs_base, "ds": raw.ds, "es": raw.es, "fs": raw.fs, "gs": raw.gs]
    }

    /// The registers from the snapshot's named form; every register must be there.
    public init(named d: [String: UInt64]) throws {
        func g(_ k: String) throws -> UInt64 {
            guard let v = d[k] else { throw SSIError(.corrupt, "register \(k) missing from the snapshot") }
            return v
        }
        raw = Raw(r15: try g("r15"), r14: try g("r14"), r13: try g("r13"), r12: try g("r12"), rbp: try g("rbp"), rbx: try g("rbx"),
                  r11: try g("r11"), r10: try g("r10"), r9: try g("r9"), r8: try g("r8"), rax: try g("rax"), rcx: try g("rcx"),
                  rdx: try g("rdx"), rsi: try g("rsi"), rdi: try g("rdi"), orig_rax: try g("orig_rax"), rip: try g("rip"),
                  cs: try g("cs"), eflags: try g("eflags"), rsp: try g("rsp"), ss: try g("ss"), fs_base: try g("fs_base"),
                  gs_base: try g("gs_base"), ds: try g("ds"), es: try g("es"), fs: try g("fs"), gs: try g("gs"))
    }
}
#endif
