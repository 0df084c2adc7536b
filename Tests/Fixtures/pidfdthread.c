// A pidfd of the process's own worker thread (pidfd_open(tid, PIDFD_THREAD), Linux 6.9):
// signals sent through it reach that thread. The checkpoint refused it as "a pidfd of PID
// <tid>, which is not part of the application" (found by the fourth probing round, December
// 2026). Without PIDFD_THREAD: SKIP.
#include "fixture.h"
#include <pthread.h>
#include <sys/syscall.h>
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
static volatile pid_t wtid; static volatile sig_atomic_t got;
static void on_usr2(int s) { (void)s; if (syscall(SYS_gettid) == wtid) got++; }
static void *w(void *x) { (void)x; wtid = syscall(SYS_gettid); for (;;) pause(); }
int main(void) {
    signal(SIGUSR2, on_usr2);
    pthread_t t; pthread_create(&t, NULL, w, NULL);
    while (!wtid) usleep(1000);
    int pfd = (int)syscall(SYS_pidfd_open, wtid, PIDFD_THREAD);
    if (pfd < 0) {
        printf("SKIP: pidfd_open with PIDFD_THREAD: %s (Linux 6.9)\n", strerror(errno));
        fixture_ready(); fixture_wait(); return fixture_finish();
    }
    int fl = fcntl(pfd, F_GETFL);
    fixture_ready();
    fixture_wait();
    EXPECT(fcntl(pfd, F_GETFL) == fl, "flags %o want %o", fcntl(pfd, F_GETFL), fl);
    EXPECT(syscall(SYS_pidfd_send_signal, pfd, SIGUSR2, NULL, 0) == 0, "send: %s", strerror(errno));
    for (int i = 0; i < 100 && !got; i++) usleep(10000);
    EXPECT(got == 1, "the worker got %d", (int)got);
    return fixture_finish();
}
