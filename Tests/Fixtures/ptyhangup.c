// A slave fd whose master was closed (the terminal went away; a nohup'd child lives on): the
// kernel hung the slave up: read gives 0, write EIO, ioctl(TCGETS) EIO, poll POLLHUP. Also a
// second process with the same pair's slave as its controlling terminal (session leader C),
// its SIGHUP ignored. After restart the fds behave the same, and C has no controlling tty?
#include "fixture.h"
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <poll.h>

struct res { ssize_t r; int re; ssize_t w; int we; int ie; short rev; long tty; };
static long tty_nr(void) {
    char buf[1024]; FILE *f = fopen("/proc/self/stat", "r"); char *r = f ? fgets(buf, sizeof buf, f) : NULL; if (f) fclose(f);
    char *p = r ? strrchr(buf, ')') : NULL; long nr = -1; if (p) sscanf(p + 2, "%*c %*d %*d %*d %ld", &nr); return nr;
}
static void probe(int s, struct res *x) {
    char b[16];
    errno = 0; x->r = read(s, b, sizeof b); x->re = errno;
    errno = 0; x->w = write(s, "w", 1); x->we = errno;
    struct termios t; errno = 0; ioctl(s, TCGETS, &t); x->ie = errno;
    struct pollfd p = { .fd = s, .events = POLLIN | POLLOUT }; poll(&p, 1, 0); x->rev = p.revents;
    x->tty = tty_nr();
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    grantpt(m); unlockpt(m);
    char name[64]; snprintf(name, sizeof name, "%s", ptsname(m));
    int pp[2], pq[2]; pipe(pp); pipe(pq);
    pid_t c = fork();
    if (c == 0) {
        fixture_catch_usr1();
        signal(SIGHUP, SIG_IGN); close(m);
        setsid();
        int s = open(name, O_RDWR);    // becomes the controlling terminal
        write(pp[1], "x", 1);
        char z; read(pq[0], &z, 1);      // the master is closed now
        usleep(100000);
        struct res a, b2; probe(s, &a);
        printf("child setup: read %zd/%d write %zd/%d ioctl %d poll %#x tty_nr %ld\n", a.r, a.re, a.w, a.we, a.ie, a.rev, a.tty);
        fixture_wait();
        probe(s, &b2);
        int ok = a.r == b2.r && a.re == b2.re && a.w == b2.w && a.we == b2.we && a.ie == b2.ie && a.rev == b2.rev && a.tty == b2.tty;
        if (!ok) printf("FAIL: child: read %zd/%d write %zd/%d ioctl %d poll %#x tty_nr %ld\n", b2.r, b2.re, b2.w, b2.we, b2.ie, b2.rev, b2.tty);
        int dt = open("/dev/tty", O_RDWR);
        if (dt >= 0) { printf("FAIL: child: /dev/tty opens after the hangup\n"); ok = 0; }
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    char z; read(pp[0], &z, 1);
    close(m);
    write(pq[1], "y", 1);
    usleep(300000);
    fixture_ready();
    fixture_wait();
    kill(c, SIGUSR1);
    int st; waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    return fixture_finish();
}
