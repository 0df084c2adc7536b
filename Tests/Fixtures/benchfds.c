// Benchmark load: `benchfds KIND N`: one process holding N of something the engine walks
// per item, the shapes whose cost once grew with the square of N (probing, December 2026):
//   epoll   N eventfds, all registered in one epoll set (every anon-inode fd shares one inode)
//   sockets N unix sockets (N/2 pairs), all registered in one epoll set (a server's shape)
//   pipes   N/2 pipes, both ends held
//   files   N fds opened on 64 files in directory DIR (`benchfds files N DIR`): distinct open
//           file descriptions of few inodes
//   areas   N small anonymous areas, one written page each (mprotect patchwork)
// Prints READY once everything exists, then sleeps.
#define _GNU_SOURCE
#include "fixture.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "epoll";
    int n = argc > 2 ? atoi(argv[2]) : 1000;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (!strcmp(kind, "epoll")) {
        int ep = epoll_create1(0);
        for (int i = 0; i < n; i++) {
            int e = eventfd(0, EFD_NONBLOCK);
            if (e < 0) { perror("eventfd"); return 4; }
            struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
            epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
        }
    } else if (!strcmp(kind, "sockets")) {
        int ep = epoll_create1(0);
        for (int i = 0; i < n / 2; i++) {
            int sp[2];
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) { perror("socketpair"); return 4; }
            for (int k = 0; k < 2; k++) {
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 2 * i + k };
                epoll_ctl(ep, EPOLL_CTL_ADD, sp[k], &ev);
            }
        }
    } else if (!strcmp(kind, "pipes")) {
        for (int i = 0; i < n / 2; i++) {
            int p[2];
            if (pipe(p) < 0) { perror("pipe"); return 4; }
        }
    } else if (!strcmp(kind, "files")) {
        const char *dir = argc > 3 ? argv[3] : "/tmp";
        char name[4096];
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "%s/benchfds-%d", dir, i % 64);
            if (open(name, O_RDWR | O_CREAT, 0600) < 0) { perror("open"); return 4; }
        }
    } else if (!strcmp(kind, "areas")) {
        // One mapping, every other page made read-only: N areas the kernel cannot merge.
        long page = sysconf(_SC_PAGESIZE);
        char *p = mmap(NULL, (size_t)n * 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 4; }
        for (int i = 0; i < n; i++) {
            p[(size_t)i * 2 * page] = (char)i;
            mprotect(p + (size_t)(i * 2 + 1) * page, page, PROT_READ);
        }
    } else {
        fprintf(stderr, "benchfds: unknown kind %s\n", kind);
        return 4;
    }
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) pause();
}
