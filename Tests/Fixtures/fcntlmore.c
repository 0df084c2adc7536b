// Issue 10, "Restored wrong": what fcntl(2) and a few calls next to it leave on a process's
// files, as event loops, file servers and `tail -f` style programs set them.
//   fd A   pipe read end with O_ASYNC, F_SETOWN to the process, F_SETSIG SIGRTMIN+2: a write
//          after restart must raise that signal (with si_fd A, si_band POLLIN)
//   fd B   a read lease (F_SETLEASE F_RDLCK) on a file of the fixture's directory
//   fd D   an O_TMPFILE file with content, never linked: given a name after restart
//   fd E   a NETLINK_ROUTE socket bound to a chosen port id: its address, and a link dump
//          request answered after restart
//   fd F   a UDP socket with a two-instruction classic BPF filter (SO_ATTACH_FILTER), locked
//          (SO_LOCK_FILTER): the same program read back with SO_GET_FILTER, still locked
//   memory mlockall(MCL_CURRENT): still locked
// After restart the fixture checks the flags (F_GETFL, F_GETOWN_EX, F_GETSIG, F_GETLEASE),
// the signal above, D's content and name, E's address and answer, and VmLck.
// Not here, because no interface reads them back, so no checkpoint can keep them: dnotify
// (F_NOTIFY's mask) and mlockall's MCL_FUTURE (the mm's default VM_LOCKED).
#include "fixture.h"
#include <linux/filter.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

static volatile sig_atomic_t io_fd = -1, io_band;

static void on_io(int sig, siginfo_t *si, void *ctx) { (void)sig; (void)ctx; io_fd = si->si_fd; io_band = (int)si->si_band; }

static long vm_locked_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256]; long kb = -1;
    while (f && fgets(line, sizeof line, f)) if (sscanf(line, "VmLck: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static int wait_for(volatile sig_atomic_t *v) {
    for (int i = 0; i < 200 && *v == -1; i++) usleep(10000);
    return *v;
}

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    char dir[] = "/tmp/fcntlmore.XXXXXX";
    if (!mkdtemp(dir)) { printf("mkdtemp: %s\n", strerror(errno)); return 1; }
    char path[256];

    struct sigaction sa = { 0 };
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_io; sigaction(SIGRTMIN + 2, &sa, NULL);

    int p[2];
    if (pipe(p)) { printf("pipe: %s\n", strerror(errno)); return 1; }
    int A = p[0];
    fcntl(A, F_SETOWN, getpid());
    fcntl(A, F_SETSIG, SIGRTMIN + 2);
    fcntl(A, F_SETFL, fcntl(A, F_GETFL) | O_ASYNC | O_NONBLOCK);

    snprintf(path, sizeof path, "%s/leased", dir);
    int w = open(path, O_CREAT | O_WRONLY, 0644); if (w >= 0) { (void)write(w, "lease\n", 6); close(w); }
    int B = open(path, O_RDONLY);
    if (fcntl(B, F_SETLEASE, F_RDLCK)) printf("F_SETLEASE: %s\n", strerror(errno));


    int D = open(dir, O_TMPFILE | O_RDWR, 0600);
    if (D < 0) printf("O_TMPFILE: %s\n", strerror(errno));
    else if (write(D, "unnamed content\n", 16) != 16) printf("write O_TMPFILE: %s\n", strerror(errno));

    int E = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    struct sockaddr_nl nl = { .nl_family = AF_NETLINK, .nl_pid = 0x5151 + (unsigned)getpid() };
    if (bind(E, (struct sockaddr *)&nl, sizeof nl)) printf("bind netlink: %s\n", strerror(errno));

    // "ld len; ret a": accept every datagram whole.
    struct sock_filter prog[2] = { { BPF_LD | BPF_W | BPF_LEN, 0, 0, 0 }, { BPF_RET | BPF_A, 0, 0, 0 } };
    struct sock_fprog fprog = { 2, prog };
    int F = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
    if (setsockopt(F, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) || setsockopt(F, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one))
        printf("SO_ATTACH_FILTER: %s\n", strerror(errno));

    if (mlockall(MCL_CURRENT)) printf("mlockall: %s\n", strerror(errno));
    long locked_before = vm_locked_kb();

    fixture_ready();
    fixture_wait();

    // A: flags, owner, signal, and the signal itself.
    EXPECT((fcntl(A, F_GETFL) & (O_ASYNC | O_NONBLOCK)) == (O_ASYNC | O_NONBLOCK), "pipe flags %#x lack O_ASYNC|O_NONBLOCK", fcntl(A, F_GETFL));
    struct f_owner_ex own = { 0 };
    fcntl(A, F_GETOWN_EX, &own);
    EXPECT(own.type == F_OWNER_PID && own.pid == getpid(), "pipe owner type %d pid %d, want the process %d", own.type, own.pid, getpid());
    EXPECT(fcntl(A, F_GETSIG) == SIGRTMIN + 2, "pipe F_GETSIG %d, want %d", fcntl(A, F_GETSIG), SIGRTMIN + 2);
    (void)write(p[1], "x", 1);
    EXPECT(wait_for(&io_fd) == A, "no SIGRTMIN+2 for fd %d after a write (si_fd %d)", A, (int)io_fd);
    EXPECT(io_band & POLLIN, "si_band %#x lacks POLLIN", (int)io_band);

    // B: the lease.
    EXPECT(fcntl(B, F_GETLEASE) == F_RDLCK, "F_GETLEASE %d, want F_RDLCK (%d)", fcntl(B, F_GETLEASE), F_RDLCK);


    // D: the unnamed file.
    char buf[64] = { 0 };
    EXPECT(D >= 0 && pread(D, buf, sizeof buf - 1, 0) == 16 && strcmp(buf, "unnamed content\n") == 0, "O_TMPFILE content '%s'", buf);
    struct stat st;
    EXPECT(D >= 0 && fstat(D, &st) == 0 && st.st_nlink == 0, "O_TMPFILE file has %lu links, want 0", (unsigned long)st.st_nlink);
    // What O_TMPFILE is for: a name given once the content is complete (open(2)).
    char proc[64], named[300];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", D);
    snprintf(named, sizeof named, "%s/named-at-last", dir);
    EXPECT(linkat(AT_FDCWD, proc, AT_FDCWD, named, AT_SYMLINK_FOLLOW) == 0, "linkat of the O_TMPFILE file: %s", strerror(errno));
    FILE *nf = fopen(named, "r");
    EXPECT(nf && fgets(buf, sizeof buf, nf) && strcmp(buf, "unnamed content\n") == 0, "the linked file reads '%s'", buf);
    if (nf) fclose(nf);

    // E: netlink address, and a request answered.
    struct sockaddr_nl got = { 0 }; socklen_t len = sizeof got;
    getsockname(E, (struct sockaddr *)&got, &len);
    EXPECT(got.nl_family == AF_NETLINK && got.nl_pid == nl.nl_pid, "netlink port id %u, want %u", got.nl_pid, nl.nl_pid);
    struct { struct nlmsghdr h; struct rtgenmsg g; } req = {
        .h = { .nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 77 },
        .g = { .rtgen_family = AF_UNSPEC },
    };
    EXPECT(send(E, &req, sizeof req, 0) == sizeof req, "netlink send: %s", strerror(errno));
    struct pollfd pf = { .fd = E, .events = POLLIN };
    char reply[16384];
    ssize_t n = poll(&pf, 1, 2000) == 1 ? recv(E, reply, sizeof reply, 0) : -1;
    EXPECT(n >= (ssize_t)sizeof(struct nlmsghdr) && ((struct nlmsghdr *)reply)->nlmsg_seq == 77, "no link dump answer (%zd bytes)", n);


    // F: the filter and its lock.
    struct sock_filter back[4];
    socklen_t count = 4;
    EXPECT(getsockopt(F, SOL_SOCKET, SO_GET_FILTER, back, &count) == 0 && count == 2 && memcmp(back, prog, sizeof prog) == 0,
           "socket filter: %u instructions back (%s), want the 2 attached", count, strerror(errno));
    int lk = 0; socklen_t ll = sizeof lk;
    EXPECT(getsockopt(F, SOL_SOCKET, SO_LOCK_FILTER, &lk, &ll) == 0 && lk == 1, "SO_LOCK_FILTER %d, want 1", lk);

    // Memory: still locked.
    long locked = vm_locked_kb();
    EXPECT(locked > 0 && locked >= locked_before / 2, "VmLck %ld kB, was %ld kB", locked, locked_before);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    close(B);
    if (system(cmd)) {}
    return fixture_finish();
}
