// An epoll instance shared by several fds: dup'd in the parent (the dup without
// FD_CLOEXEC), inherited by a child across fork. After a restart every fd must still be the
// one instance (kcmp KCMP_FILE), with its entries (an eventfd, level-triggered; a pipe,
// edge-triggered), so that a change made through the child's fd is seen through the
// parent's. The pipe's read end is one open file description too: O_NONBLOCK set by the
// child is the parent's.
#include "fixture.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <stdint.h>

static int same_file(pid_t a, pid_t b, int fa, int fb) {
    return syscall(SYS_kcmp, a, b, 0 /* KCMP_FILE */, fa, fb) == 0;
}

// One ready entry from `ep` within 1 s: its data, or -1.
static long long one_event(int ep) {
    struct epoll_event ev;
    int n = epoll_wait(ep, &ev, 1, 1000);
    return n == 1 ? (long long)ev.data.u64 : -1;
}

int main(int argc, char **argv) {
    int efd = eventfd(0, EFD_NONBLOCK);
    int p[2];
    if (pipe(p) != 0) return 2;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 8;
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    int twin = dup(ep);
    if (argc > 1 && strcmp(argv[1], "nested") == 0) {
        // Another epoll set watching the shared one: refused at checkpoint (the test checks
        // the message), and the program goes on.
        int outer = epoll_create1(0);
        struct epoll_event o = { .events = EPOLLIN, .data.u64 = 1 };
        epoll_ctl(outer, EPOLL_CTL_ADD, ep, &o);
    }
    fixture_ready();
    printf("EPOLL %d\n", ep);
    fflush(stdout);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        fixture_wait();
        EXPECT(same_file(getpid(), parent, ep, ep), "child: epoll fd %d is not the parent's instance", ep);
        EXPECT(same_file(getpid(), getpid(), ep, twin), "child: fds %d and %d are not one instance", ep, twin);
        EXPECT(same_file(getpid(), parent, p[0], p[0]), "child: the pipe's read end is not the parent's open file description");
        EXPECT(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0, "child: F_SETFL O_NONBLOCK");
        // Through the child's fd: the pipe's entry now carries 9.
        struct epoll_event mod = { .events = EPOLLIN | EPOLLET, .data.u64 = 9 };
        EXPECT(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &mod) == 0, "child: EPOLL_CTL_MOD of the pipe's entry: %s", strerror(errno));
        return fixture_finish() ? 1 : 0;
    }
    fixture_wait();
    EXPECT(same_file(getpid(), getpid(), ep, twin), "fds %d and %d are not one instance", ep, twin);
    EXPECT(fcntl(ep, F_GETFD) == FD_CLOEXEC, "fd %d lost FD_CLOEXEC", ep);
    EXPECT(fcntl(twin, F_GETFD) == 0, "fd %d (the dup) has flags %d", twin, fcntl(twin, F_GETFD));
    EXPECT(one_event(ep) == -1, "an event is ready before anything was written");
    uint64_t one = 1;
    EXPECT(write(efd, &one, 8) == 8, "write eventfd");
    EXPECT(one_event(twin) == 7, "the eventfd's entry did not fire through the dup");
    EXPECT(one_event(ep) == 7, "the eventfd's entry is not level-triggered");
    EXPECT(read(efd, &one, 8) == 8, "read eventfd");
    kill(child, SIGUSR1);
    int status = -1;
    waitpid(child, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (%x)", status);
    EXPECT(fcntl(p[0], F_GETFL) & O_NONBLOCK, "the child's O_NONBLOCK on the pipe's read end is not the parent's");
    EXPECT(write(p[1], "x", 1) == 1, "write pipe");
    EXPECT(one_event(ep) == 9, "the child's change to the pipe's entry is not seen by the parent");
    EXPECT(one_event(ep) == -1, "the pipe's entry is not edge-triggered");
    return fixture_finish();
}
