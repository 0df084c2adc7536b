// Relative sleeps and timed waits that a stop interrupted and a SIGCONT resumed: the kernel
// re-enters them through restart_syscall(2) with their deadline in the task's restart_block,
// which a restored task does not have. A checkpoint then finds the thread inside
// restart_syscall, not inside the call it made, and the restart's restart_syscall returned
// EINTR at once (found by the third probing round, December 7 2026: after any job-control
// stop, a checkpoint without kill, or a freeze and thaw). A child's threads wait; the parent
// stops and continues the child before READY. Each wait must end at its deadline with its
// normal result, not EINTR:
//   nanosleep   nanosleep(4 s, &rem)            -> 0
//   usleep      usleep(4 s) (rem NULL)          -> 0
//   clocknano   clock_nanosleep(MONOTONIC, 0, 4 s, &rem) -> 0
//   poll        poll(pipe, 4000 ms)             -> 0
//   futex       futex(FUTEX_WAIT_PRIVATE, 4 s)  -> ETIMEDOUT (no retry on EINTR here)
//   sleep       sleep(4) (glibc: nanosleep)      -> 0 seconds left
#include "fixture.h"
#include <sys/wait.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>

#define T 4.0
enum { NANO, USLEEP, CLOCKNANO, POLL, FUTEX, SLEEP, N };
static const char *names[N] = { "nanosleep", "usleep", "clocknano", "poll", "futex", "sleep" };
static volatile double ended[N];
static volatile long result[N];
static double t0;
static int pp[2], word;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void *run(void *a) {
    int k = (int)(long)a;
    sigset_t s; sigfillset(&s); pthread_sigmask(SIG_BLOCK, &s, NULL);
    struct timespec ts = { (time_t)T, 0 }, rem;
    long r = 0;
    switch (k) {
    case NANO: r = nanosleep(&ts, &rem); break;
    case USLEEP: r = usleep((useconds_t)(T * 1e6)); break;
    case CLOCKNANO: r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &rem); if (r) { errno = r; r = -1; } break;
    case POLL: { struct pollfd p = { .fd = pp[0], .events = POLLIN }; r = poll(&p, 1, (int)(T * 1000)); break; }
    case FUTEX: r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0); break;
    case SLEEP: r = sleep((unsigned)T); break;   // returns the seconds left
    }
    result[k] = r < 0 ? -errno : r;
    ended[k] = now() - t0;
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(pp)) return 4;
    t0 = now();
    pid_t c = fork();
    if (c == 0) {
        pthread_t th[N];
        for (long i = 0; i < N; i++) pthread_create(&th[i], NULL, run, (void *)i);
        for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
        for (int i = 0; i < N; i++) {
            long want = i == FUTEX ? -ETIMEDOUT : 0;
            EXPECT(result[i] == want, "%s: returned %ld (%s), expected %ld, at %.3f s", names[i], result[i], result[i] < 0 ? strerror((int)-result[i]) : "", want, ended[i]);
            EXPECT(ended[i] >= T - 0.005 && ended[i] <= T + 0.9, "%s: ended at %.3f s, its deadline was %.1f s", names[i], ended[i], T);
        }
        _exit(fixture_failures ? 1 : 0);
    }
    usleep(200000);
    // Stopped and continued: every wait of the child goes on in restart_syscall.
    kill(c, SIGSTOP);
    int st = 0;
    waitpid(c, &st, WUNTRACED);
    kill(c, SIGCONT);
    usleep(100000);
    fixture_ready();
    fixture_wait();
    waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's waits (its FAIL lines above): status %#x", st);
    return fixture_finish();
}
