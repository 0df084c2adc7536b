// A daemon's child lowers RLIMIT_NOFILE and RLIMIT_CORE, then drops to uid/gid 1000. Its
// limits were lost at restart (found by the fourth probing round, December 2026): prlimit(2)
// of another user's process needs CAP_SYS_RESOURCE even to read, which root lacks in
// containers (and on these test machines); /proc/PID/limits shows them to anyone.
#include "fixture.h"
#include <sys/resource.h>
#include <sys/wait.h>
int main(void) {
    pid_t c = fork();
    if (c == 0) {
        fixture_catch_usr1();
        struct rlimit n = { 256, 512 }, core = { 0, 0 };
        setrlimit(RLIMIT_NOFILE, &n); setrlimit(RLIMIT_CORE, &core);
        if (setresgid(1000, 1000, 1000) || setresuid(1000, 1000, 1000)) _exit(2);
        while (!fixture_go) pause();
        getrlimit(RLIMIT_NOFILE, &n); getrlimit(RLIMIT_CORE, &core);
        int bad = 0;
        if (n.rlim_cur != 256 || n.rlim_max != 512) { printf("FAIL: uid 1000 child: RLIMIT_NOFILE %llu/%llu, want 256/512\n", (unsigned long long)n.rlim_cur, (unsigned long long)n.rlim_max); bad++; }
        if (core.rlim_cur != 0 || core.rlim_max != 0) { printf("FAIL: uid 1000 child: RLIMIT_CORE %llu/%llu, want 0/0\n", (unsigned long long)core.rlim_cur, (unsigned long long)core.rlim_max); bad++; }
        fflush(stdout); _exit(bad);
    }
    fixture_ready();
    fixture_wait();
    kill(c, SIGUSR1);
    int s; waitpid(c, &s, 0);
    EXPECT(WIFEXITED(s) && WEXITSTATUS(s) == 0, "child status 0x%x", s);
    return fixture_finish();
}
