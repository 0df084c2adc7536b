// An epoll instance inherited across fork (parent and child share it): not supported yet,
// so the checkpoint must fail naming both holders, and the application go on; with -i the
// epoll fd is restored closed in both.
#include "fixture.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>

int main(void) {
    int efd = eventfd(1, 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    fixture_ready();
    printf("EPOLL %d\n", ep);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        fixture_wait();
        EXPECT(fcntl(ep, F_GETFD) < 0 && errno == EBADF, "child: epoll fd %d is open", ep);
        return fixture_finish() ? 1 : 0;
    }
    fixture_wait();
    EXPECT(fcntl(ep, F_GETFD) < 0 && errno == EBADF, "epoll fd %d is open", ep);
    kill(child, SIGUSR1);
    int status = -1;
    waitpid(child, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (%x)", status);
    return fixture_finish();
}
