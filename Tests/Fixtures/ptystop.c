// Output stopped by the user's ^S (IXON, the default): the master wrote VSTOP, the slave's
// output is held; "out1" was written before and is still unread on the master (unless the
// argument "empty"). After restart: the master reads "out1", then nothing; a non-blocking
// write on the slave gives EAGAIN (output still stopped); once the master writes ^Q it goes.
#include "fixture.h"
#include <sys/ioctl.h>
#include <termios.h>
#include <poll.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int empty = argc > 1 && strcmp(argv[1], "empty") == 0; int tco = argc > 1 && strcmp(argv[1], "tcooff") == 0;
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    grantpt(m); unlockpt(m);
    int s = open(ptsname(m), O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (!empty) write(s, "out1", 4);
    if (tco) tcflow(s, TCOOFF); else write(m, "\x13", 1);
    usleep(100000);
    errno = 0;
    ssize_t w0 = write(s, "x", 1);
    printf("setup: write while stopped %zd errno %d\n", w0, errno);
    fcntl(m, F_SETFL, O_RDWR | O_NONBLOCK);
    fixture_ready();
    fixture_wait();
    char b[64] = {0};
    ssize_t r = read(m, b, sizeof b);
    if (empty) EXPECT(r == -1 && errno == EAGAIN, "master read %zd '%s', expected nothing", r, b);
    else EXPECT(r == 4 && memcmp(b, "out1", 4) == 0, "master read %zd '%s', expected out1", r, b);
    errno = 0;
    ssize_t w = write(s, "y", 1);
    EXPECT(w == -1 && errno == EAGAIN, "slave write %zd errno %d: output no longer stopped", w, errno);
    if (tco) tcflow(s, TCOON); else write(m, "\x11", 1);
    usleep(100000);
    w = write(s, "z", 1);
    EXPECT(w == 1, "slave write after ^Q: %zd errno %d", w, errno);
    memset(b, 0, sizeof b);
    struct pollfd p = { .fd = m, .events = POLLIN }; poll(&p, 1, 2000);
    r = read(m, b, sizeof b);
    EXPECT(r >= 1 && b[r - 1] == 'z', "master read %zd '%s' after ^Q", r, b);
    return fixture_finish();
}
