// Issue 10, "Restored wrong": epoll sets (epoll(7), epoll_ctl(2)).
//  1. reused number: pipe A's read end was registered as fd N, dup'd to another number, fd N
//     closed and then made (dup2) the read end of pipe B, which is registered too: the set
//     holds (N, A) and (N, B), both live. After restart each fires with its own data when its
//     own pipe gets a byte, and EPOLL_CTL_MOD/DEL on N reach B's entry (the file fd N is now).
//  2. large fd numbers: RLIMIT_NOFILE raised to its hard limit (no CAP_SYS_RESOURCE needed),
//     eventfds at 1000, 1500 and 4000 (when the limit allows) registered: restart must add
//     them, and their events and data come back.
//  3. event flags: EPOLLET, EPOLLRDHUP, EPOLLONESHOT (one fired and disabled before the
//     checkpoint: no event after restart until EPOLL_CTL_MOD re-arms it), EPOLLEXCLUSIVE,
//     EPOLLPRI, data.u64 values; one epoll set watching another (nested); an fd of the set
//     closed by the program (its entry is gone, and stays gone).
#include "fixture.h"
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>

// Waits up to ms for events; returns how many, and the data of each in out[].
static int events(int ep, uint64_t *out, uint32_t *ev, int max, int ms) {
    struct epoll_event e[16];
    int n = epoll_wait(ep, e, max > 16 ? 16 : max, ms);
    for (int i = 0; i < n; i++) { out[i] = e[i].data.u64; if (ev) ev[i] = e[i].events; }
    return n;
}

static int has(uint64_t *d, int n, uint64_t v) { for (int i = 0; i < n; i++) if (d[i] == v) return 1; return 0; }

// Entries in /proc/self/fdinfo/ep with "tfd: fd".
static int fdinfo_entries(int ep, int fd) {
    char path[64], line[256], want[32];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
    snprintf(want, sizeof want, "tfd: %8d ", fd);
    FILE *f = fopen(path, "r");
    int c = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) if (strncmp(line, want, strlen(want)) == 0) c++;
    fclose(f);
    return c;
}

int main(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int a[2], b[2];
    pipe(a);
    pipe(b);
    // 1. fd N = a[0] registered, kept under another number, then N becomes b[0].
    int N = a[0];
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0xA };
    epoll_ctl(ep, EPOLL_CTL_ADD, N, &e);
    int aKeep = dup(a[0]);
    close(N);
    dup2(b[0], N);
    close(b[0]);
    e.data.u64 = 0xB;
    epoll_ctl(ep, EPOLL_CTL_ADD, N, &e);

    // 2. large numbers
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int bigs[3] = { 1000, 1500, 4000 };
    int nbig = 0;
    for (int i = 0; i < 3; i++) {
        if ((rlim_t)bigs[i] >= rl.rlim_cur) break;
        int efd = eventfd(0, EFD_NONBLOCK);
        dup2(efd, bigs[i]);
        close(efd);
        struct epoll_event be = { .events = EPOLLIN | EPOLLET, .data.u64 = 0x1000 + bigs[i] };
        epoll_ctl(ep, EPOLL_CTL_ADD, bigs[i], &be);
        nbig++;
    }
    printf("large fds: %d registered (RLIMIT_NOFILE %llu)\n", nbig, (unsigned long long)rl.rlim_cur);

    // 3. flags
    int sp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    struct epoll_event re = { .events = EPOLLIN | EPOLLRDHUP | EPOLLPRI, .data.u64 = 0x5050 };
    epoll_ctl(ep, EPOLL_CTL_ADD, sp[0], &re);
    int once = eventfd(0, EFD_NONBLOCK);
    struct epoll_event oe = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 0x0E };
    epoll_ctl(ep, EPOLL_CTL_ADD, once, &oe);
    uint64_t one = 1;
    write(once, &one, 8);
    uint64_t got[16];
    int n = events(ep, got, NULL, 16, 0);                        // fires once, then disabled
    int onceFired = has(got, n, 0x0E);
    int excl = eventfd(0, EFD_NONBLOCK);
    struct epoll_event xe = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = 0xE7C1 };
    epoll_ctl(ep, EPOLL_CTL_ADD, excl, &xe);
    int inner = epoll_create1(0);
    int innerEfd = eventfd(0, EFD_NONBLOCK);
    struct epoll_event ie = { .events = EPOLLIN, .data.u64 = 0x1111 };
    epoll_ctl(inner, EPOLL_CTL_ADD, innerEfd, &ie);
    struct epoll_event ne = { .events = EPOLLIN, .data.u64 = 0x2222 };
    epoll_ctl(ep, EPOLL_CTL_ADD, inner, &ne);
    int gone = eventfd(1, EFD_NONBLOCK);                         // readable, registered, then closed
    struct epoll_event ge = { .events = EPOLLIN, .data.u64 = 0x6013 };
    epoll_ctl(ep, EPOLL_CTL_ADD, gone, &ge);
    close(gone);

    n = events(ep, got, NULL, 16, 0);
    EXPECT(onceFired && n == 0, "before checkpoint: oneshot fired %d, %d events pending (expected none)", onceFired, n);
    int entriesN = fdinfo_entries(ep, N);

    fixture_ready();
    fixture_wait();

    n = events(ep, got, NULL, 16, 0);
    EXPECT(n == 0, "%d spurious events right after restart (first data %llx)", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    EXPECT(fdinfo_entries(ep, N) == entriesN && entriesN == 2, "fdinfo: %d entries for fd %d (expected 2; %d before)", fdinfo_entries(ep, N), N, entriesN);

    // 1. A (reached only through aKeep) and B (fd N)
    write(a[1], "x", 1);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0xA, "pipe A readable: %d events, data %llx (expected only 0xA)", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    char c;
    read(aKeep, &c, 1);
    write(b[1], "y", 1);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0xB, "pipe B readable: %d events, data %llx (expected only 0xB)", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    e.events = EPOLLIN;
    e.data.u64 = 0xBB;
    EXPECT(epoll_ctl(ep, EPOLL_CTL_MOD, N, &e) == 0, "EPOLL_CTL_MOD on fd %d: errno %d", N, errno);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0xBB, "after MOD: %d events, data %llx (expected 0xBB)", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    read(N, &c, 1);
    EXPECT(epoll_ctl(ep, EPOLL_CTL_DEL, N, NULL) == 0, "EPOLL_CTL_DEL on fd %d: errno %d", N, errno);
    write(a[1], "x", 1);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0xA, "A's entry after DEL of B's: %d events, data %llx", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    read(aKeep, &c, 1);

    // 2. large numbers
    for (int i = 0; i < nbig; i++) {
        EXPECT(fcntl(bigs[i], F_GETFD) >= 0, "fd %d is not open", bigs[i]);
        write(bigs[i], &one, 8);
        n = events(ep, got, NULL, 16, 100);
        EXPECT(n == 1 && got[0] == (uint64_t)(0x1000 + bigs[i]), "eventfd at fd %d: %d events, data %llx", bigs[i], n, n > 0 ? (unsigned long long)got[0] : 0ULL);
        n = events(ep, got, NULL, 16, 0);
        EXPECT(n == 0, "fd %d: EPOLLET lost (fired again without a new write)", bigs[i]);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    EXPECT(rl.rlim_cur == rl.rlim_max, "RLIMIT_NOFILE soft %llu hard %llu", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);

    // 3. flags
    write(once, &one, 8);
    n = events(ep, got, NULL, 16, 50);
    EXPECT(n == 0, "disabled EPOLLONESHOT entry fired after restart (%d events, data %llx)", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    oe.events = EPOLLIN | EPOLLONESHOT;
    epoll_ctl(ep, EPOLL_CTL_MOD, once, &oe);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0x0E, "re-armed EPOLLONESHOT: %d events", n);
    write(excl, &one, 8);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0xE7C1, "EPOLLEXCLUSIVE entry: %d events", n);
    uint64_t cnt;
    read(excl, &cnt, 8);
    e.events = EPOLLIN | EPOLLEXCLUSIVE;
    EXPECT(epoll_ctl(ep, EPOLL_CTL_MOD, excl, &e) < 0 && errno == EINVAL, "EPOLLEXCLUSIVE lost: MOD on it was allowed");
    write(innerEfd, &one, 8);
    n = events(ep, got, NULL, 16, 100);
    EXPECT(n == 1 && got[0] == 0x2222, "nested epoll: %d events, data %llx", n, n > 0 ? (unsigned long long)got[0] : 0ULL);
    n = events(inner, got, NULL, 16, 0);
    EXPECT(n == 1 && got[0] == 0x1111, "inner epoll: %d events", n);
    read(innerEfd, &cnt, 8);
    uint32_t evs[16];
    shutdown(sp[1], SHUT_WR);
    n = events(ep, got, evs, 16, 100);
    EXPECT(n == 1 && got[0] == 0x5050 && (evs[0] & EPOLLRDHUP), "EPOLLRDHUP: %d events, data %llx, events %x", n, n > 0 ? (unsigned long long)got[0] : 0ULL, n > 0 ? evs[0] : 0);
    EXPECT(fcntl(ep, F_GETFD) & FD_CLOEXEC, "epoll fd lost EPOLL_CLOEXEC");
    return fixture_finish();
}
