// CSSILinux: the C shim under SwiftSSI.
//
// Swift cannot call variadic C functions (ptrace, syscall, prctl, fcntl) nor function-like
// macros (WIFSTOPPED), and code that runs between clone and exec must not be Swift. This
// header wraps exactly those. Every symbol is prefixed `cssi_`; errors come back as -errno
// so that errno never has to cross the language boundary.
#ifndef CSSI_LINUX_H
#define CSSI_LINUX_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <signal.h>

// ---- ptrace -------------------------------------------------------------------------------

// Every ptrace request returns >= 0 on success or -errno. PEEK requests write the word to *out.
long cssi_ptrace(int request, pid_t pid, uintptr_t addr, uintptr_t data);
long cssi_ptrace_peek(int request, pid_t pid, uintptr_t addr, uint64_t *out);

// ptrace request numbers and event values from <linux/ptrace.h>; glibc's <sys/ptrace.h> has an
// enum that does not always carry the newer ones (PTRACE_GET_RSEQ_CONFIGURATION is 5.13+).
enum {
    CSSI_PTRACE_TRACEME = 0,
    CSSI_PTRACE_PEEKDATA = 2,
    CSSI_PTRACE_POKEDATA = 5,
    CSSI_PTRACE_CONT = 7,
    CSSI_PTRACE_KILL = 8,
    CSSI_PTRACE_SINGLESTEP = 9,
    CSSI_PTRACE_GETREGS = 12,
    CSSI_PTRACE_SETREGS = 13,
    CSSI_PTRACE_DETACH = 17,
    CSSI_PTRACE_SETOPTIONS = 0x4200,
    CSSI_PTRACE_GETSIGINFO = 0x4202,
    CSSI_PTRACE_GETREGSET = 0x4204,
    CSSI_PTRACE_SETREGSET = 0x4205,
    CSSI_PTRACE_SEIZE = 0x4206,
    CSSI_PTRACE_INTERRUPT = 0x4207,
    CSSI_PTRACE_LISTEN = 0x4208,
    CSSI_PTRACE_PEEKSIGINFO = 0x4209,
    CSSI_PTRACE_GETSIGMASK = 0x420a,
    CSSI_PTRACE_SETSIGMASK = 0x420b,
    CSSI_PTRACE_GET_RSEQ_CONFIGURATION = 0x420f,
    // ptrace(2), Linux 6.11: a thread's syscall user dispatch (struct ptrace_sud_config).
    CSSI_PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG = 0x4210,
    CSSI_PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG = 0x4211,
    // ptrace(2): a seccomp filter's BPF program by index (0: the newest), and its flags.
    CSSI_PTRACE_SECCOMP_GET_FILTER = 0x420c,
    CSSI_PTRACE_SECCOMP_GET_METADATA = 0x420d,
    CSSI_PTRACE_O_EXITKILL = 1 << 20,
    CSSI_PTRACE_EVENT_STOP = 128,
    CSSI_PTRACE_PEEKSIGINFO_SHARED = 1,
    CSSI_NT_PRSTATUS = 1,
    CSSI_NT_X86_XSTATE = 0x202,
};

// <linux/ptrace.h> struct ptrace_rseq_configuration, copied by hand (glibc lacks it).
struct cssi_rseq_configuration {
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size;
    uint32_t signature;
    uint32_t flags;
    uint32_t pad;
};
_Static_assert(sizeof(struct cssi_rseq_configuration) == 24, "ptrace_rseq_configuration layout");

struct cssi_peeksiginfo_args {
    uint64_t off;
    uint32_t flags;
    int32_t nr;
};

// x86_64 struct user_regs_struct from <sys/user.h>, as 27 named 64-bit words.
struct cssi_user_regs {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
    uint64_t rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
    uint64_t fs_base, gs_base, ds, es, fs, gs;
};
_Static_assert(sizeof(struct cssi_user_regs) == 27 * 8, "user_regs_struct layout");

long cssi_get_regs(pid_t pid, struct cssi_user_regs *regs);
long cssi_set_regs(pid_t pid, const struct cssi_user_regs *regs);
// PTRACE_GETREGSET/SETREGSET with one iovec; *len is in/out for GET.
long cssi_get_regset(pid_t pid, int type, void *buf, size_t *len);
long cssi_set_regset(pid_t pid, int type, const void *buf, size_t len);

// ---- wait ---------------------------------------------------------------------------------

// waitpid with __WALL, retried on EINTR; returns pid or -errno.
pid_t cssi_waitpid(pid_t pid, int *status, int options);
int cssi_wifexited(int status);
int cssi_wexitstatus(int status);
int cssi_wifsignaled(int status);
int cssi_wtermsig(int status);
int cssi_wifstopped(int status);
int cssi_wstopsig(int status);
// The PTRACE_EVENT_* in bits 16..23 of a stop status (status >> 16).
int cssi_wptrace_event(int status);

// ---- raw syscalls and small wrappers --------------------------------------------------------

long cssi_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6);
long cssi_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
long cssi_fcntl_int(int fd, int cmd, int arg);
// ioctl(2) with one integer argument (or none); -errno on failure.
long cssi_ioctl_long(int fd, unsigned long request, unsigned long arg);
// unshare(CLONE_FS) for the calling thread: its own cwd, root and umask from now on; -errno.
long cssi_unshare_fs(void);
// unshare(CLONE_NEWNET) for the calling thread; setns(2) of the calling thread; -errno.
long cssi_unshare_net(void);
// Opens /dev/net/tun and attaches the fd to a layer-3 tun interface `name` (made if missing;
// IFF_TUN | IFF_NO_PI: each read or write is one bare IP packet; netdevice(7), the kernel's
// Documentation/networking/tuntap.rst). Returns the fd (close-on-exec) or -errno.
int cssi_tun_open(const char *name);
// Replaces (or adds) the IPv4 route dst/32 of the main table over rtnetlink (rtnetlink(7),
// RTM_NEWROUTE with NLM_F_CREATE | NLM_F_REPLACE): out of interface `oif` (> 0) and/or
// through gateway `gw` (0: none; scope link when there is none), preferred source `src` (0:
// none), routing protocol `proto`. Addresses in network byte order. 0 or -errno; no
// program to start, for the steps a migration takes while the application is frozen.
int cssi_route4_replace(uint32_t dst, int oif, uint32_t gw, uint32_t src, unsigned char proto);
// The same for `dst`/`prefix` (a subnet: dst in network order with its host bits clear).
int cssi_route4_replace_prefix(uint32_t dst, unsigned char prefix, int oif, uint32_t gw, uint32_t src, unsigned char proto);
// Deletes network interface `ifindex` of the caller's namespace (RTM_DELLINK): 0 or -errno.
int cssi_link_delete(int ifindex);
long cssi_setns(int fd, int nstype);
// Flags of network interface `name` (SIOCGIFFLAGS, netdevice(7)) in the calling thread's
// network namespace, or -errno; cssi_if_set_flags sets them (SIOCSIFFLAGS).
long cssi_if_flags(const char *name);
long cssi_if_set_flags(const char *name, unsigned int flags);
// Sets interface `name`'s Ethernet address (SIOCSIFHWADDR): 0 or -errno.
long cssi_if_set_mac(const char *name, const unsigned char mac[6]);
// Moves a MAC between two interfaces (two namespaces' sockets) with two back-to-back
// ioctls: 0 or -(1000 * step + errno).
long cssi_swap_mac(int app_sock, const char *app_if, const unsigned char app_new[6],
                   int node_sock, const char *node_if, const unsigned char node_new[6]);
// Broadcasts a gratuitous ARP request for `ip_be` (network order) from `ifname` of the
// calling thread's network namespace, with sender `mac`: 0 or -errno.
int cssi_announce_arp(const char *ifname, const unsigned char mac[6], uint32_t ip_be);
// The inode of the network namespace socket `fd` was made in (SIOCGSKNS, Linux 4.9: an fd
// on that namespace, closed here), or -errno.
long cssi_socket_netns(int fd);
// The file system type (statfs(2) f_type: MQUEUE_MAGIC...) of `path`, or -errno.
long cssi_fs_type(const char *path);
// rt_sigqueueinfo(2) / rt_tgsigqueueinfo(2) with a 128-byte siginfo; -errno on failure.
long cssi_rt_sigqueueinfo(int tgid, int sig, const void *info);
long cssi_rt_tgsigqueueinfo(int tgid, int tid, int sig, const void *info);
// fanotify_init(2) and fanotify_mark(2); -errno on failure.
long cssi_fanotify_init(unsigned int flags, unsigned int event_f_flags);
long cssi_fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *path);
long cssi_get_robust_list(pid_t pid, uint64_t *head, uint64_t *len);
long cssi_prlimit(pid_t pid, int resource, const uint64_t *newlim /* [2] or NULL */, uint64_t *oldlim /* [2] or NULL */);
long cssi_pidfd_open(pid_t pid);
// pidfd_open(2) of a thread (PIDFD_THREAD, Linux 6.9): pidfd_getfd on it reads that thread's
// fd table, which a thread group's exited leader no longer has.
long cssi_pidfd_open_thread(pid_t tid);
long cssi_process_vm_readv(pid_t pid, const struct iovec *local, unsigned long nlocal,
                           const struct iovec *remote, unsigned long nremote);
long cssi_process_vm_writev(pid_t pid, const struct iovec *local, unsigned long nlocal,
                            const struct iovec *remote, unsigned long nremote);
long cssi_tee(int fdin, int fdout, size_t len, unsigned int flags);
// Syscalls glibc does not wrap (or wraps only under _GNU_SOURCE), by their SYS_* number so
// that no number is written in Swift.
long cssi_kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1, unsigned long idx2);
long cssi_memfd_create(const char *name, unsigned int flags);
long cssi_open_by_handle_at(int mount_fd, const void *handle, int flags);
long cssi_pidfd_getfd(int pidfd, int targetfd);

// ---- process creation ---------------------------------------------------------------------

// How the child's fd 0, 1 or 2 is set up by cssi_spawn.
enum {
    CSSI_STDIO_INHERIT = 0,   // ours, as is
    CSSI_STDIO_FD = 1,        // a dup of our fd `fd`
    CSSI_STDIO_PATH = 2,      // `path` opened with `flags` (O_CLOEXEC is added and dropped by dup2)
    CSSI_STDIO_STDOUT = 3,    // the same open file as the child's stdout (2>&1)
};
struct cssi_spawn_stdio {
    int kind;
    int fd;
    const char *path;
    int flags;
};

struct cssi_spawn_options {
    struct cssi_spawn_stdio stdio[3];
    int cgroup_fd;          // >= 0: clone3 CLONE_INTO_CGROUP (Linux 5.7) into this group directory
    int keep_fds;           // pass fds above 2 on; otherwise they are marked close-on-exec
    int new_session;        // setsid() in the child
    int sibling;            // CLONE_PARENT: the child is our parent's child
    const char *directory;  // chdir() in the child after the stdio files are opened; NULL: stay
    char *const *envp;      // NULL: our environment
    unsigned long long namespaces; // CLONE_NEW* flags added to clone3's (e.g. CLONE_NEWPID|CLONE_NEWNS)
    int pass_fd;            // >= 0: becomes the child's fd 3, kept across exec; -1: none
    int set_nice;           // nonzero: setpriority(PRIO_PROCESS, 0, nice) in the child
    int nice;
};

// The one spawner: clone3 (into the cgroup whose directory fd is cgroup_fd, with
// CLONE_INTO_CGROUP so that no fork can escape before the move), an empty signal mask and
// default dispositions, stdio as the options say, setsid() if asked, then
// execvpe(argv[0], argv, envp). `sibling` makes the child our parent's child (CLONE_PARENT),
// for a daemon that must outlive us yet be reaped by whoever started us. Only raw syscalls
// and async-signal-safe calls run in the child. An exec failure is reported back over a
// close-on-exec pipe. Returns the child's pid, or -errno (exec's errno if exec failed).
pid_t cssi_spawn(char *const argv[], const struct cssi_spawn_options *options);

// Creates the empty shell of a process being restored: clone3 with set_tid = pid (Linux 5.5,
// needs CAP_CHECKPOINT_RESTORE in the owning user namespace of the pid namespace), into the
// cgroup cgroup_fd if >= 0. The child calls PTRACE_TRACEME and, given a `stub` program
// (ssi-init), execs it and stops with SIGTRAP before it runs (fd keep_fd, if >= 0, stays open
// across the exec); without one, or if the exec fails, it stops itself with SIGSTOP. From
// then on the restorer drives it by syscall injection and it never runs its own code again.
// Returns the pid, -EEXIST when the pid is in use, or another -errno.
pid_t cssi_spawn_restore_shell(pid_t pid, int cgroup_fd, const char *stub, int keep_fd);

// The same shell as process `pid` of a new PID namespace (clone3 CLONE_NEWPID with set_tid of
// size 1, which sets the PID in the new, innermost namespace: clone(2)); with CLONE_NEWNS in
// `namespaces` it also gets a mount namespace, where it makes / a slave and mounts a /proc
// of its PID namespace before stopping, as ssi-init --proc does at launch. Returns the pid in
// our namespace, or -errno. `argv` and `envp` (NULL-terminated, or NULL for the stub's usual
// `STUB --restore-stub` and an empty environment) are what the stub is exec'd with: a saved
// ssi-init that a new one takes over from (ProcessImage.freshInit) gets its saved command
// line and SSI_INIT_RESUME.
pid_t cssi_spawn_restore_ns_shell(pid_t pid, int cgroup_fd, unsigned long long namespaces, const char *stub, int keep_fd,
                                  char *const *argv, char *const *envp);

// ---- checksums ----------------------------------------------------------------------------

// CRC-32C (Castagnoli), with the SSE4.2 crc32 instruction. Chain calls by passing the
// previous result as crc (start with 0).
uint32_t cssi_crc32c(uint32_t crc, const void *buf, size_t len);
// The CRC-32C of A followed by B, from crc(A), crc(B) and the length of B: lets a file be
// checksummed in pieces, in parallel.
uint32_t cssi_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);
// The page pool's content hashes in one pass: for each 4096-byte page of `buf`,
// hashes[i] = CRC-32C(first half) << 32 | CRC-32C(second half), the two halves run as two
// independent lanes; returns the CRC-32C of `crc` followed by every page (the halves
// joined by the CRC's linearity), so a pages file's CRC costs no second pass.
uint32_t cssi_crc32c_pages(uint32_t crc, const void *buf, size_t pages, uint64_t *hashes);
// The same CRC from the pages' hashes alone (what cssi_crc32c_pages returns for pages with
// these hashes): a pages file made of pages already in the pool, never read again.
uint32_t cssi_crc32c_from_hashes(uint32_t crc, const uint64_t *hashes, size_t pages);
// One page's hash alone (what cssi_crc32c_pages puts in hashes[i]).
uint64_t cssi_crc32c_page_hash(const void *page);

// fcntl/splice constants that glibc only declares under _GNU_SOURCE (fcntl(2), tee(2)).
enum { CSSI_F_SETPIPE_SZ = 1031, CSSI_F_GETPIPE_SZ = 1032, CSSI_SPLICE_F_NONBLOCK = 2, CSSI_MAP_FIXED_NOREPLACE = 0x100000 };
long cssi_pipe2(int fds[2], int flags);

// ---- sockets --------------------------------------------------------------------------------

// sendmsg(2) of len bytes from buf, to addr (NULL: the connected peer), with fds[0..n) as
// SCM_RIGHTS when n > 0, MSG_DONTWAIT. Returns the bytes sent or -errno.
long cssi_send_with_fds(int sock, const void *addr, unsigned addrlen, const void *buf, unsigned long len, const int *fds, int n);
// The same with SCM_CREDENTIALS cred[0..3) (pid, uid, gid) when cred is not NULL.
long cssi_send_with_creds(int sock, const void *addr, unsigned addrlen, const void *buf, unsigned long len, const int *fds, int n,
                          const unsigned *cred);
// recvmsg(2) with MSG_PEEK|MSG_DONTWAIT: copies the next message (or, on a stream socket,
// bytes) into buf without consuming it, and the sender's name into name (*namelen in/out).
// File descriptors in flight (SCM_RIGHTS) are installed by a peek too, as new fds of the
// caller: up to 253 are stored in fds (*nfds of them, close-on-exec), the caller owns them.
// *nfds is -1 when some were cut off. cred (when not NULL) gets the message's
// SCM_CREDENTIALS (pid, uid, gid; zeros without: the socket must have SO_PASSCRED).
// Returns the byte count or -errno.
long cssi_peek_message(int sock, void *buf, unsigned long len, void *name, unsigned *namelen, int *fds, int *nfds, unsigned *cred);

// What a datagram's ancillary data says of the packet it came in (ip(7) IP_PKTINFO,
// IP_RECVTTL, IP_RECVTOS; ipv6(7) IPV6_RECVPKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVTCLASS),
// when the socket asks for it: the destination address of its header (4 or 16 bytes,
// dst_len 0 when not told), its TTL or hop limit and its TOS or traffic class (-1 when not
// told).
struct cssi_packet_info {
    unsigned char dst[16];
    int dst_len;
    int ttl;
    int tos;
};
long cssi_peek_datagram(int sock, void *buf, unsigned long len, void *name, unsigned *namelen, struct cssi_packet_info *info);
// sendto(2) of one datagram with an IP_TTL/IP_TOS (v6 0) or IPV6_HOPLIMIT/IPV6_TCLASS (v6 1)
// ancillary message for each of ttl and tos that is >= 0. Returns the bytes sent or -errno.
long cssi_send_datagram(int sock, const void *addr, unsigned addrlen, const void *buf, unsigned long len, int v6, int ttl, int tos);
// recvmsg(2), blocking, with MSG_CMSG_CLOEXEC: bytes into buf, and up to 3 fds that came as
// SCM_RIGHTS into fds (*nfds of them; the caller owns them). Returns the byte count or -errno.
long cssi_recv_with_fds(int sock, void *buf, unsigned long len, int *fds, int *nfds);

// ---- misc ---------------------------------------------------------------------------------

// The errno of the calling thread (for the few libc calls Swift makes directly).
int cssi_errno(void);

// fallocate(2) FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (Linux 2.6.38; tmpfs 3.5): frees
// the blocks of [offset, offset + len), which then read as zeros; 0 or -errno.
long cssi_punch_hole(int fd, long long offset, long long len);


// ---- a task's scheduling attributes, read and set from outside it ----------------------------
// By thread id, as root (CAP_SYS_NICE). Each returns 0 (or the value) or -errno.
// nice: getpriority/setpriority(PRIO_PROCESS, tid), which Linux applies to the one thread.
int cssi_get_nice(int tid, int *nice);
int cssi_set_nice(int tid, int nice);
// policy (SCHED_RESET_ON_FORK included) and its static priority: sched_getscheduler(2).
int cssi_get_policy(int tid, int *policy, int *priority);
int cssi_set_policy(int tid, int policy, int priority);
// SCHED_DEADLINE (sched_getattr(2), sched_setattr(2)): out = runtime, deadline, period (ns),
// sched_flags. 0 or -errno.
int cssi_get_deadline(int tid, unsigned long long out[4]);
int cssi_set_deadline(int tid, unsigned long long runtime, unsigned long long deadline, unsigned long long period, unsigned long long flags);
// CPU affinity as 64-bit words of a mask of `words * 64` CPUs: sched_getaffinity(2).
int cssi_get_affinity(int tid, unsigned long long *mask, int words);
int cssi_set_affinity(int tid, const unsigned long long *mask, int words);
/* The CPU the calling thread runs on (sched_getcpu(3)), or -errno. */
int cssi_current_cpu(void);
/* The calling thread's id (gettid(2)). */
long cssi_gettid(void);
/* mallopt(M_MMAP_THRESHOLD, mmap_threshold), mallopt(M_TRIM_THRESHOLD, trim_threshold) and,
   if arenas > 0, mallopt(M_ARENA_MAX, arenas) (malloc.h is not part of Swift's Glibc module);
   returns 0 if any was refused. */
int cssi_heap_thresholds(int mmap_threshold, int trim_threshold, int arenas);
// I/O priority (class << 13 | data): ioprio_get/ioprio_set(IOPRIO_WHO_PROCESS, tid), no
// glibc wrapper.
int cssi_get_ioprio(int tid);
int cssi_set_ioprio(int tid, int ioprio);

// One call that fixes a unix socket's peer credentials (SO_PEERCRED), made by a child that
// shares our memory, fd table and cwd, with PID `pid` (when > 0) in the PID namespace of
// `pidns_fd` (when >= 0; else ours) and effective ids uid/gid (cssi_linux.c). `result`: 0 or
// -errno of the call; `sv`: the pair made. Returns 0 once the child is reaped, or -errno
// (-EEXIST: the PID is taken).
enum { CSSI_CREATOR_SOCKETPAIR = 1, CSSI_CREATOR_CONNECT = 2, CSSI_CREATOR_LISTEN = 3, CSSI_CREATOR_SEND = 4 };
struct cssi_creator_call {
    int op;
    int fd;
    int type;
    int backlog;
    const void *addr;
    unsigned addrlen;
    unsigned uid;
    unsigned gid;
    int sv[2];
    // CSSI_CREATOR_SEND: cssi_send_with_fds on `fd` to `addr` (NULL: its peer); `result` is
    // the bytes sent or -errno.
    const void *buf;
    unsigned long len;
    const int *fds;
    int nfds;
    long result;
};
long cssi_creator_call(int pidns_fd, pid_t pid, struct cssi_creator_call *c);

// SIGINT, SIGTERM and SIGHUP set a flag instead of ending us (cssi_interrupts_defer), until
// cssi_interrupts_restore puts the earlier dispositions back; cssi_interrupt_pending: the
// first of them that came since the defer, or 0.
void cssi_interrupts_defer(void);
void cssi_interrupts_restore(void);
int cssi_interrupt_pending(void);

#endif
