import Foundation
import SSIImage
import SSIInject
import SSISystem
#if canImport(Glibc)
import Glibc
#endif

// The address space around the areas: the mm_struct fields (code, data, brk, stack, args,
// env, auxv) and /proc/PID/exe, and the kernel's own mappings ([vdso], [vvar]) moved to where
// the program expects them.

extension ProcessDumper {
    /// The mm fields from /proc/PID/stat, with brk (read by an injected brk(0)) and auxv.
    func mmFields(stat: ProcStat, brk: UInt64) throws -> MMFields {
        var mm = MMFields()
        mm.startCode = stat.startCode; mm.endCode = stat.endCode; mm.startData = stat.startData; mm.endData = stat.endData
        mm.startBrk = stat.startBrk; mm.brk = brk; mm.startStack = stat.startStack
        mm.argStart = stat.argStart; mm.argEnd = stat.argEnd; mm.envStart = stat.envStart; mm.envEnd = stat.envEnd
        mm.auxv = try ProcFS.readBytes("/proc/\(pid)/auxv").withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        return mm
    }
}

extension ProcessRestorer {
    func moveVDSO(current: [MapsEntry], reserved: (UInt64, UInt64)) throws -> [SyscallBatch.Call] {
        let names: [(VMA.Kind, String)] = [(.vvar, "[vvar]"), (.vvarVclock, "[vvar_vclock]"), (.vdso, "[vdso]")]
        var moves = [(from: UInt64, to: UInt64, size: UInt64)]()
        for (kind, name) in names {
            let old = image.vmas.first { $0.kind == kind }
            let now = current.first { $0.name == name }
            switch (old, now) {
            case (nil, nil): continue
            case let (o?, n?):
                guard o.end - o.start == n.size else {
                    throw SSIError(.unsupported, "the snapshot's \(name) is \(o.end - o.start) bytes, this kernel's is \(n.size): it was taken under another kernel",
                                   hint: "restart it on a node running the kernel it was checkpointed on")
                }
                moves.append((n.start, o.start, n.size))
            default:
                throw SSIError(.unsupported, "the snapshot and this kernel disagree on the \(name) mapping: it was taken under another kernel")
            }
        }
        guard moves.contains(where: { $0.from != $0.to }) else { return [] }
        // Move through a temporary place first, so no move lands on a mapping not yet moved.
        let hole = try findHole(size: moves.reduce(0) { $0 + $1.size } + (1 << 20),
                                avoiding: image.vmas.map { ($0.start, $0.end) } + current.map { ($0.start, $0.end) } + [reserved])
        var tmp = hole
        var calls = [SyscallBatch.Call]()
        var staged = [SyscallBatch.Call]()
        for m in moves {
            calls.append(SyscallBatch.Call(.mremap, m.from, m.size, m.size, 3 /* MREMAP_MAYMOVE|MREMAP_FIXED */, tmp))
            staged.append(SyscallBatch.Call(.mremap, tmp, m.size, m.size, 3, m.to))
            tmp += m.size
        }
        return calls + staged
    }

    /// mm fields and /proc/PID/exe: prctl(PR_SET_MM, PR_SET_MM_MAP) (Linux 3.18), which
    /// unlike the single-field PR_SET_MM options does not need CAP_SYS_RESOURCE.
    /// The exe link is left alone when it is already right (a child forked from its restored
    /// parent): the kernel refuses to change it while the old file is still mapped, as it
    /// is in the areas kept from the parent.
    func restoreMMFields(high: UInt64) throws {
        var exeFD = UInt64(UInt32.max)
        if (try? ProcFS.readLink("/proc/\(pid)/exe")) != image.exe {
            // A program whose binary was removed or replaced while it ran (a package
            // upgrade) has "PATH (deleted)" as its exe: the file it maps its code from was
            // saved with the snapshot and made again (DeletedFiles); that copy is its exe.
            var exe = image.exe
            if exe.hasSuffix(" (deleted)") {
                let old = String(exe.dropLast(" (deleted)".count))
                guard let id = image.vmas.first(where: { $0.path == old && $0.deletedFileID != nil })?.deletedFileID,
                      let copy = deletedFiles?.path(id) else {
                    throw SSIError(.notFound, "PID \(image.pid): its program \(old) was removed while it ran, and the snapshot holds no copy of it (no area maps it)")
                }
                exe = copy
            }
            let exeFD0 = try open("open exe \(image.exe)", path: exe, flags: O_RDONLY | O_CLOEXEC)
            exeFD = try inj.call("dup", .fcntl, exeFD0, UInt64(F_DUPFD_CLOEXEC), high + 3)
            try inj.call("close", .close, exeFD0)
        }
        let mm = image.mm
        let auxvAddr = scratch + 8192
        try mem.write(words: mm.auxv, to: auxvAddr)
        // struct prctl_mm_map: the eleven fields, auxv pointer, auxv size (u32) and exe fd (u32).
        var map: [UInt64] = [mm.startCode, mm.endCode, mm.startData, mm.endData, mm.startBrk, mm.brk, mm.startStack,
                             mm.argStart, mm.argEnd, mm.envStart, mm.envEnd, auxvAddr]
        map.append(UInt64(UInt32(mm.auxv.count * 8)) | (exeFD << 32))
        try mem.write(words: map, to: scratch + 4096)
        try inj.prctl(.setMM, PrctlOption.mmMap, scratch + 4096, UInt64(map.count * 8))
        if exeFD != UInt64(UInt32.max) { try inj.call("close", .close, exeFD) }
    }

    /// The lowest gap of `size` bytes above 4 GiB that overlaps none of `ranges`.
    func findHole(size: UInt64, avoiding ranges: [(UInt64, UInt64)]) throws -> UInt64 {
        let sorted = ranges.sorted { $0.0 < $1.0 }
        var candidate: UInt64 = 1 << 32
        for (s, e) in sorted {
            if e <= candidate { continue }
            if s >= candidate + size { break }
            candidate = (e + 0xfff) & ~0xfff
        }
        guard candidate + size < (1 << 47) - (1 << 30) else { throw SSIError(.system, "no free address range for the restorer's scratch page") }
        return candidate
    }
}
