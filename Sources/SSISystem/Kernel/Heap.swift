import CSSILinux

/// How the engine's process keeps the memory it frees.
public enum Heap {
    /// Keeps large freed blocks in the process for the next allocation instead of giving
    /// them back to the kernel at once.
    ///
    /// A checkpoint or migration allocates buffers of megabytes again and again (8 MiB page
    /// buffers per process dumped, 4 MiB RPC frames, the arrays that carry them). glibc serves
    /// anything above its mmap threshold (128 KiB at start, raised only as such blocks are
    /// freed) with a fresh mmap(2) and unmaps it on free(3), and gives the top of a heap
    /// back above its trim threshold (mallopt(3)): every such buffer is then memory the kernel
    /// must fault in and zero again, page by page. On a virtual machine whose host takes freed
    /// guest memory back (virtio-balloon free page reporting) that is ~0.75 ms per MiB: a
    /// 1 GiB migration's frozen round paid 15-20 ms of it for 2-5 MB of pages in fresh
    /// buffers. With the thresholds fixed (which also ends glibc's dynamic adjustment),
    /// blocks up to 32 MiB (glibc's largest mmap threshold on 64-bit) come from the heap, and
    /// up to `keep` bytes of free heap stay mapped and already faulted in.
    ///
    /// And one heap for every thread (M_ARENA_MAX 1): glibc gives each new thread that
    /// allocates under contention an arena of its own (up to 8 per CPU), whose memory the
    /// others never reuse. A restore runs on a thread of its own: a target's first restore of
    /// a large application faulted in fresh memory for its page-run arrays again (its "runs
    /// translated" 8.5 ms, "create process tree" 28.7 ms, against 1.2 and 11 ms with one arena,
    /// on the first move onto a node; the 1 GiB application's frozen time 91 ms against
    /// 46 ms). Small blocks still come from each thread's cache (tcache) without the lock.
    /// Call it first thing, before other threads start.
    @discardableResult
    public static func keepFreedMemory(keep: Int32 = 256 << 20) -> Bool {
        cssi_heap_thresholds(32 << 20, keep, 1) != 0
    }
}
