// Members of a session that has a controlling terminal (an application pty) but that have none
// themselves: M forked by the leader before it took the terminal (TIOCSCTTY sets only the
// caller's), N gave it up with TIOCNOTTY. After restart both have it (inherited from the
// restored leader): tty_nr != 0 and /dev/tty opens.
#include "fixture.h"
#include <sys/ioctl.h>
#include <sys/wait.h>
static int check(const char *who) {
    int fd = open("/dev/tty", O_RDWR);
    if (fd >= 0) { printf("FAIL: %s: /dev/tty opens: it has a controlling terminal\n", who); fflush(stdout); return 0; }
    return 1;
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m = posix_openpt(O_RDWR | O_NOCTTY); grantpt(m); unlockpt(m);
    char name[64]; snprintf(name, sizeof name, "%s", ptsname(m));
    pid_t L = fork();
    if (L == 0) {
        fixture_catch_usr1();
        setsid();
        pid_t M = fork();
        if (M == 0) { fixture_wait(); _exit(check("M") ? 0 : 1); }
        int s = open(name, O_RDWR); (void)s;     // becomes the controlling terminal
        pid_t N = fork();
        if (N == 0) { ioctl(s, TIOCNOTTY); fixture_wait(); _exit(check("N") ? 0 : 1); }
        fixture_wait();
        kill(M, SIGUSR1); kill(N, SIGUSR1);
        int a, b; waitpid(M, &a, 0); waitpid(N, &b, 0);
        _exit(a == 0 && b == 0 ? 0 : 1);
    }
    usleep(200000);
    fixture_ready();
    fixture_wait();
    kill(L, SIGUSR1);
    int st; waitpid(L, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "leader status %#x", st);
    return fixture_finish();
}
