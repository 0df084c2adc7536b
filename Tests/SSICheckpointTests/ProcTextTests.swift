import Foundation
@testable import SSICheckpoint
import SSISystem
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The /proc parsers the dump runs while the application is frozen, read on the bytes
/// (ProcText): every field as proc(5) lays it out, names with spaces and parentheses,
/// negative fields, and lines that are not what they are looked for.
@Suite struct ProcTextTests {
    @Test func statOfThisProcessAndOfAnAwkwardName() throws {
        let me = try ProcStat.read(pid: getpid())
        #expect(me.pid == getpid() && me.ppid == getppid() && me.pgid == getpgrp() && me.sid == getsid(0))
        #expect("RS".contains(me.state) && me.exitSignal == SIGCHLD && me.startCode > 0 && me.startStack > me.startCode, "\(me) \((try? ProcFS.read("/proc/self/stat")) ?? "")")
        // comm with ") " inside, a negative priority and nice (fields 18, 19), kernel-thread flags.
        let line = "42 (a) b (c) S 1 42 42 0 -1 2097152 0 0 0 0 3 4 0 0 -2 -20 1 0 777 0 0 18446744073709551615 4194304 4198400 140720308547584 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4202496 4206592 4210688 4222976 4227072 4231168 4235264 9\n"
        let s = try ProcStat.parse(line, pid: 42)
        #expect(s.comm == "a) b (c" && s.state == "S" && s.ppid == 1 && s.pgid == 42 && s.sid == 42 && s.ttyNr == 0)
        #expect(s.isKernelThread && s.startTime == 777 && s.startCode == 4194304 && s.endCode == 4198400 && s.startStack == 140720308547584)
        #expect(s.exitSignal == 17 && s.startData == 4202496 && s.endData == 4206592 && s.startBrk == 4210688)
        #expect(s.argStart == 4222976 && s.argEnd == 4227072 && s.envStart == 4231168 && s.envEnd == 4235264)
        #expect(throws: SSIError.self) { try ProcStat.parse("42 (a) S 1 2 3\n", pid: 42) }
        #expect(throws: SSIError.self) { try ProcStat.parse("garbage", pid: 42) }
    }

    @Test func mapsLinesWithEveryKindOfName() throws {
        let text = """
        00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/my app (deleted)
        7f0000000000-7f0000021000 rw-s 0000a000 00:05 9                          /SYSV00000000 (deleted)
        7ffd1c3b2000-7ffd1c3d3000 rw-p 00000000 00:00 0                          [stack]
        7ffd1c3d3000-7ffd1c3d5000 r--p 00000000 00:00 0
        not a maps line
        ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
        """
        let m = MapsEntry.parse(text)
        #expect(m.count == 5, "\(m)")
        #expect(m[0].start == 0x400000 && m[0].end == 0x452000 && m[0].read && !m[0].write && m[0].exec && !m[0].shared)
        #expect(m[0].offset == 0 && m[0].device == "08:02" && m[0].inode == 173521 && m[0].name == "/usr/bin/my app (deleted)")
        #expect(m[1].shared && m[1].write && m[1].offset == 0xa000 && m[1].name == "/SYSV00000000 (deleted)" && m[1].inode == 9)
        #expect(m[2].name == "[stack]" && m[3].name == "" && !m[3].write && m[4].isSpecialKernelMapping)
        // This process's own maps: the area holding a local variable is its stack, writable.
        var x = 0
        let here = UInt64(UInt(bitPattern: withUnsafeMutablePointer(to: &x) { $0 }))
        let mine = MapsEntry.parse(try ProcFS.read("/proc/self/maps"))
        let area = try #require(mine.first { $0.start <= here && here < $0.end })
        #expect(area.read && area.write, "\(area)")
    }

    @Test func vmFlagsByAreaKeepOnlyWhatARestartSets() {
        let smaps = """
        00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/app
        Size:                328 kB
        AnonHugePages:         0 kB
        VmFlags: rd ex mr mw me dw
        7f0000000000-7f0000021000 rw-p 00000000 00:00 0
        Size:                132 kB
        Dirty-looking: 1 kB
        VmFlags: rd wr mr mw me ac lo dd nh
        7ffd1c3b2000-7ffd1c3d3000 rw-p 00000000 00:00 0                          [stack]
        VmFlags:
        """
        let f = Array(smaps.utf8).withUnsafeBufferPointer { ProcessDumper.vmFlags(smaps: $0) }
        #expect(f[0x400000] == ["mw"])
        #expect(f[0x7f0000000000] == ["mw", "lo", "dd", "nh"])
        #expect(f[0x7ffd1c3b2000] == [])
        #expect(f.count == 3)
    }

    @Test func statusFieldsAndNamespaceIDs() {
        let st = ProcStatus.parse("Name:\tmy prog \nUmask:\t0022\nUid:\t0\t1\t2\t3\nSigBlk:\t0000000000010000\nNSpid:\t77\t1\nnot a field\nEmpty:\n")
        #expect(st.fields["Name"] == "my prog" && st.fields["Umask"] == "0022" && st.fields["Empty"] == "")
        #expect(st.ints("Uid") == [0, 1, 2, 3] && st.hexMask("SigBlk") == 0x10000 && st.ints("NSpid") == [77, 1])
        #expect(PIDNamespace.nsIDs(getpid()).last == getpid(), "this process's own NSpid line")
        #expect(PIDNamespace.nsIDs(getpid(), field: "NSsid").last == getsid(0))
        #expect(PIDNamespace.nsIDs(getpid(), field: "NoSuchField").isEmpty)
    }
}
