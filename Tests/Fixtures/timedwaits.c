// Timed waits that a stop ends with EINTR (signal(7)) keep their deadline across a
// checkpoint and restart (lifecycle.sh --gap 2) and across a checkpoint without kill
// (--continue): each started its whole timeout again (found by probing, December 2026),
// since the kernel keeps no time left for them. One thread each, all with a 5 s timeout
// from the start (CLOCK_MONOTONIC), nothing ever arriving:
//   sigtimedwait  rt_sigtimedwait on a blocked signal: EAGAIN
//   semtimedop    on a semaphore at 0: EAGAIN
//   epoll_wait    on an empty epoll set (5000 ms): 0
//   epoll_pwait2  on an empty epoll set (a const timespec): 0, the struct unchanged
// Each must end no earlier than 5 s and at most 0.6 s after: READY comes 1 s after the
// start, so one that started over ends after 6 s (after 8 s with --gap 2).
#include "fixture.h"
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif
#define N 4
static const char *names[N] = { "sigtimedwait", "semtimedop", "epoll_wait", "epoll_pwait2" };
static double t0;
static volatile double ended[N];
static volatile long result[N];
static volatile int err[N];
static int sem, ep;
static const struct timespec five = { 5, 0 };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void *wait_in(void *arg) {
    int i = (int)(long)arg;
    long r = 0;
    struct epoll_event ev;
    errno = 0;
    switch (i) {
    case 0: {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGRTMIN + 5);
        r = sigtimedwait(&s, NULL, &five);
        break;
    }
    case 1: {
        struct sembuf op = { 0, -1, 0 };
        r = semtimedop(sem, &op, 1, &five);
        break;
    }
    case 2: r = epoll_wait(ep, &ev, 1, 5000); break;
    case 3: r = syscall(SYS_epoll_pwait2, ep, &ev, 1, &five, NULL, 8); break;
    }
    err[i] = errno;
    result[i] = r;
    ended[i] = now() - t0;
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 5);
    sigprocmask(SIG_BLOCK, &s, NULL);
    sem = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    ep = epoll_create1(0);
    t0 = now();
    pthread_t th[N];
    for (int i = 0; i < N; i++) pthread_create(&th[i], NULL, wait_in, (void *)(long)i);
    usleep(1000000);
    fixture_ready();
    fixture_wait();
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        printf("%s: returned %ld (errno %d) at %.3f s\n", names[i], result[i], err[i], ended[i]);
        EXPECT(ended[i] >= 4.99 && ended[i] <= 5.6, "%s ended at %.3f s, want 5 (at most 5.6)", names[i], ended[i]);
    }
    EXPECT(result[0] == -1 && err[0] == EAGAIN, "sigtimedwait returned %ld errno %d, want EAGAIN", result[0], err[0]);
    EXPECT(result[1] == -1 && err[1] == EAGAIN, "semtimedop returned %ld errno %d, want EAGAIN", result[1], err[1]);
    EXPECT(result[2] == 0, "epoll_wait returned %ld errno %d, want 0", result[2], err[2]);
    EXPECT(result[3] == 0, "epoll_pwait2 returned %ld errno %d, want 0", result[3], err[3]);
    EXPECT(five.tv_sec == 5 && five.tv_nsec == 0, "the program's timespec was changed");
    semctl(sem, 0, IPC_RMID);
    return fixture_finish();
}
