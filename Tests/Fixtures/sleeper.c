// A process sleeping in nanosleep when it is checkpointed: after restart the sleep must
// complete normally (return 0, not EINTR) and last at least the time asked.
#include "fixture.h"
#include <time.h>

int main(void) {
    struct timespec t0, t1, req = { 2, 0 };
    clock_gettime(CLOCK_MONOTONIC, &t0);
    printf("READY %d\n", getpid());
    fflush(stdout);
    int r = nanosleep(&req, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    EXPECT(r == 0, "nanosleep returned %d (errno %d)", r, errno);
    EXPECT(secs >= 2.0, "slept only %.3f s", secs);
    return fixture_finish();
}
