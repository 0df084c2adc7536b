// Issue 10, "Refused, though the state is ordinary": pseudo-terminal pairs inside the
// application (master and slave, their settings, a controlling terminal that is one of them).
//   pair 1  the root holds the master (posix_openpt O_RDWR|O_NOCTTY); a child calls setsid,
//           opens the slave, which becomes its controlling terminal (TIOCSCTTY), makes its
//           process group the foreground one, and sets raw-ish termios (no ECHO/ICANON/ISIG,
//           VMIN 1, VTIME 0, VERASE ^H, 38400 baud, CS8 without parity) while the root sets the
//           window size to 50x132 on the master; "to-slave" is queued for the child to read,
//           "to-master" for the root
//   pair 2  the root holds both ends, canonical mode with ECHO off: a full line "line1\n" and
//           a partial one "part" are queued on the slave's input
// After restart: the child's controlling terminal is its slave (tcgetsid, /proc/self/stat
// tty_nr = the slave's st_rdev, /dev/tty opens), foreground group its own (tcgetpgrp), the
// slave has the same name (ptsname, ttyname), termios and window size are as set, and the
// queued bytes are there in both directions; pair 2 reads "line1\n", then, once the root
// writes "ial\n" to its master, "partial\n" (the partial line kept in canonical mode).
// With the argument "moved" (a migration, where the index may be in use on the target and
// the pair renumbered, PTYRegistry): the names need not be the old ones, but each must name
// the pair the process holds (ttyname's and ptsname's device is the fd's, tty_nr the slave's).
#include "fixture.h"
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <poll.h>

static int same_termios(struct termios *a, struct termios *b) {
    return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag && a->c_lflag == b->c_lflag &&
           memcmp(a->c_cc, b->c_cc, sizeof a->c_cc) == 0 && cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b);
}

static long tty_nr(void) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    char *r = f ? fgets(buf, sizeof buf, f) : NULL;
    if (f) fclose(f);
    char *p = r ? strrchr(buf, ')') : NULL;
    long nr = -1;
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %ld", &nr);
    return nr;
}

static ssize_t read_wait(int fd, char *b, size_t n, int ms) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, ms) != 1) return -2;
    return read(fd, b, n);
}

static int moved;

// The device /dev/pts/N named `name` is, or -1.
static long rdev_of(const char *name) {
    struct stat s;
    return name && stat(name, &s) == 0 ? (long)s.st_rdev : -1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    moved = argc > 1 && strcmp(argv[1], "moved") == 0;
    int m1 = posix_openpt(O_RDWR | O_NOCTTY);
    grantpt(m1);
    unlockpt(m1);
    char name1[64];
    snprintf(name1, sizeof name1, "%s", ptsname(m1));
    struct winsize ws = { .ws_row = 50, .ws_col = 132 };
    ioctl(m1, TIOCSWINSZ, &ws);
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        setsid();
        int s = open(name1, O_RDWR);
        ioctl(s, TIOCSCTTY, 0);
        tcsetpgrp(s, getpgrp());
        struct termios t;
        tcgetattr(s, &t);
        t.c_lflag &= ~(ECHO | ICANON | ISIG | IEXTEN);
        t.c_iflag &= ~(ICRNL | IXON);
        t.c_cflag = (t.c_cflag & ~(CSIZE | PARENB)) | CS8;
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        t.c_cc[VERASE] = 8;
        cfsetispeed(&t, B38400);
        cfsetospeed(&t, B38400);
        tcsetattr(s, TCSANOW, &t);
        struct termios saved;
        tcgetattr(s, &saved);
        struct stat st;
        fstat(s, &st);
        write(s, "to-master", 9);
        fixture_wait();
        fixture_failures = 0;
        EXPECT(tcgetsid(s) == getsid(0) && getsid(0) == getpid(), "child: the slave is not its session's controlling terminal (tcgetsid %d, sid %d)", tcgetsid(s), getsid(0));
        if (moved) fstat(s, &st);                               // the pair as it is now
        EXPECT(tty_nr() == (long)st.st_rdev, "child: tty_nr %ld, expected the slave's %ld", tty_nr(), (long)st.st_rdev);
        int dt = open("/dev/tty", O_RDWR);
        EXPECT(dt >= 0, "child: /dev/tty does not open (no controlling terminal): %s", strerror(errno));
        EXPECT(tcgetpgrp(s) == getpgrp(), "child: foreground group %d, expected %d", tcgetpgrp(s), getpgrp());
        char *tn = ttyname(s);
        if (moved) EXPECT(tn && rdev_of(tn) == (long)st.st_rdev, "child: ttyname %s does not name its slave", tn ? tn : "(none)");
        else EXPECT(tn && strcmp(tn, name1) == 0, "child: ttyname %s, was %s", tn ? tn : "(none)", name1);
        struct termios now;
        tcgetattr(s, &now);
        EXPECT(same_termios(&now, &saved), "child: termios changed (lflag %o was %o, iflag %o was %o, cflag %o was %o)", now.c_lflag, saved.c_lflag, now.c_iflag, saved.c_iflag, now.c_cflag, saved.c_cflag);
        struct winsize w;
        ioctl(s, TIOCGWINSZ, &w);
        EXPECT(w.ws_row == 50 && w.ws_col == 132, "child: window %dx%d", w.ws_row, w.ws_col);
        char b[32] = {0};
        ssize_t n = read_wait(s, b, sizeof b, 2000);
        EXPECT(n == 8 && strcmp(b, "to-slave") == 0, "child: read %zd '%s' from the slave", n, b);
        write(s, "child-done", 10);
        printf("child %s\n", fixture_failures ? "FAIL" : "OK");
        _exit(fixture_failures ? 1 : 0);
    }
    int m2 = posix_openpt(O_RDWR | O_NOCTTY);
    grantpt(m2);
    unlockpt(m2);
    char name2[64];
    snprintf(name2, sizeof name2, "%s", ptsname(m2));
    int s2 = open(name2, O_RDWR | O_NOCTTY);
    struct termios t2;
    tcgetattr(s2, &t2);
    t2.c_lflag &= ~ECHO;
    tcsetattr(s2, TCSANOW, &t2);
    tcgetattr(s2, &t2);
    write(m2, "line1\npart", 10);
    struct pollfd pm = { .fd = m1, .events = POLLIN };
    poll(&pm, 1, 5000);                                         // the child wrote: its termios are set (no echo)
    write(m1, "to-slave", 8);
    usleep(100000);
    char b[64] = {0};

    fixture_ready();
    fixture_wait();

    if (moved) {
        struct stat s2now;
        fstat(s2, &s2now);
        EXPECT(rdev_of(ptsname(m2)) == (long)s2now.st_rdev, "pair 2: ptsname %s does not name the slave the root holds", ptsname(m2));
        char now1[64], now2[64];                                // ptsname(3) returns a static buffer
        snprintf(now1, sizeof now1, "%s", ptsname(m1));
        snprintf(now2, sizeof now2, "%s", ptsname(m2));
        EXPECT(rdev_of(now1) >= 0 && strcmp(now1, now2) != 0, "ptsname %s %s", now1, now2);
    } else {
        EXPECT(strcmp(ptsname(m1), name1) == 0 && strcmp(ptsname(m2), name2) == 0, "ptsname %s %s, were %s %s", ptsname(m1), ptsname(m2), name1, name2);
    }
    ssize_t n = read_wait(m1, b, 9, 2000);
    EXPECT(n == 9 && memcmp(b, "to-master", 9) == 0, "pair 1: master read %zd '%.*s'", n, (int)(n > 0 ? n : 0), b);
    struct winsize w;
    ioctl(m1, TIOCGWINSZ, &w);
    EXPECT(w.ws_row == 50 && w.ws_col == 132, "pair 1: window %dx%d on the master", w.ws_row, w.ws_col);
    kill(child, SIGUSR1);
    memset(b, 0, sizeof b);
    n = read_wait(m1, b, 10, 5000);
    EXPECT(n == 10 && memcmp(b, "child-done", 10) == 0, "pair 1: master read %zd '%s' after the child's checks", n, b);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    struct termios now2;
    tcgetattr(s2, &now2);
    EXPECT(same_termios(&now2, &t2), "pair 2: termios changed (lflag %o, was %o)", now2.c_lflag, t2.c_lflag);
    memset(b, 0, sizeof b);
    n = read_wait(s2, b, sizeof b, 2000);
    EXPECT(n == 6 && strcmp(b, "line1\n") == 0, "pair 2: first line %zd '%s'", n, b);
    write(m2, "ial\n", 4);
    memset(b, 0, sizeof b);
    n = read_wait(s2, b, sizeof b, 2000);
    EXPECT(n == 8 && strcmp(b, "partial\n") == 0, "pair 2: second line %zd '%s' (partial line lost?)", n, b);
    return fixture_finish();
}
