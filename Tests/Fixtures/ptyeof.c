// A pseudo-terminal in canonical mode holding typed input nobody has read yet, with
// end-of-file marks in it (util-linux `script -qfc CMD < /dev/null` leaves one when its
// stdin ends). Found by probing (December 2026): each mark came back as a NUL byte inside
// a line (read raw, a mark looks like a typed NUL), and the input was echoed to the master
// a second time (written back to the master, the line discipline took it once the echo
// was on again).
// The master types "ab\n", EOF, "cd", EOF, "ef" (a partial line); its echo is read away.
// After SIGUSR1 the slave (non-blocking) reads "ab\n", then 0 (EOF), then "cd", then
// nothing (EAGAIN); the master has nothing to read; "\n" typed then completes "ef\n".
#include "fixture.h"
#include <poll.h>
#include <pty.h>
#include <termios.h>

static void drain(int fd) {
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    char junk[256];
    while (read(fd, junk, sizeof junk) > 0) {}
    fcntl(fd, F_SETFL, fl);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m, s;
    if (openpty(&m, &s, NULL, NULL, NULL) < 0) { perror("openpty"); return 4; }
    struct termios t;
    tcgetattr(s, &t);
    char eof = t.c_cc[VEOF];
    write(m, "ab\n", 3);
    write(m, &eof, 1);
    write(m, "cd", 2);
    write(m, &eof, 1);
    write(m, "ef", 2);
    usleep(100000);
    drain(m);
    fixture_ready();
    fixture_wait();
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    char b[64];
    ssize_t n = read(s, b, sizeof b);
    EXPECT(n == 3 && memcmp(b, "ab\n", 3) == 0, "first read: %zd bytes (want \"ab\\n\")", n);
    n = read(s, b, sizeof b);
    EXPECT(n == 0, "second read: %zd bytes, the first 0x%02x (want 0: the EOF mark)", n, n > 0 ? (unsigned char)b[0] : 0);
    n = read(s, b, sizeof b);
    EXPECT(n == 2 && memcmp(b, "cd", 2) == 0, "third read: %zd bytes (want \"cd\", ended by the EOF mark)", n);
    n = read(s, b, sizeof b);
    EXPECT(n < 0 && errno == EAGAIN, "fourth read: %zd bytes (want EAGAIN: \"ef\" is a partial line)", n);
    struct pollfd p = { m, POLLIN, 0 };
    if (poll(&p, 1, 200) > 0) {
        n = read(m, b, sizeof b);
        char hex[200] = "", *q = hex;
        for (ssize_t i = 0; i < n && i < 40; i++) q += sprintf(q, "%02x ", (unsigned char)b[i]);
        EXPECT(0, "the master has %zd bytes to read (input echoed again?): %s", n, hex);
    }
    drain(m);
    write(m, "\n", 1);
    struct pollfd ps = { s, POLLIN, 0 };
    poll(&ps, 1, 2000);
    n = read(s, b, sizeof b);
    EXPECT(n == 3 && memcmp(b, "ef\n", 3) == 0, "after a newline: %zd bytes (want \"ef\\n\")", n);
    return fixture_finish();
}
