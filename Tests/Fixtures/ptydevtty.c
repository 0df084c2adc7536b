// A session leader on an application pty holds an fd on /dev/tty (less, ssh's askpass, sudo,
// shells do). Restart refused: the fd is reopened before the leader's TIOCSCTTY.
#include "fixture.h"
#include <sys/ioctl.h>
#include <sys/wait.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m = posix_openpt(O_RDWR | O_NOCTTY); grantpt(m); unlockpt(m);
    char name[64]; snprintf(name, sizeof name, "%s", ptsname(m));
    pid_t c = fork();
    if (c == 0) {
        fixture_catch_usr1();
        setsid();
        int s = open(name, O_RDWR);          // controlling terminal
        int dt = open("/dev/tty", O_RDWR);
        unsigned int d0 = 0, d1 = 0; ioctl(dt, TIOCGDEV, &d0);
        close(s);
        fixture_wait();
        int ok = ioctl(dt, TIOCGDEV, &d1) == 0 && d1 == d0 && write(dt, "hi", 2) == 2;
        _exit(ok ? 0 : 1);
    }
    usleep(100000);
    fixture_ready();
    fixture_wait();
    kill(c, SIGUSR1);
    char b[8] = {0}; read(m, b, 2);
    int st; waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strcmp(b, "hi") == 0, "child %#x, master read '%s'", st, b);
    return fixture_finish();
}
