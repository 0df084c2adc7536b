// CSSILinux: see include/cssi_linux.h for what each function is for.
#include "cssi_linux.h"

#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <nmmintrin.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <net/if.h>
#include <linux/sockios.h>
#include <linux/if_tun.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

_Static_assert(sizeof(struct user_regs_struct) == sizeof(struct cssi_user_regs), "user_regs_struct");

static inline long neg_errno(long r) { return r == -1 ? -errno : r; }

long cssi_ptrace(int request, pid_t pid, uintptr_t addr, uintptr_t data) {
    return neg_errno(syscall(SYS_ptrace, (long)request, (long)pid, addr, data));
}

// The raw PTRACE_PEEK* syscall stores the word at `data` (glibc's wrapper hides this); using
// the raw form means a word of -1 cannot be mistaken for an error.
long cssi_ptrace_peek(int request, pid_t pid, uintptr_t addr, uint64_t *out) {
    return neg_errno(syscall(SYS_ptrace, (long)request, (long)pid, addr, (uintptr_t)out));
}

long cssi_get_regs(pid_t pid, struct cssi_user_regs *regs) {
    return cssi_ptrace(CSSI_PTRACE_GETREGS, pid, 0, (uintptr_t)regs);
}

long cssi_set_regs(pid_t pid, const struct cssi_user_regs *regs) {
    return cssi_ptrace(CSSI_PTRACE_SETREGS, pid, 0, (uintptr_t)regs);
}

long cssi_get_regset(pid_t pid, int type, void *buf, size_t *len) {
    struct iovec iov = { .iov_base = buf, .iov_len = *len };
    long r = cssi_ptrace(CSSI_PTRACE_GETREGSET, pid, (uintptr_t)type, (uintptr_t)&iov);
    if (r >= 0) *len = iov.iov_len;
    return r;
}

long cssi_set_regset(pid_t pid, int type, const void *buf, size_t len) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return cssi_ptrace(CSSI_PTRACE_SETREGSET, pid, (uintptr_t)type, (uintptr_t)&iov);
}

pid_t cssi_waitpid(pid_t pid, int *status, int options) {
    for (;;) {
        pid_t r = waitpid(pid, status, options | __WALL);
        if (r >= 0) return r;
        if (errno != EINTR) return -errno;
    }
}

int cssi_wifexited(int s) { return WIFEXITED(s); }
int cssi_wexitstatus(int s) { return WEXITSTATUS(s); }
int cssi_wifsignaled(int s) { return WIFSIGNALED(s); }
int cssi_wtermsig(int s) { return WTERMSIG(s); }
int cssi_wifstopped(int s) { return WIFSTOPPED(s); }
int cssi_wstopsig(int s) { return WSTOPSIG(s); }
int cssi_wptrace_event(int s) { return (s >> 16) & 0xff; }

long cssi_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) {
    return neg_errno(syscall(nr, a1, a2, a3, a4, a5, a6));
}

long cssi_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
    return neg_errno(prctl(option, a2, a3, a4, a5));
}

long cssi_fcntl_int(int fd, int cmd, int arg) { return neg_errno(fcntl(fd, cmd, arg)); }
long cssi_ioctl_long(int fd, unsigned long request, unsigned long arg) { return neg_errno(ioctl(fd, request, arg)); }
long cssi_unshare_fs(void) { return neg_errno(unshare(CLONE_FS)); }
long cssi_unshare_net(void) { return neg_errno(unshare(CLONE_NEWNET)); }
long cssi_setns(int fd, int nstype) { return neg_errno(setns(fd, nstype)); }

static long if_request(const char *name, unsigned long request, struct ifreq *r) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    memset(r->ifr_name, 0, sizeof r->ifr_name);
    strncpy(r->ifr_name, name, sizeof r->ifr_name - 1);
    long ret = neg_errno(ioctl(s, request, r));
    close(s);
    return ret;
}

long cssi_if_flags(const char *name) {
    struct ifreq r;
    memset(&r, 0, sizeof r);
    long ret = if_request(name, SIOCGIFFLAGS, &r);
    return ret < 0 ? ret : (long)(unsigned short)r.ifr_flags;
}

long cssi_if_set_flags(const char *name, unsigned int flags) {
    struct ifreq r;
    memset(&r, 0, sizeof r);
    r.ifr_flags = (short)flags;
    return if_request(name, SIOCSIFFLAGS, &r);
}

// Sets the hardware address of Ethernet interface `name` (SIOCSIFHWADDR, netdevice(7)).
long cssi_if_set_mac(const char *name, const unsigned char mac[6]) {
    struct ifreq r;
    memset(&r, 0, sizeof r);
    r.ifr_hwaddr.sa_family = 1; // ARPHRD_ETHER
    memcpy(r.ifr_hwaddr.sa_data, mac, 6);
    return if_request(name, SIOCSIFHWADDR, &r);
}

// Hands an Ethernet address from one interface to another, possibly in two network
// namespaces: `app_if` (through socket `app_sock`, made in its namespace) takes `app_new`,
// then `node_if` (through `node_sock`) takes `node_new`, two ioctls back to back with no
// system call between (netdevice(7) SIOCSIFHWADDR; an ioctl on a socket acts in the
// namespace the socket was made in). 0, or -errno with the step: -(1000 * step + errno).
long cssi_swap_mac(int app_sock, const char *app_if, const unsigned char app_new[6],
                   int node_sock, const char *node_if, const unsigned char node_new[6]) {
    struct ifreq a, n;
    memset(&a, 0, sizeof a);
    memset(&n, 0, sizeof n);
    strncpy(a.ifr_name, app_if, IFNAMSIZ - 1);
    strncpy(n.ifr_name, node_if, IFNAMSIZ - 1);
    a.ifr_hwaddr.sa_family = 1; // ARPHRD_ETHER
    n.ifr_hwaddr.sa_family = 1;
    memcpy(a.ifr_hwaddr.sa_data, app_new, 6);
    memcpy(n.ifr_hwaddr.sa_data, node_new, 6);
    if (ioctl(app_sock, SIOCSIFHWADDR, &a) != 0) return -(1000 + errno);
    if (ioctl(node_sock, SIOCSIFHWADDR, &n) != 0) return -(2000 + errno);
    return 0;
}

long cssi_socket_netns(int fd) {
    int ns = ioctl(fd, SIOCGSKNS);
    if (ns < 0) return -errno;
    struct stat st;
    long ret = fstat(ns, &st) == 0 ? (long)st.st_ino : -errno;
    close(ns);
    return ret;
}
long cssi_fanotify_init(unsigned int flags, unsigned int event_f_flags) { return neg_errno(fanotify_init(flags, event_f_flags)); }
long cssi_fanotify_mark(int fd, unsigned int flags, uint64_t mask, int dirfd, const char *path) {
    return neg_errno(fanotify_mark(fd, flags, mask, dirfd, path));
}

long cssi_get_robust_list(pid_t pid, uint64_t *head, uint64_t *len) {
    void *h = NULL;
    size_t l = 0;
    long r = neg_errno(syscall(SYS_get_robust_list, pid, &h, &l));
    if (r >= 0) { *head = (uint64_t)(uintptr_t)h; *len = l; }
    return r;
}

long cssi_prlimit(pid_t pid, int resource, const uint64_t *newlim, uint64_t *oldlim) {
    struct rlimit64 n, o;
    if (newlim) { n.rlim_cur = newlim[0]; n.rlim_max = newlim[1]; }
    long r = neg_errno(syscall(SYS_prlimit64, pid, resource, newlim ? &n : NULL, oldlim ? &o : NULL));
    if (r >= 0 && oldlim) { oldlim[0] = o.rlim_cur; oldlim[1] = o.rlim_max; }
    return r;
}

long cssi_pidfd_open(pid_t pid) { return neg_errno(syscall(SYS_pidfd_open, pid, 0)); }
long cssi_pidfd_open_thread(pid_t tid) { return neg_errno(syscall(SYS_pidfd_open, tid, O_EXCL /* PIDFD_THREAD, Linux 6.9 */)); }

long cssi_process_vm_readv(pid_t pid, const struct iovec *l, unsigned long nl,
                           const struct iovec *r, unsigned long nr) {
    return neg_errno(syscall(SYS_process_vm_readv, pid, l, nl, r, nr, 0UL));
}

long cssi_process_vm_writev(pid_t pid, const struct iovec *l, unsigned long nl,
                            const struct iovec *r, unsigned long nr) {
    return neg_errno(syscall(SYS_process_vm_writev, pid, l, nl, r, nr, 0UL));
}

long cssi_tee(int fdin, int fdout, size_t len, unsigned int flags) {
    return neg_errno(tee(fdin, fdout, len, flags));
}

long cssi_kcmp(pid_t pid1, pid_t pid2, int type, unsigned long idx1, unsigned long idx2) {
    return neg_errno(syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2));
}

long cssi_memfd_create(const char *name, unsigned int flags) { return neg_errno(syscall(SYS_memfd_create, name, flags)); }

long cssi_open_by_handle_at(int mount_fd, const void *handle, int flags) {
    return neg_errno(syscall(SYS_open_by_handle_at, mount_fd, handle, flags));
}

long cssi_pidfd_getfd(int pidfd, int targetfd) { return neg_errno(syscall(SYS_pidfd_getfd, pidfd, targetfd, 0)); }

int cssi_errno(void) { return errno; }

long cssi_pipe2(int fds[2], int flags) { return neg_errno(pipe2(fds, flags)); }

// <linux/sched.h> struct clone_args (v2, with set_tid and cgroup: Linux 5.7), copied by hand
// because the installed uapi headers may predate it.
struct cssi_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};
_Static_assert(sizeof(struct cssi_clone_args) == 88, "clone_args v2 layout");

// A raw clone3 without CLONE_VM behaves like fork: the child continues here on a copy of the
// stack. glibc's caches (the cached TID in the thread descriptor) are stale in the child, so
// the child below only uses raw syscalls until it execs or stops.
static long raw_clone3(struct cssi_clone_args *args) {
    return syscall(SYS_clone3, args, sizeof(*args));
}

#if defined(__x86_64__)
// clone3(2) with CLONE_VM: the child starts on args->stack (the kernel sets its stack pointer
// to stack + stack_size) with our registers, so it must not return into our frames; it calls
// fn(arg) there and exits with its result. The syscall instruction keeps every register but
// rax, rcx and r11 (the kernel's entry code), so fn and arg reach the child in r12 and r13.
#define CSSI_HAVE_CLONE3_VM 1
static long clone3_vm(struct cssi_clone_args *args, int (*fn)(void *), void *arg) {
    long ret;
    register void *f asm("r12") = (void *)fn;
    register void *a asm("r13") = arg;
    asm volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "mov %%r13, %%rdi\n\t"
        "call *%%r12\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t"      /* exit(2): this task alone */
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(args), "S"(sizeof(*args)), "r"(f), "r"(a)
        : "rcx", "r11", "memory");
    return ret;
}

// A child that shares our memory until its exec (CLONE_VM) and with us suspended until
// then (CLONE_VFORK), as posix_spawn does: a plain fork copies the page tables of the whole
// caller (ssid: 80 MB resident; 3.4-7 ms from the fork to a small program's first stop,
// against 0.4-0.6 ms for a small caller) and the exec tears the copy down again. fn(arg)
// runs on a stack in this frame, which lives until the child has exec'd or exited; every
// signal is blocked meanwhile, so that none of our handlers runs on that stack (the child
// inherits the full mask and sets its own). Returns the child's PID or -errno.
static long clone3_vfork(struct cssi_clone_args *args, int (*fn)(void *), void *arg) {
    enum { stack_size = 64 * 1024 };
    char stack[stack_size] __attribute__((aligned(16)));
    args->flags |= CLONE_VM | CLONE_VFORK;
    args->stack = (uint64_t)(uintptr_t)stack;
    args->stack_size = stack_size;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long r = clone3_vm(args, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, 0);
    return r;
}
#endif

// The child's side of one stdio slot: an fd of ours above 2 holding what slot i becomes
// (close-on-exec, so that it goes at exec), -1 for inherit/stdout, or -errno.
static int stdio_source(const struct cssi_spawn_stdio *s) {
    int fd = -1;
    if (s->kind == CSSI_STDIO_FD) fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 3);
    else if (s->kind == CSSI_STDIO_PATH) {
        fd = open(s->path, s->flags | O_CLOEXEC, 0644);
        // With our own 0-2 closed, open returns one of them; keep it out of the way of the
        // dup2s below.
        if (fd >= 0 && fd < 3) { int up = fcntl(fd, F_DUPFD_CLOEXEC, 3); close(fd); fd = up; }
    } else return -1;
    return fd < 0 ? -errno : fd;
}

// Runs in the child after clone3: returns only on failure, with the errno to report.
static int spawn_child(char *const argv[], const struct cssi_spawn_options *o) {
    // The parent may run with signals blocked on its calling thread; a program starts with
    // an empty mask and default dispositions (signal(7): both survive exec). Dispositions
    // first: sharing the parent's memory (CLONE_VM), a handler of its must never run here.
    for (int s = 1; s < 65; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigaction(s, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(uint64_t));
    // Every source is opened before any slot is replaced, so that an explicit fd 0-2 of ours
    // is read before being overwritten.
    int src[3];
    for (int i = 0; i < 3; i++) {
        src[i] = stdio_source(&o->stdio[i]);
        if (src[i] < -1) return -src[i];
    }
    for (int i = 0; i < 3; i++) if (src[i] >= 0 && dup2(src[i], i) < 0) return errno;
    for (int i = 0; i < 3; i++) if (o->stdio[i].kind == CSSI_STDIO_STDOUT && dup2(1, i) < 0) return errno;
    // dup2(2) clears close-on-exec on the copy; an fd already at 3 keeps its flag, cleared here.
    if (o->pass_fd >= 0) {
        if (o->pass_fd == 3) { if (fcntl(3, F_SETFD, 0) != 0) return errno; }
        else if (dup2(o->pass_fd, 3) < 0) return errno;
    }
    if (o->directory && chdir(o->directory) != 0) return errno;
    // Descriptors the caller happened to inherit (a CI runner's pipes...) would become part
    // of the program; mark every fd above stderr close-on-exec (close_range(2)
    // CLOSE_RANGE_CLOEXEC, Linux 5.11) so that only 0-2 reach it, while the error pipe stays
    // usable until exec.
    if (!o->keep_fds) syscall(SYS_close_range, o->pass_fd >= 0 ? 4U : 3U, ~0U, (unsigned int)(1U << 2));
    if (o->new_session && syscall(SYS_setsid) < 0) return errno;
    // The nice value is per thread and copied at clone (setpriority(2)): a program the daemon
    // starts would otherwise run at the daemon's own.
    if (o->set_nice && syscall(SYS_setpriority, PRIO_PROCESS, 0, o->nice) < 0) return errno;
    execvpe(argv[0], argv, o->envp ? o->envp : environ);
    return errno;
}

struct spawn_child_args {
    char *const *argv;
    const struct cssi_spawn_options *o;
    int error_fd;
};

// spawn_child on the stack of a CLONE_VM child: its failure goes down the error pipe (the
// read end is closed by the parent after the clone returns, once the child exec'd or exited).
static int spawn_child_vm(void *p) {
    const struct spawn_child_args *a = p;
    int e = spawn_child(a->argv, a->o);
    (void)!write(a->error_fd, &e, sizeof(e));
    syscall(SYS_exit_group, 127);
    return 127;
}

pid_t cssi_spawn(char *const argv[], const struct cssi_spawn_options *o) {
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) return -errno;
    // The child writes an exec failure to pfd[1]: keep it clear of fd 3, which pass_fd takes.
    for (int k = 0; k < 2; k++) {
        if (pfd[k] > 3) continue;
        int moved = fcntl(pfd[k], F_DUPFD_CLOEXEC, 10);
        if (moved < 0) { int e = errno; close(pfd[0]); close(pfd[1]); return -e; }
        close(pfd[k]);
        pfd[k] = moved;
    }
    struct cssi_clone_args args;
    memset(&args, 0, sizeof(args));
    args.exit_signal = SIGCHLD;
    // clone(2) CLONE_PARENT: the child's parent is our parent, which reaps it when it exits
    // (a shell does), instead of whichever subreaper or init inherits it once we are gone.
    // clone3 then wants exit_signal 0: the child inherits ours (kernel/fork.c,
    // clone3_args_valid), which is what our parent expects of its children.
    if (o->sibling) { args.flags |= CLONE_PARENT; args.exit_signal = 0; }
    if (o->cgroup_fd >= 0) { args.flags |= CLONE_INTO_CGROUP; args.cgroup = (uint64_t)o->cgroup_fd; }
    args.flags |= o->namespaces;
#if defined(CSSI_HAVE_CLONE3_VM)
    // Not a fork of the caller (clone3_vfork): every ip and nft a migration runs, and every
    // application ssid starts, would copy the daemon's page tables.
    struct spawn_child_args child = {argv, o, pfd[1]};
    long pid = clone3_vfork(&args, spawn_child_vm, &child);
    if (pid < 0) { close(pfd[0]); close(pfd[1]); return (pid_t)pid; }
#else
    long pid = raw_clone3(&args);
    if (pid < 0) { int e = errno; close(pfd[0]); close(pfd[1]); return -e; }
    if (pid == 0) {
        close(pfd[0]);
        int e = spawn_child(argv, o);
        (void)!write(pfd[1], &e, sizeof(e));
        syscall(SYS_exit_group, 127);
    }
#endif
    close(pfd[1]);
    int child_errno = 0;
    ssize_t n;
    do { n = read(pfd[0], &child_errno, sizeof(child_errno)); } while (n < 0 && errno == EINTR);
    close(pfd[0]);
    if (n == sizeof(child_errno)) {
        // A sibling is our parent's to reap, not ours.
        int st;
        if (!o->sibling) while (waitpid((pid_t)pid, &st, 0) < 0 && errno == EINTR) {}
        return -child_errno;
    }
    return (pid_t)pid;
}

struct shell_child {
    unsigned long long flags;
    const char *stub;
    int keep_fd;
    char *const *argv, *const *envp;
};

// The restore shell's side until its execve, on either path below: syscall(2) only, no
// allocation (a copy of a multithreaded process, or a child sharing our memory). Returns
// 126 if the mount namespace could not be set up, 127 if the stub could not be run (or
// there is none).
static int shell_enter(const struct shell_child *c) {
    if (c->flags & CLONE_NEWNS) {
        // mount_namespaces(7): the copy shares propagation with the node's mounts; a slave
        // keeps our /proc from showing up there. proc(5): the instance shows the PID
        // namespace of the mounter, i.e. this new one.
        if (syscall(SYS_mount, 0, "/", 0, MS_SLAVE | MS_REC, 0) != 0 ||
            syscall(SYS_mount, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, 0) != 0)
            return 126;
    }
    syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
    if (!c->stub || !c->stub[0]) return 127;
    // The restorer's pidfd stays open across the exec (pidfd_open(2) sets close-on-exec).
    if (c->keep_fd >= 0) syscall(SYS_fcntl, c->keep_fd, F_SETFD, 0);
    // The stop after the exec is a SIGTRAP: a blocked one would never stop the stub.
    uint64_t trap = 1ull << (SIGTRAP - 1);
    syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &trap, 0, sizeof(trap));
    // A traced process stops with SIGTRAP after a successful execve (ptrace(2), without
    // PTRACE_O_TRACEEXEC), before the stub runs an instruction: a small static program has
    // a few mappings to tear down instead of the hundreds of ours.
    syscall(SYS_execve, c->stub, c->argv, c->envp);
    return 127;
}

#if defined(CSSI_HAVE_CLONE3_VM)
// Sharing our memory, it can only end (the restore reports the exit): it must never stop
// as a copy of us, which it is not.
static int shell_child_vm(void *p) { return shell_enter(p); }
#endif

// The shell a restored process starts as: PID `pid` (in the innermost PID namespace, which
// `flags` may make new), born in the cgroup, stopped for the restorer under PTRACE_TRACEME.
static pid_t restore_shell(pid_t pid, int cgroup_fd, unsigned long long flags, const char *stub, int keep_fd,
                           char *const *given_argv, char *const *given_envp) {
    struct cssi_clone_args args;
    memset(&args, 0, sizeof(args));
    pid_t tid = pid;
    args.exit_signal = SIGCHLD;
    args.flags = flags;
    args.set_tid = (uint64_t)(uintptr_t)&tid;
    args.set_tid_size = 1;
    if (cgroup_fd >= 0) { args.flags |= CLONE_INTO_CGROUP; args.cgroup = (uint64_t)cgroup_fd; }
    // Prepared before the clone: the child of a multithreaded process may only make
    // async-signal-safe calls (fork(2)), and execve is one.
    char *const argv[] = {(char *)stub, (char *)"--restore-stub", 0};
    char *const envp[] = {0};
    struct shell_child c = {flags, stub, keep_fd, given_argv ? given_argv : argv, given_envp ? given_envp : envp};
#if defined(CSSI_HAVE_CLONE3_VM)
    // With a stub, not a fork of the daemon (clone3_vfork): inside a migration's freeze.
    if (stub && stub[0]) return (pid_t)clone3_vfork(&args, shell_child_vm, &c);
#endif
    long r = raw_clone3(&args);
    if (r < 0) return -errno;
    if (r == 0) {
        if (shell_enter(&c) == 126) for (;;) syscall(SYS_exit_group, 126);
        // No stub, or it could not be run: the copy of ourselves stops instead.
        syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);
        // Only reached if the restorer let go without taking over: never run the copy of
        // the restorer's own code.
        for (;;) syscall(SYS_exit_group, 127);
    }
    return (pid_t)r;
}

pid_t cssi_spawn_restore_shell(pid_t pid, int cgroup_fd, const char *stub, int keep_fd) {
    return restore_shell(pid, cgroup_fd, 0, stub, keep_fd, 0, 0);
}

pid_t cssi_spawn_restore_ns_shell(pid_t pid, int cgroup_fd, unsigned long long namespaces, const char *stub, int keep_fd,
                                  char *const *argv, char *const *envp) {
    return restore_shell(pid, cgroup_fd, CLONE_NEWPID | namespaces, stub, keep_fd, argv, envp);
}

static uint32_t crc32c_mulmod(uint32_t a, uint32_t b);

// The three-lane CRC below: each lane is CSSI_CRC_LANE bytes, and x^(8 * CSSI_CRC_LANE)
// modulo the polynomial (bit-reflected) moves a lane's CRC register past the lanes after it.
// The constant is what cssi_crc32c_combine computes for that length (checked by
// SnapshotStoreTests against a bit-by-bit CRC).
#define CSSI_CRC_LANE 8192
#define CSSI_CRC_LANE_SHIFT 0x28461564u

uint32_t cssi_crc32c(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); len--; }
    // The crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle: one
    // dependent stream runs at a third of the speed the unit allows. Three independent
    // lanes (three consecutive blocks of the buffer) keep it busy, and their registers are
    // joined by the linearity of the CRC: reg(A|B) = reg(A) * x^(8|B|) + reg_from_0(B). On a
    // buffer in cache (the 8 MiB batches of a dump) this is 2-3x faster.
    while (len >= 3 * CSSI_CRC_LANE) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < CSSI_CRC_LANE; i += 8) {
            uint64_t a, b, d;
            memcpy(&a, p + i, 8); memcpy(&b, p + CSSI_CRC_LANE + i, 8); memcpy(&d, p + 2 * CSSI_CRC_LANE + i, 8);
            c = _mm_crc32_u64(c, a);
            c1 = _mm_crc32_u64(c1, b);
            c2 = _mm_crc32_u64(c2, d);
        }
        c = crc32c_mulmod(CSSI_CRC_LANE_SHIFT, crc32c_mulmod(CSSI_CRC_LANE_SHIFT, (uint32_t)c) ^ (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * CSSI_CRC_LANE; len -= 3 * CSSI_CRC_LANE;
    }
    while (len >= 8) { uint64_t a; memcpy(&a, p, 8); c = _mm_crc32_u64(c, a); p += 8; len -= 8; }
    while (len) { c = _mm_crc32_u8((uint32_t)c, *p++); len--; }
    return ~(uint32_t)c;
}


// CRC arithmetic in GF(2)[x] modulo the Castagnoli polynomial, in the bit-reflected form the
// CRC uses (bit 31 is x^0). Appending n zero bytes to a message multiplies its CRC register
// by x^(8n); the pre- and post-inversion of the CRC cancel out in crc(A|B) = crc(A)*x^(8|B|)
// + crc(B), so two CRCs combine with one multiplication.
#define CSSI_CRC32C_POLY 0x82f63b78u

static uint32_t crc32c_mulmod(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t bit = 1u << 31; bit; bit >>= 1) {
        if (a & bit) product ^= b;
        b = (b & 1) ? (b >> 1) ^ CSSI_CRC32C_POLY : b >> 1;
    }
    return product;
}

// x^(8 len) mod P, by square-and-multiply from x^8 (what combine shifts crc_a by).
static uint32_t crc32c_shift(uint64_t len) {
    uint32_t power = 1u << 31, square = 1u << 23;
    for (uint64_t n = len; n; n >>= 1) {
        if (n & 1) power = crc32c_mulmod(power, square);
        square = crc32c_mulmod(square, square);
    }
    return power;
}

// Multiplication by a constant modulo P is linear in the other factor, so it is four table
// lookups (one per byte) instead of 32 conditional steps: for a pages file of a quarter of a
// million pages taken from the pool by their hashes, 2 ms instead of 50.
static uint32_t crc_tab_quarter[4][256], crc_tab_half[4][256], crc_tab_whole[4][256];
static pthread_once_t crc_tabs_once = PTHREAD_ONCE_INIT;

static void crc_tabs_build(void) {
    const uint32_t quarter = crc32c_shift(1024), half = crc32c_shift(2048), whole = crc32c_shift(4096);
    for (int j = 0; j < 4; j++)
        for (uint32_t v = 0; v < 256; v++) {
            crc_tab_quarter[j][v] = crc32c_mulmod(quarter, v << (8 * j));
            crc_tab_half[j][v] = crc32c_mulmod(half, v << (8 * j));
            crc_tab_whole[j][v] = crc32c_mulmod(whole, v << (8 * j));
        }
}

static inline uint32_t crc_tab_mul(uint32_t t[4][256], uint32_t x) {
    return t[0][x & 0xff] ^ t[1][(x >> 8) & 0xff] ^ t[2][(x >> 16) & 0xff] ^ t[3][x >> 24];
}

// One page's hash: four independent lanes of 1024 bytes (the crc32 instruction's latency
// is 3 cycles, its throughput 1 per cycle: two dependent streams ran at two thirds of the
// unit), each half's two lanes joined by the CRC's linearity, reg(A|B) = reg(A) x^(8|B|) +
// reg_from_0(B); the result is the same CRC-32C of each half as one stream gives.
static inline uint64_t crc_page_hash(const unsigned char *p) {
    uint64_t a0 = 0xffffffffu, a1 = 0, b0 = 0xffffffffu, b1 = 0;
    for (size_t i = 0; i < 1024; i += 8) {
        uint64_t w, x, y, z;
        memcpy(&w, p + i, 8); memcpy(&x, p + 1024 + i, 8); memcpy(&y, p + 2048 + i, 8); memcpy(&z, p + 3072 + i, 8);
        a0 = _mm_crc32_u64(a0, w);
        a1 = _mm_crc32_u64(a1, x);
        b0 = _mm_crc32_u64(b0, y);
        b1 = _mm_crc32_u64(b1, z);
    }
    uint32_t ca = ~(crc_tab_mul(crc_tab_quarter, (uint32_t)a0) ^ (uint32_t)a1);
    uint32_t cb = ~(crc_tab_mul(crc_tab_quarter, (uint32_t)b0) ^ (uint32_t)b1);
    return (uint64_t)ca << 32 | cb;
}

uint64_t cssi_crc32c_page_hash(const void *page) {
    pthread_once(&crc_tabs_once, crc_tabs_build);
    return crc_page_hash(page);
}

uint32_t cssi_crc32c_pages(uint32_t crc, const void *buf, size_t pages, uint64_t *hashes) {
    pthread_once(&crc_tabs_once, crc_tabs_build);
    const unsigned char *p = buf;
    for (size_t k = 0; k < pages; k++, p += 4096) {
        uint64_t h = crc_page_hash(p);
        hashes[k] = h;
        crc = crc_tab_mul(crc_tab_whole, crc) ^ crc_tab_mul(crc_tab_half, (uint32_t)(h >> 32)) ^ (uint32_t)h;
    }
    return crc;
}

uint32_t cssi_crc32c_from_hashes(uint32_t crc, const uint64_t *hashes, size_t pages) {
    pthread_once(&crc_tabs_once, crc_tabs_build);
    for (size_t k = 0; k < pages; k++) {
        uint32_t ca = (uint32_t)(hashes[k] >> 32), cb = (uint32_t)hashes[k];
        crc = crc_tab_mul(crc_tab_whole, crc) ^ crc_tab_mul(crc_tab_half, ca) ^ cb;
    }
    return crc;
}

uint32_t cssi_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
    // x^(8 len_b) by square-and-multiply: square holds x^(2^k), starting from x^8.
    uint32_t power = 1u << 31;          // x^0
    uint32_t square = 1u << 23;         // x^8
    for (uint64_t n = len_b; n; n >>= 1) {
        if (n & 1) power = crc32c_mulmod(power, square);
        square = crc32c_mulmod(square, square);
    }
    return crc32c_mulmod(power, crc_a) ^ crc_b;
}

// ---- sockets --------------------------------------------------------------------------------

long cssi_send_with_fds(int sock, const void *addr, unsigned addrlen, const void *buf, unsigned long len, const int *fds, int n) {
    return cssi_send_with_creds(sock, addr, addrlen, buf, len, fds, n, NULL);
}

long cssi_send_with_creds(int sock, const void *addr, unsigned addrlen, const void *buf, unsigned long len, const int *fds, int n,
                          const unsigned *cred) {
    if (n < 0 || n > 253) return -EINVAL;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union { struct cmsghdr align; char buf[CMSG_SPACE(253 * sizeof(int)) + CMSG_SPACE(3 * sizeof(unsigned))]; } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = { .msg_name = (void *)addr, .msg_namelen = addr ? addrlen : 0, .msg_iov = &iov, .msg_iovlen = 1 };
    if (n > 0 || cred) {
        m.msg_control = u.buf;
        m.msg_controllen = (n > 0 ? CMSG_SPACE(n * sizeof(int)) : 0) + (cred ? CMSG_SPACE(3 * sizeof(unsigned)) : 0);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        if (n > 0) {
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(n * sizeof(int));
            memcpy(CMSG_DATA(c), fds, n * sizeof(int));
            c = CMSG_NXTHDR(&m, c);
        }
        if (cred) {
            // struct ucred: pid, uid, gid. Another process's PID needs CAP_SYS_ADMIN, other
            // ids CAP_SETUID/CAP_SETGID (unix(7), SCM_CREDENTIALS).
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_CREDENTIALS;
            c->cmsg_len = CMSG_LEN(3 * sizeof(unsigned));
            memcpy(CMSG_DATA(c), cred, 3 * sizeof(unsigned));
        }
    }
    ssize_t r = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    return r < 0 ? -errno : r;
}

long cssi_recv_with_fds(int sock, void *buf, unsigned long len, int *fds, int *nfds) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { struct cmsghdr align; char buf[CMSG_SPACE(3 * sizeof(int))]; } u;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    *nfds = 0;
    ssize_t r;
    do { r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC); } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        // unix(7): fds beyond what the control buffer holds are closed by the kernel
        // (MSG_CTRUNC); we keep at most 3.
        for (int i = 0; i < n && *nfds < 3; i++) memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    return r;
}

long cssi_peek_message(int sock, void *buf, unsigned long len, void *name, unsigned *namelen, int *fds, int *nfds, unsigned *cred) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { struct cmsghdr align; char buf[CMSG_SPACE(253 * sizeof(int)) + 256]; } u;
    struct msghdr m = { .msg_name = name, .msg_namelen = name ? *namelen : 0, .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    *nfds = 0;
    if (cred) cred[0] = cred[1] = cred[2] = 0;
    ssize_t r = recvmsg(sock, &m, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (r < 0) return -errno;
    if (name) *namelen = m.msg_namelen;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (cred && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) memcpy(cred, CMSG_DATA(c), 3 * sizeof(unsigned));
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *in = (int *)CMSG_DATA(c);
            for (int i = 0; i < count; i++) {
                if (*nfds >= 0 && *nfds < 253) fds[(*nfds)++] = in[i]; else close(in[i]);
            }
        }
    }
    if (m.msg_flags & MSG_CTRUNC) { for (int i = 0; i < *nfds; i++) close(fds[i]); *nfds = -1; }
    return r;
}

long cssi_peek_datagram(int sock, void *buf, unsigned long len, void *name, unsigned *namelen, struct cssi_packet_info *info) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { struct cmsghdr align; char buf[512]; } u;
    struct msghdr m = { .msg_name = name, .msg_namelen = name ? *namelen : 0, .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    memset(info, 0, sizeof *info);
    info->ttl = info->tos = -1;
    ssize_t r = recvmsg(sock, &m, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0) return -errno;
    if (name) *namelen = m.msg_namelen;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo p; memcpy(&p, CMSG_DATA(c), sizeof p);
            memcpy(info->dst, &p.ipi_addr, 4); info->dst_len = 4;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo p; memcpy(&p, CMSG_DATA(c), sizeof p);
            memcpy(info->dst, &p.ipi6_addr, 16); info->dst_len = 16;
        } else if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) || (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)) {
            memcpy(&info->ttl, CMSG_DATA(c), sizeof(int));
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
            info->tos = *(unsigned char *)CMSG_DATA(c);
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
            memcpy(&info->tos, CMSG_DATA(c), sizeof(int));
        }
    }
    return r;
}

long cssi_send_datagram(int sock, const void *addr, unsigned addrlen, const void *buf, unsigned long len, int v6, int ttl, int tos) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union { struct cmsghdr align; char buf[2 * CMSG_SPACE(sizeof(int))]; } u;
    memset(&u, 0, sizeof u);
    struct msghdr m = { .msg_name = (void *)addr, .msg_namelen = addrlen, .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = u.buf, .msg_controllen = 0 };
    struct cmsghdr *c = (struct cmsghdr *)u.buf;
    // ip(7): IP_TTL and IP_TOS are taken as ints in a send's ancillary data; ipv6(7) the same
    // for IPV6_HOPLIMIT and IPV6_TCLASS.
    int values[2] = { ttl, tos };
    int types[2] = { v6 ? IPV6_HOPLIMIT : IP_TTL, v6 ? IPV6_TCLASS : IP_TOS };
    for (int i = 0; i < 2; i++) {
        if (values[i] < 0) continue;
        c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
        c->cmsg_type = types[i];
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &values[i], sizeof(int));
        m.msg_controllen += CMSG_SPACE(sizeof(int));
        c = (struct cmsghdr *)((char *)c + CMSG_SPACE(sizeof(int)));
    }
    if (m.msg_controllen == 0) m.msg_control = NULL;
    ssize_t r = sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    return r < 0 ? -errno : r;
}

long cssi_punch_hole(int fd, long long offset, long long len) {
    return neg_errno(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len));
}

long cssi_fs_type(const char *path) {
    struct statfs s;
    return statfs(path, &s) == 0 ? (long)s.f_type : -errno;
}

long cssi_rt_sigqueueinfo(int tgid, int sig, const void *info) { return neg_errno(syscall(SYS_rt_sigqueueinfo, tgid, sig, info)); }
long cssi_rt_tgsigqueueinfo(int tgid, int tid, int sig, const void *info) { return neg_errno(syscall(SYS_rt_tgsigqueueinfo, tgid, tid, sig, info)); }

int cssi_tun_open(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq r;
    memset(&r, 0, sizeof r);
    r.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(r.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &r) < 0) { int e = errno; close(fd); return -e; }
    return fd;
}

static void add_attr(char *msg, unsigned short type, const void *data, unsigned short len) {
    struct nlmsghdr *n = (struct nlmsghdr *)msg;
    struct rtattr *a = (struct rtattr *)(msg + NLMSG_ALIGN(n->nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    memcpy(RTA_DATA(a), data, len);
    n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static int netlink_route_request(struct nlmsghdr *n);

int cssi_route4_replace(uint32_t dst, int oif, uint32_t gw, uint32_t src, unsigned char proto) {
    return cssi_route4_replace_prefix(dst, 32, oif, gw, src, proto);
}

int cssi_route4_replace_prefix(uint32_t dst, unsigned char prefix, int oif, uint32_t gw, uint32_t src, unsigned char proto) {
    char msg[256] __attribute__((aligned(NLMSG_ALIGNTO)));
    memset(msg, 0, sizeof msg);
    struct nlmsghdr *n = (struct nlmsghdr *)msg;
    struct rtmsg *r = (struct rtmsg *)NLMSG_DATA(n);
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    n->nlmsg_type = RTM_NEWROUTE;
    n->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    n->nlmsg_seq = 1;
    r->rtm_family = AF_INET;
    r->rtm_dst_len = prefix;
    r->rtm_table = RT_TABLE_MAIN;
    r->rtm_protocol = proto;
    r->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    r->rtm_type = RTN_UNICAST;
    add_attr(msg, RTA_DST, &dst, 4);
    if (oif > 0) add_attr(msg, RTA_OIF, &oif, 4);
    if (gw) add_attr(msg, RTA_GATEWAY, &gw, 4);
    if (src) add_attr(msg, RTA_PREFSRC, &src, 4);
    return netlink_route_request(n);
}

int cssi_link_delete(int ifindex) {
    // RTM_DELLINK names the link by index alone (rtnetlink(7)): a link of the same name
    // made since (another index) is not touched.
    char msg[128] __attribute__((aligned(NLMSG_ALIGNTO)));
    memset(msg, 0, sizeof msg);
    struct nlmsghdr *n = (struct nlmsghdr *)msg;
    struct ifinfomsg *i = (struct ifinfomsg *)NLMSG_DATA(n);
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    n->nlmsg_type = RTM_DELLINK;
    n->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    n->nlmsg_seq = 1;
    i->ifi_family = AF_UNSPEC;
    i->ifi_index = ifindex;
    return netlink_route_request(n);
}

static int netlink_route_request(struct nlmsghdr *n) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) return -errno;
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    if (sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) { int e = errno; close(fd); return -e; }
    // The kernel answers with an NLMSG_ERROR whose error is 0 on success (NLM_F_ACK).
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) { if (errno == EINTR) continue; int e = errno; close(fd); return -e; }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_ERROR) {
                int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
                close(fd);
                return err;
            }
        }
    }
}

int cssi_get_nice(int tid, int *nice) {
    // getpriority(2) may return -1 as a value: errno alone tells a failure.
    errno = 0;
    int n = getpriority(PRIO_PROCESS, tid);
    if (errno) return -errno;
    *nice = n;
    return 0;
}

int cssi_set_nice(int tid, int nice) { return setpriority(PRIO_PROCESS, tid, nice) ? -errno : 0; }

int cssi_get_policy(int tid, int *policy, int *priority) {
    int p = sched_getscheduler(tid);
    if (p < 0) return -errno;
    struct sched_param sp;
    if (sched_getparam(tid, &sp)) return -errno;
    *policy = p;
    *priority = sp.sched_priority;
    return 0;
}

int cssi_set_policy(int tid, int policy, int priority) {
    struct sched_param sp = { .sched_priority = priority };
    return sched_setscheduler(tid, policy, &sp) ? -errno : 0;
}

// SCHED_DEADLINE's parameters go through sched_getattr(2)/sched_setattr(2) only (no glibc
// wrapper before 2.41): struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes).
struct cssi_sched_attr {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
};

int cssi_get_deadline(int tid, unsigned long long out[4]) {
    struct cssi_sched_attr a;
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, tid, &a, (unsigned)sizeof a, 0) != 0) return -errno;
    out[0] = a.sched_runtime; out[1] = a.sched_deadline; out[2] = a.sched_period; out[3] = a.sched_flags;
    return 0;
}

int cssi_set_deadline(int tid, unsigned long long runtime, unsigned long long deadline, unsigned long long period, unsigned long long flags) {
    struct cssi_sched_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.sched_policy = 6;   // SCHED_DEADLINE
    a.sched_flags = flags;
    a.sched_runtime = runtime; a.sched_deadline = deadline; a.sched_period = period;
    return syscall(SYS_sched_setattr, tid, &a, 0) ? -errno : 0;
}

int cssi_get_affinity(int tid, unsigned long long *mask, int words) {
    memset(mask, 0, (size_t)words * 8);
    return sched_getaffinity(tid, (size_t)words * 8, (cpu_set_t *)mask) ? -errno : 0;
}

int cssi_set_affinity(int tid, const unsigned long long *mask, int words) {
    return sched_setaffinity(tid, (size_t)words * 8, (const cpu_set_t *)mask) ? -errno : 0;
}

int cssi_current_cpu(void) { int c = sched_getcpu(); return c < 0 ? -errno : c; }

long cssi_gettid(void) { return syscall(SYS_gettid); }

int cssi_heap_thresholds(int mmap_threshold, int trim_threshold, int arenas) {
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) && mallopt(M_TRIM_THRESHOLD, trim_threshold)
        && (arenas <= 0 || mallopt(M_ARENA_MAX, arenas));
}

int cssi_get_ioprio(int tid) { long r = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, tid); return r < 0 ? -errno : (int)r; }

int cssi_set_ioprio(int tid, int ioprio) { return syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, tid, ioprio) ? -errno : 0; }

// A gratuitous ARP request (RFC 5227 section 3, "ARP Announcement": sender and target
// protocol address both `ip`, target hardware address zero) broadcast from interface
// `ifname` of the calling thread's network namespace, with `mac` as the sender. A switch
// (or a bridge) learns from its source address on which port the MAC is now (an
// application's direct link after a move), and hosts that have the address in their
// neighbour table refresh it (arp(7): an existing entry is updated by any ARP it sees).
// packet(7): a SOCK_DGRAM packet socket builds the Ethernet header from sll_addr.
int cssi_announce_arp(const char *ifname, const unsigned char mac[6], uint32_t ip_be) {
    unsigned int index = if_nametoindex(ifname);
    if (index == 0) return -errno;
    int s = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (s < 0) return -errno;
    unsigned char frame[28];
    frame[0] = 0; frame[1] = 1;            // hardware type: Ethernet
    frame[2] = 0x08; frame[3] = 0x00;      // protocol type: IPv4
    frame[4] = 6; frame[5] = 4;            // address lengths
    frame[6] = 0; frame[7] = 1;            // operation: request
    memcpy(frame + 8, mac, 6);
    memcpy(frame + 14, &ip_be, 4);
    memset(frame + 18, 0, 6);
    memcpy(frame + 24, &ip_be, 4);
    struct sockaddr_ll to;
    memset(&to, 0, sizeof(to));
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_ARP);
    to.sll_ifindex = (int)index;
    to.sll_halen = 6;
    memset(to.sll_addr, 0xff, 6);
    int r = 0;
    for (int k = 0; k < 2; k++)
        if (sendto(s, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)sizeof(frame)) r = -errno;
    close(s);
    return r;
}

// A unix socket's peer credentials (SO_PEERCRED, unix(7)) are those of the process that
// called socketpair(2), listen(2) (for the clients that connect to it) or connect(2) (for
// the end accept(2) gives), taken then from the calling task: its thread group's PID, as the
// reader's PID namespace numbers it, and its effective uid and gid (cred_to_ucred). A
// restart makes the call in a short-lived child that shares our memory, fd table and cwd
// (CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_FS), in the application's PID namespace with
// the original caller's PID (set_tid; that PID is free while the application's processes are
// not yet forked) and its effective ids, and exits; the kernel keeps its PID number in the
// socket after it is reaped (pid_nr_ns does not look for a live task), and the PID is free
// again for the process that really has it.
static int creator_child(void *arg) {
    struct cssi_creator_call *c = arg;
    // Raw calls: glibc's setresuid would signal every thread of the process to change
    // theirs too (nptl's setxid), and they are our parent's threads.
    if (syscall(SYS_setresgid, c->gid, c->gid, c->gid) != 0 || syscall(SYS_setresuid, c->uid, c->uid, c->uid) != 0) {
        c->result = -errno;
        return 0;
    }
    long r;
    switch (c->op) {
    case CSSI_CREATOR_SOCKETPAIR: r = socketpair(AF_UNIX, c->type | SOCK_CLOEXEC, 0, c->sv); break;
    case CSSI_CREATOR_CONNECT: r = connect(c->fd, (const struct sockaddr *)c->addr, c->addrlen); break;
    case CSSI_CREATOR_LISTEN: r = listen(c->fd, c->backlog); break;
    case CSSI_CREATOR_SEND: {
        // A queued message sent again by its sender, naming itself in SCM_CREDENTIALS: the
        // kernel attaches a sender's credentials on its own only when the receiver has
        // SO_PASSCRED at that moment (maybe_add_creds, net/unix/af_unix.c), and the
        // receiver's options are set after its queue is refilled. Its own PID and ids need
        // no privilege (unix(7)).
        unsigned cred[3] = { (unsigned)syscall(SYS_getpid), c->uid, c->gid };
        c->result = cssi_send_with_creds(c->fd, c->addr, c->addrlen, c->buf, c->len, c->fds, c->nfds, cred);
        return 0;
    }
    default: errno = EINVAL; r = -1;
    }
    c->result = r < 0 ? -errno : 0;
    return 0;
}

long cssi_creator_call(int pidns_fd, pid_t pid, struct cssi_creator_call *c) {
#ifdef CSSI_HAVE_CLONE3_VM
    int back = -1;
    if (pidns_fd >= 0) {
        // setns(2) CLONE_NEWPID changes only where this thread's next children go; the
        // namespace we live in is where they go back to.
        back = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
        if (back < 0) return -errno;
        if (setns(pidns_fd, CLONE_NEWPID) != 0) { int e = errno; close(back); return -e; }
    }
    struct cssi_clone_args args;
    memset(&args, 0, sizeof(args));
    pid_t tid = pid;
    args.flags = CLONE_FILES | CLONE_FS;
    args.exit_signal = 0;   // no SIGCHLD for a daemon's reaper: reaped below with __WALL
    if (pid > 0) { args.set_tid = (uint64_t)(uintptr_t)&tid; args.set_tid_size = 1; }
    c->result = -ECHILD;
    long r = clone3_vfork(&args, creator_child, c);
    if (back >= 0) { setns(back, CLONE_NEWPID); close(back); }
    if (r < 0) return r;
    int status;
    while (waitpid((pid_t)r, &status, __WALL) < 0 && errno == EINTR) {}
    return 0;
#else
    (void)pidns_fd; (void)pid; (void)c;
    return -ENOSYS;
#endif
}

// Interruption of a command that holds an application (interrupts.swift): SIGINT, SIGTERM
// and SIGHUP only set a flag, which the engine reads between two safe steps. A tracer that
// dies while its tracee runs an injected call leaves the tracee at the call's trap
// instruction, where SIGTRAP kills it (ptrace(2): the tracees are detached as they are).
static volatile sig_atomic_t cssi_interrupt_signal;
static struct sigaction cssi_interrupt_old[3];
static sigset_t cssi_interrupt_old_mask;
static const int cssi_interrupt_signals[3] = { SIGINT, SIGTERM, SIGHUP };

static void cssi_on_interrupt(int sig) { if (!cssi_interrupt_signal) cssi_interrupt_signal = sig; }

void cssi_interrupts_defer(void) {
    cssi_interrupt_signal = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = cssi_on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigset_t mine;
    sigemptyset(&mine);
    for (int i = 0; i < 3; i++) {
        sigaction(cssi_interrupt_signals[i], &sa, &cssi_interrupt_old[i]);
        sigaddset(&mine, cssi_interrupt_signals[i]);
    }
    // Handled now: unblocked in this (the calling) thread, whatever mask the parent left us
    // (a blocked mask is inherited across fork and exec, signal(7): a caller that blocks
    // SIGINT would otherwise see its Ctrl-C wait for the end of the checkpoint).
    pthread_sigmask(SIG_UNBLOCK, &mine, &cssi_interrupt_old_mask);
}

void cssi_interrupts_restore(void) {
    pthread_sigmask(SIG_SETMASK, &cssi_interrupt_old_mask, NULL);
    for (int i = 0; i < 3; i++) sigaction(cssi_interrupt_signals[i], &cssi_interrupt_old[i], NULL);
}

int cssi_interrupt_pending(void) { return cssi_interrupt_signal; }
