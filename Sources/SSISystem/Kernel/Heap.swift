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
    @discardableResult
    public static func keepFreedMemory(keep: Int32 = 256 << 20) -> Bool {
        cssi_heap_thresholds(32 << 20, keep) != 0
    }
}
