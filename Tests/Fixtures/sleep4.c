// Three processes asleep for 4 s: in glibc's nanosleep (clock_nanosleep on CLOCK_REALTIME)
// and in the raw nanosleep syscall, both with a `rem` buffer, and in usleep, which passes no
// `rem` buffer. Checkpointed at about 1 s,
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

static int sleep4(int how) {
    static const char *names[] = { "nanosleep", "nanosleep syscall", "usleep" };
    struct timespec req = { 4, 0 }, rem = { 0, 0 };
    double t0 = now();
    int r = how == 0 ? nanosleep(&req, &rem) : how == 1 ? (int)syscall(SYS_nanosleep, &req, &rem) : usleep(4000000);
    double slept = now() - t0;
    EXPECT(r == 0, "%s returned %d (errno %d)", names[how], r, errno);
    EXPECT(slept >= 4.0 && slept < 4.6, "%s: woke after %.3f s, want 4 s", names[how], slept);
    EXPECT(req.tv_sec == 4 && req.tv_nsec == 0, "the request was changed");
    printf("%s slept %.3f s\n", names[how], slept);
    return fixture_finish();
}

int main(void) {
    printf("READY %d\n", getpid());
    fflush(stdout);
    pid_t raw = fork();
    if (raw == 0) return sleep4(1);
    pid_t us = fork();
    if (us == 0) return sleep4(2);
    int verdict = sleep4(0);
    int s1 = -1, s2 = -1;
    waitpid(raw, &s1, 0);
    waitpid(us, &s2, 0);
    return verdict || !WIFEXITED(s1) || WEXITSTATUS(s1) != 0 || !WIFEXITED(s2) || WEXITSTATUS(s2) != 0;
}
