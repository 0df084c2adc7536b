// A timerfd on CLOCK_REALTIME_ALARM with TFD_TIMER_ABSTIME at now + 100 s (systemd's
// WakeSystem= timers). On a machine without a wake-capable RTC clock_gettime refuses the alarm
// clocks (EINVAL) though their timers work: the deadline was read as the value since 1970 and
// the restored timer fired at once (found by the fourth probing round, December 2026).
#include "fixture.h"
#include <sys/timerfd.h>
#include <time.h>
int main(void) {
    struct timespec now; clock_gettime(CLOCK_REALTIME, &now);
    int fd = timerfd_create(CLOCK_REALTIME_ALARM, TFD_NONBLOCK);
    if (fd < 0) {   // CLOCK_REALTIME_ALARM needs CAP_WAKE_ALARM and an alarm-capable kernel
        printf("SKIP: timerfd_create(CLOCK_REALTIME_ALARM): %s\n", strerror(errno));
        fixture_ready(); fixture_wait(); return fixture_finish();
    }
    struct itimerspec its = { .it_value = { now.tv_sec + 100, 0 } };
    if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL)) return 2;
    fixture_ready();
    fixture_wait();
    struct itimerspec g; timerfd_gettime(fd, &g);
    struct timespec n2; clock_gettime(CLOCK_REALTIME, &n2);
    double dl = n2.tv_sec + n2.tv_nsec / 1e9 + g.it_value.tv_sec + g.it_value.tv_nsec / 1e9;
    EXPECT(dl > now.tv_sec + 99.5 && dl < now.tv_sec + 100.5, "deadline now %.3f s from the original (value left %ld.%09ld)", dl - (now.tv_sec + 100), (long)g.it_value.tv_sec, g.it_value.tv_nsec);
    unsigned long long n = 0;
    EXPECT(read(fd, &n, 8) < 0 && errno == EAGAIN, "it fired already (%llu)", n);
    return fixture_finish();
}
