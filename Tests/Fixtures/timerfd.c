// Issue 10, "Restored wrong": an armed timerfd comes back disarmed (value and interval lost).
// timerfds as programs use them (timerfd_create(2)), each checked after restart with
// timerfd_gettime, /proc/self/fdinfo and by reading its expirations:
//   mono   CLOCK_MONOTONIC, relative, 1.5 s then every 400 ms, TFD_NONBLOCK: still periodic
//          (interval exact, value <= interval once the first expiry passed), fires again
//   real   CLOCK_REALTIME, TFD_TIMER_ABSTIME at now+60 s, every 7 s: same absolute expiry
//          (realtime now + value = the original deadline), interval 7 s, "settime flags" abs
//   cancel CLOCK_REALTIME, TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET: flags kept
//   boot   CLOCK_BOOTTIME, relative 90 s one-shot: value <= 90 s, > 60 s; clockid kept
//   off    CLOCK_MONOTONIC, never armed (or disarmed): 0/0, read gives EAGAIN
//   done   CLOCK_MONOTONIC one-shot of 1 ms that expired before the checkpoint, never read:
//          its expiration count (1) is still there to read, then it is disarmed
//   soon   CLOCK_MONOTONIC, relative 2 s one-shot, blocking: a read returns 1 after restart
#include "fixture.h"
#include <stdint.h>
#include <sys/timerfd.h>
#include <time.h>

static void on_alarm(int sig) { (void)sig; }

static double ts2d(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

static double now(clockid_t c) { struct timespec t; clock_gettime(c, &t); return ts2d(t); }

// The value of "key:" in /proc/self/fdinfo/fd (first match), or -1.
static long long fdinfo(int fd, const char *key) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    long long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0) { v = strtoll(line + strlen(key), NULL, strstr(key, "flags") ? 8 : 10); break; }
    fclose(f);
    return v;
}

int main(void) {
    int mono = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec v = { .it_value = { 1, 500000000 }, .it_interval = { 0, 400000000 } };
    timerfd_settime(mono, 0, &v, NULL);

    int real = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    struct timespec rnow;
    clock_gettime(CLOCK_REALTIME, &rnow);
    double deadline = ts2d(rnow) + 60;
    struct itimerspec rv = { .it_value = { rnow.tv_sec + 60, rnow.tv_nsec }, .it_interval = { 7, 0 } };
    timerfd_settime(real, TFD_TIMER_ABSTIME, &rv, NULL);

    int cancel = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    struct itimerspec cv = { .it_value = { rnow.tv_sec + 3600, 0 }, .it_interval = { 0, 0 } };
    timerfd_settime(cancel, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &cv, NULL);

    int boot = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK);
    struct itimerspec bv = { .it_value = { 90, 0 }, .it_interval = { 0, 0 } };
    timerfd_settime(boot, 0, &bv, NULL);

    int off = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec zero = { { 0, 0 }, { 0, 0 } };
    timerfd_settime(off, 0, &bv, NULL);
    timerfd_settime(off, 0, &zero, NULL);                        // armed, then disarmed

    int done = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec dv = { .it_value = { 0, 1000000 }, .it_interval = { 0, 0 } };
    timerfd_settime(done, 0, &dv, NULL);

    int soon = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec sv = { .it_value = { 2, 0 }, .it_interval = { 0, 0 } };
    timerfd_settime(soon, 0, &sv, NULL);
    double soonArmed = now(CLOCK_MONOTONIC);

    usleep(20000);
    fixture_ready();
    fixture_wait();

    struct itimerspec cur;
    uint64_t n = 0;
    // mono: periodic 400 ms
    EXPECT(timerfd_gettime(mono, &cur) == 0 && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 400000000,
           "mono: interval %ld.%09ld, expected 0.4 s", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
    EXPECT(ts2d(cur.it_value) > 0 && ts2d(cur.it_value) <= 1.5, "mono: value %.3f s (disarmed or wrong)", ts2d(cur.it_value));
    EXPECT(fcntl(mono, F_GETFL) & O_NONBLOCK, "mono: lost TFD_NONBLOCK");
    EXPECT(fdinfo(mono, "clockid:") == CLOCK_MONOTONIC, "mono: clockid %lld", fdinfo(mono, "clockid:"));
    usleep(1600000);                                             // at least the first expiry and 2 more
    ssize_t r = read(mono, &n, 8);
    EXPECT(r == 8 && n >= 1, "mono: read %zd, %llu expirations after 1.6 s (errno %d)", r, (unsigned long long)n, errno);
    usleep(450000);
    n = 0;
    r = read(mono, &n, 8);
    EXPECT(r == 8 && n >= 1, "mono: not periodic after restart: read %zd, %llu", r, (unsigned long long)n);

    // real: absolute deadline kept
    EXPECT(timerfd_gettime(real, &cur) == 0 && cur.it_interval.tv_sec == 7 && cur.it_interval.tv_nsec == 0,
           "real: interval %ld.%09ld, expected 7 s", (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
    double left = ts2d(cur.it_value);
    EXPECT(left > 0 && left <= 60, "real: value %.3f s", left);
    double got = now(CLOCK_REALTIME) + left;
    EXPECT(got - deadline < 0.05 && deadline - got < 0.05, "real: absolute deadline moved by %.3f s", got - deadline);
    EXPECT((fdinfo(real, "settime flags:") & TFD_TIMER_ABSTIME) != 0, "real: settime flags %llo, TFD_TIMER_ABSTIME lost", fdinfo(real, "settime flags:"));
    EXPECT(fdinfo(real, "clockid:") == CLOCK_REALTIME, "real: clockid %lld", fdinfo(real, "clockid:"));
    EXPECT(fcntl(real, F_GETFD) & FD_CLOEXEC, "real: lost TFD_CLOEXEC");

    // cancel: TFD_TIMER_CANCEL_ON_SET
    EXPECT(fdinfo(cancel, "settime flags:") == (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET), "cancel: settime flags %llo, expected 03", fdinfo(cancel, "settime flags:"));
    EXPECT(timerfd_gettime(cancel, &cur) == 0 && ts2d(cur.it_value) > 3000, "cancel: value %.3f s", ts2d(cur.it_value));

    // boot
    EXPECT(timerfd_gettime(boot, &cur) == 0 && ts2d(cur.it_value) > 60 && ts2d(cur.it_value) <= 90 && ts2d(cur.it_interval) == 0,
           "boot: value %.3f interval %.3f", ts2d(cur.it_value), ts2d(cur.it_interval));
    EXPECT(fdinfo(boot, "clockid:") == CLOCK_BOOTTIME, "boot: clockid %lld", fdinfo(boot, "clockid:"));

    // off
    EXPECT(timerfd_gettime(off, &cur) == 0 && ts2d(cur.it_value) == 0 && ts2d(cur.it_interval) == 0, "off: armed (%.3f/%.3f)", ts2d(cur.it_value), ts2d(cur.it_interval));
    EXPECT(read(off, &n, 8) < 0 && errno == EAGAIN, "off: read did not give EAGAIN");

    // done: one expiry waiting to be read
    n = 0;
    r = read(done, &n, 8);
    EXPECT(r == 8 && n == 1, "done: read %zd, %llu expirations (expected 1)", r, (unsigned long long)n);
    EXPECT(timerfd_gettime(done, &cur) == 0 && ts2d(cur.it_value) == 0, "done: still armed");

    // soon: a blocking read returns once it expires (2 s after arming, counted from restart at worst)
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;                                    // no SA_RESTART: read gives EINTR
    sigaction(SIGALRM, &sa, NULL);
    alarm(10);
    n = 0;
    r = read(soon, &n, 8);
    alarm(0);
    EXPECT(r == 8 && n == 1, "soon: read %zd, %llu (errno %d)", r, (unsigned long long)n, errno);
    EXPECT(now(CLOCK_MONOTONIC) - soonArmed >= 2.0, "soon: fired early");
    return fixture_finish();
}
