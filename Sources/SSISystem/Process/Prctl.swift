import CSSILinux

/// The prctl(2) options SwiftSSI uses, by name (values from <linux/prctl.h>). The same
/// constants serve a call made here (`Prctl.call`) and one injected into another process.
public struct PrctlOption: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public let name: String
    public init(rawValue: Int32) { self.rawValue = rawValue; name = "option \(rawValue)" }
    init(_ rawValue: Int32, _ name: String) { self.rawValue = rawValue; self.name = name }
    public var description: String { name }
    public static func == (a: PrctlOption, b: PrctlOption) -> Bool { a.rawValue == b.rawValue }
    public func hash(into h: inout Hasher) { h.combine(rawValue) }

    public static let setParentDeathSignal = PrctlOption(1, "PR_SET_PDEATHSIG")
    public static let getParentDeathSignal = PrctlOption(2, "PR_GET_PDEATHSIG")
    public static let getDumpable = PrctlOption(3, "PR_GET_DUMPABLE")
    public static let setDumpable = PrctlOption(4, "PR_SET_DUMPABLE")
    public static let setName = PrctlOption(15, "PR_SET_NAME")
    /// The bounding set and securebits (capabilities(7)): per thread; dropping from the
    /// bounding set and setting securebits need CAP_SETPCAP.
    public static let capabilityBoundingSetDrop = PrctlOption(24, "PR_CAPBSET_DROP")
    public static let getSecurebits = PrctlOption(27, "PR_GET_SECUREBITS")
    public static let setSecurebits = PrctlOption(28, "PR_SET_SECUREBITS")
    /// PR_CAP_AMBIENT (4.3), with PR_CAP_AMBIENT_RAISE (2) as its second argument.
    public static let ambientCapability = PrctlOption(47, "PR_CAP_AMBIENT")
    public static let setMM = PrctlOption(35, "PR_SET_MM")
    /// PR_MCE_KILL (2.6.32): per thread, what a memory machine-check error does to it;
    /// PR_MCE_KILL_GET returns 0 (late), 1 (early) or 2 (the system's default).
    public static let machineCheckKill = PrctlOption(33, "PR_MCE_KILL")
    public static let machineCheckKillGet = PrctlOption(34, "PR_MCE_KILL_GET")
    /// PR_SET_NO_NEW_PRIVS (3.5): execve(2) no longer grants privileges; per thread, kept
    /// across fork, clone and execve, never cleared.
    public static let setNoNewPrivs = PrctlOption(38, "PR_SET_NO_NEW_PRIVS")
    public static let setChildSubreaper = PrctlOption(36, "PR_SET_CHILD_SUBREAPER")  // (3.4)
    public static let getChildSubreaper = PrctlOption(37, "PR_GET_CHILD_SUBREAPER")  // (3.4)
    /// PR_SET_THP_DISABLE (3.15): no transparent huge pages for the process, kept across
    /// fork and execve; /proc/PID/status shows it as "THP_enabled: 0".
    public static let setTHPDisable = PrctlOption(41, "PR_SET_THP_DISABLE")
    public static let getTidAddress = PrctlOption(40, "PR_GET_TID_ADDRESS")  // (CONFIG_CHECKPOINT_RESTORE)
    public static let timerCreateRestoreIDs = PrctlOption(77, "PR_TIMER_CREATE_RESTORE_IDS")  // (6.14)
    /// Memory-deny-write-execute (6.3): no mapping may become executable after being
    /// writable (systemd's MemoryDenyWriteExecute= on recent versions); kept across fork.
    public static let setMDWE = PrctlOption(65, "PR_SET_MDWE")
    public static let getMDWE = PrctlOption(66, "PR_GET_MDWE")
    /// KSM for every mergeable area of the process (6.4), kept across fork.
    public static let setMemoryMerge = PrctlOption(67, "PR_SET_MEMORY_MERGE")
    public static let getMemoryMerge = PrctlOption(68, "PR_GET_MEMORY_MERGE")

    /// PR_SET_MM's second argument: PR_SET_MM_MAP (3.18) sets every mm field at once from a
    /// struct prctl_mm_map.
    public static let mmMap: UInt64 = 14
}

public enum Prctl {
    /// prctl(2) in this process; returns the result or throws naming the option.
    @discardableResult
    public static func call(_ option: PrctlOption, _ a2: UInt = 0, _ a3: UInt = 0, _ a4: UInt = 0, _ a5: UInt = 0) throws -> Int {
        try check(cssi_prctl(option.rawValue, a2, a3, a4, a5), "prctl(\(option))")
    }

    /// Orphans of our descendants become ours to reap (PR_SET_CHILD_SUBREAPER), since PID 1
    /// does not reap on every machine.
    public static func becomeSubreaper() {
        _ = try? call(.setChildSubreaper, 1)
    }
}
