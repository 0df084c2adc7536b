// Waits and timers keep their deadline across a checkpoint and a restart that comes seconds
// later (lifecycle.sh --gap 2), in CLOCK_MONOTONIC terms, as Linux keeps them across a stop
// (found by probing, December 2026: each of these started its whole time again, or fired
// late by the time the application was down):
//   poll      poll() on an empty pipe with a 4 s timeout: returns 0 at 4 s (its deadline
//             lived in the kernel's restart_block, which a restarted task does not have)
//   futex     futex(FUTEX_WAIT) with a relative 4 s timeout (Go's runtime sleeps so):
//             ETIMEDOUT at 4 s
//   timerfd   a relative one-shot 4 s timerfd read by a blocked thread: 1 expiration at 4 s;
//             and a 250 ms periodic one read after the restart: the expirations it missed
//             while the application was down are counted, as they are for a stopped process
//   alarm     setitimer(ITIMER_REAL) of 4 s: SIGALRM at 4 s
//   ptimer    timer_create(CLOCK_MONOTONIC) armed for 4 s: its signal at 4 s
//   mqshared  a POSIX message queue opened before fork, held by parent and child (the
//             restart refused it: "reopen /NAME: No such file"); the child, blocked in
//             mq_receive, gets the parent's message after the restart
// Each wait must end no earlier than its deadline and at most 0.9 s after it; the restart
// comes about 2.5 s after the start, so one that started over ends 2 s late or more.
#include "fixture.h"
#include <linux/futex.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>

#define T 4.0
static double t0;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

enum { POLL, FUTEX, TIMERFD, ALARM, PTIMER, N };
static const char *names[N] = { "poll", "futex", "timerfd", "alarm", "ptimer" };
static volatile double ended[N];
static volatile long result[N];
static int pipefd[2], tfd;
static int word;

// The waiting threads leave the signals to the main thread (no EINTR from them).
static void quiet(void) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGALRM);
    sigaddset(&s, SIGRTMIN);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void *poller(void *a) {
    (void)a;
    quiet();
    struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
    int r = poll(&p, 1, (int)(T * 1000));
    result[POLL] = r < 0 ? -errno : r;
    ended[POLL] = now() - t0;
    return NULL;
}

static void *waiter(void *a) {
    (void)a;
    quiet();
    struct timespec ts = { (time_t)T, 0 };
    long r;
    // A spurious EINTR (futex(2) lists it) is taken as Go takes it: wait again for what is left.
    do {
        double left = T - (now() - t0);
        if (left < 0) left = 0;
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - ts.tv_sec) * 1e9);
        r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
    } while (r < 0 && errno == EINTR);
    result[FUTEX] = r < 0 ? -errno : r;
    ended[FUTEX] = now() - t0;
    return NULL;
}

static void *reader(void *a) {
    (void)a;
    quiet();
    uint64_t n = 0;
    ssize_t r;
    do { r = read(tfd, &n, 8); } while (r < 0 && errno == EINTR);
    result[TIMERFD] = r == 8 ? (long)n : -errno;
    ended[TIMERFD] = now() - t0;
    return NULL;
}

static void on_alarm(int s) { (void)s; ended[ALARM] = now() - t0; result[ALARM] = 1; }
static void on_ptimer(int s) { (void)s; ended[PTIMER] = now() - t0; result[PTIMER] = 1; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    t0 = now();
    pipe(pipefd);
    tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    int periodic = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec one = { .it_value = { (time_t)T, 0 } }, every = { { 0, 250000000 }, { 0, 250000000 } };
    timerfd_settime(tfd, 0, &one, NULL);
    timerfd_settime(periodic, 0, &every, NULL);
    signal(SIGALRM, on_alarm);
    struct itimerval it = { .it_value = { (time_t)T, 0 } };
    setitimer(ITIMER_REAL, &it, NULL);
    struct sigaction sa = { .sa_handler = on_ptimer };
    sigaction(SIGRTMIN, &sa, NULL);
    struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN };
    timer_t pt;
    timer_create(CLOCK_MONOTONIC, &ev, &pt);
    struct itimerspec pts = { .it_value = { (time_t)T, 0 } };
    timer_settime(pt, 0, &pts, NULL);
    for (int i = 0; i < N; i++) result[i] = -1000;
    pthread_t th[3];
    pthread_create(&th[0], NULL, poller, NULL);
    pthread_create(&th[1], NULL, waiter, NULL);
    pthread_create(&th[2], NULL, reader, NULL);

    char qn[64];
    snprintf(qn, sizeof qn, "/ssi-timeouts-%d", getpid());
    mq_unlink(qn);
    struct mq_attr qa = { .mq_maxmsg = 4, .mq_msgsize = 32 };
    mqd_t q = mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &qa);
    if (q < 0) { printf("FAIL: setup: mq_open: %s\n", strerror(errno)); return 4; }
    pid_t child = fork();
    if (child == 0) {
        char m[32] = {0};
        ssize_t n;
        do { n = mq_receive(q, m, sizeof m, NULL); } while (n < 0 && errno == EINTR);
        _exit(n == 5 && !memcmp(m, "hello", 5) ? 0 : 1);
    }
    usleep(300000);
    fixture_ready();
    fixture_wait();

    // Until every wait has ended, T + 3 s at most.
    while (now() - t0 < T + 3) {
        int all = 1;
        for (int i = 0; i < N; i++) if (ended[i] == 0) all = 0;
        if (all) break;
        usleep(20000);
    }
    for (int i = 0; i < N; i++) {
        EXPECT(ended[i] > 0, "%s: never ended (%.3f s since the start)", names[i], now() - t0);
        if (ended[i] > 0) EXPECT(ended[i] >= T - 0.005 && ended[i] <= T + 0.9, "%s: ended at %.3f s, its deadline was %.1f s", names[i], ended[i], T);
    }
    EXPECT(result[POLL] == 0, "poll: returned %ld, not 0 (timed out)", result[POLL]);  // -errno on failure
    EXPECT(result[FUTEX] == -ETIMEDOUT, "futex: returned %ld, not -ETIMEDOUT", result[FUTEX]);
    EXPECT(result[TIMERFD] == 1, "timerfd: %ld expirations, not 1", result[TIMERFD]);
    // The periodic timer: every 250 ms since the start, read now: none missed.
    uint64_t ticks = 0;
    read(periodic, &ticks, 8);
    double since = now() - t0;
    long want = (long)(since / 0.25);
    EXPECT((long)ticks >= want - 2 && (long)ticks <= want + 1, "timerfd: %llu periodic expirations in %.2f s, about %ld expected", (unsigned long long)ticks, since, want);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);

    EXPECT(mq_send(q, "hello", 5, 0) == 0, "mqshared: mq_send: %s", strerror(errno));
    int st = 0;
    EXPECT(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "mqshared: the child did not get the message (status %#x)", st);
    mq_unlink(qn);
    return fixture_finish();
}
