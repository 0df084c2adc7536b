// Minimal: a thread under SCHED_DEADLINE (sched_setattr runtime 2 ms, deadline 20 ms,
// period 50 ms), and one under SCHED_OTHER with a utilization clamp... only the deadline
// one here. After restart sched_getattr must show the same.
#include "fixture.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
struct sched_attr { uint32_t size, sched_policy; uint64_t sched_flags; int32_t sched_nice; uint32_t sched_priority; uint64_t sched_runtime, sched_deadline, sched_period; uint32_t util_min, util_max; };
static int go[2], rd[2];
static void *thr(void *a) {
    (void)a;
    struct sched_attr at; memset(&at, 0, sizeof at); at.size = sizeof at; at.sched_policy = 6;
    at.sched_runtime = 2000000; at.sched_deadline = 20000000; at.sched_period = 50000000;
    int ok = syscall(SYS_sched_setattr, 0, &at, 0) == 0;
    EXPECT(ok, "setup: sched_setattr DEADLINE: %s", strerror(errno));
    write(rd[1], "r", 1);
    char c; while (read(go[0], &c, 1) < 0 && errno == EINTR) ;
    memset(&at, 0, sizeof at);
    syscall(SYS_sched_getattr, 0, &at, sizeof at, 0);
    EXPECT(at.sched_policy == 6 && at.sched_runtime == 2000000 && at.sched_deadline == 20000000 && at.sched_period == 50000000,
           "policy %u runtime %llu deadline %llu period %llu, want DEADLINE 2/20/50 ms", at.sched_policy, (unsigned long long)at.sched_runtime, (unsigned long long)at.sched_deadline, (unsigned long long)at.sched_period);
    return NULL;
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pipe(go); pipe(rd);
    pthread_t t; pthread_create(&t, NULL, thr, NULL);
    char c; read(rd[0], &c, 1);
    fixture_ready();
    fixture_wait();
    write(go[1], "g", 1); pthread_join(t, NULL);
    return fixture_finish();
}
