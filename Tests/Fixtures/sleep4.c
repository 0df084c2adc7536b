// Two processes asleep for 4 s, one in glibc's nanosleep (clock_nanosleep on CLOCK_REALTIME)
// and one in the raw nanosleep syscall, both with a `rem` buffer. Checkpointed at about 1 s,
// killed and restarted about 1 s later, each must wake 4 s after it fell asleep, in
// CLOCK_MONOTONIC terms (not 1 + 1 + 4 s), having slept at least 4 s.
#include "fixture.h"
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int sleep4(int raw) {
    struct timespec req = { 4, 0 }, rem = { 0, 0 };
    double t0 = now();
    int r = raw ? (int)syscall(SYS_nanosleep, &req, &rem) : nanosleep(&req, &rem);
    double slept = now() - t0;
    EXPECT(r == 0, "%s returned %d (errno %d)", raw ? "nanosleep syscall" : "nanosleep", r, errno);
    EXPECT(slept >= 4.0 && slept < 4.6, "%s: woke after %.3f s, want 4 s", raw ? "nanosleep syscall" : "nanosleep", slept);
    EXPECT(req.tv_sec == 4 && req.tv_nsec == 0, "the request was changed");
    printf("%s slept %.3f s\n", raw ? "raw" : "libc", slept);
    return fixture_finish();
}

int main(void) {
    printf("READY %d\n", getpid());
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) return sleep4(1);
    int verdict = sleep4(0);
    int status = -1;
    waitpid(child, &status, 0);
    return verdict || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
