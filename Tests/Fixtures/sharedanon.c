// An eventfd, a timerfd and a signalfd opened before fork, so parent and child share each
// open file description: after restart they still do (kcmp), the eventfd counter is one
// (what the child adds, the parent reads), and each keeps its state.
#include "fixture.h"
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

int main(void) {
    int efd = eventfd(5, EFD_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec ts = { .it_interval = { 0, 0 }, .it_value = { 100, 0 } };
    timerfd_settime(tfd, 0, &ts, NULL);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK);
    fixture_ready();
    pid_t child = fork();
    if (child == 0) {
        fixture_wait();
        uint64_t add = 37;
        EXPECT(write(efd, &add, 8) == 8, "child: write to the eventfd");
        return fixture_finish();
    }
    fixture_wait();
    pid_t me = getpid();
    int fds[] = { efd, tfd, sfd };
    for (int i = 0; i < 3; i++)
        EXPECT(syscall(SYS_kcmp, me, child, 0 /* KCMP_FILE */, fds[i], fds[i]) == 0, "fd %d is no longer shared with the child", fds[i]);
    kill(child, SIGUSR1);
    int status = -1;
    waitpid(child, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (%x)", status);
    uint64_t count = 0;
    EXPECT(read(efd, &count, 8) == 8 && count == 42, "eventfd count %llu, want 5 + 37", (unsigned long long)count);
    struct itimerspec cur;
    EXPECT(timerfd_gettime(tfd, &cur) == 0 && cur.it_value.tv_sec > 80 && cur.it_value.tv_sec <= 100, "timerfd: %ld s left", (long)cur.it_value.tv_sec);
    EXPECT(fcntl(sfd, F_GETFL) & O_NONBLOCK, "signalfd lost O_NONBLOCK");
    return fixture_finish();
}
