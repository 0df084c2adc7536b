// Waits with a relative timeout, each in a thread of its own, across a checkpoint and a
// restart that comes seconds later (FidelityTests runs it with --gap 2). Found by the third
// probing round (December 7 2026):
//   - select, pselect and ppoll end with -ERESTARTNOHAND at the stop and write the time left
//     into the caller's struct (fs/select.c); the restart took nothing off it for the time
//     the application was down, so each ended that much late. Each must end at its deadline
//     (not before it, at most 0.9 s after);
//   - epoll_wait and epoll_pwait are ended by the stop with -EINTR and re-issued with their
//     whole timeout (the kernel keeps no time left): they ended the downtime plus the time
//     they had waited late. The downtime is taken off, and since the fifth probing round the
//     time waited before the stop too, when their timer is told in /proc/timer_list
//     (TimerWitness; timedwaits.c checks that closely): each must end at most 1.6 s late.
// poll(2) and futex waits are timeouts.c's.
#include "fixture.h"
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>

#define T 4.0
enum { SELECT, PSELECT, PPOLL, EPOLL, EPWAIT, N };
static const char *names[N] = { "select", "pselect", "ppoll", "epoll_wait", "epoll_pwait" };
static const double late[N] = { 0.9, 0.9, 0.9, 1.6, 1.6 };
static double t0;
static volatile double ended[N];
static volatile long result[N];
static int pfd[2], ep;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *run(void *a) {
    int i = (int)(intptr_t)a;
    // Every signal blocked: only the checkpoint's stop interrupts these waits.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    long r = 0;
    struct timespec ts = { (time_t)T, 0 };
    fd_set f;
    FD_ZERO(&f);
    FD_SET(pfd[0], &f);
    struct epoll_event e;
    switch (i) {
    case SELECT: {
        struct timeval tv = { (time_t)T, 0 };
        r = select(pfd[0] + 1, &f, NULL, NULL, &tv);
        break;
    }
    case PSELECT: r = pselect(pfd[0] + 1, &f, NULL, NULL, &ts, NULL); break;
    case PPOLL: {
        struct pollfd p = { pfd[0], POLLIN, 0 };
        r = ppoll(&p, 1, &ts, NULL);
        break;
    }
    case EPOLL: r = epoll_wait(ep, &e, 1, (int)(T * 1000)); break;
    case EPWAIT: r = epoll_pwait(ep, &e, 1, (int)(T * 1000), &all); break;
    }
    result[i] = r < 0 ? -errno : r;
    ended[i] = now() - t0;
    return NULL;
}

int main(void) {
    if (pipe(pfd)) { perror("pipe"); return 4; }
    ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN };
    epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev);
    pthread_t th[N];
    t0 = now();
    for (int i = 0; i < N; i++) pthread_create(&th[i], NULL, run, (void *)(intptr_t)i);
    usleep(100000);
    fixture_ready();
    fixture_wait();
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        printf("%s: returned %ld after %.3f s\n", names[i], result[i], ended[i]);
        EXPECT(result[i] == 0, "%s returned %ld, want 0 (timed out, nothing ready)", names[i], result[i]);
        EXPECT(ended[i] >= T - 0.01, "%s ended at %.3f s, before its %.1f s timeout", names[i], ended[i], T);
        EXPECT(ended[i] <= T + late[i], "%s ended at %.3f s, more than %.1f s after its %.1f s timeout", names[i], ended[i], late[i], T);
    }
    return fixture_finish();
}
