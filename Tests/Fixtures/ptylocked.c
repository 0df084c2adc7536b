// A master still locked (posix_openpt, no unlockpt yet): TIOCGPTLCK 1, the slave does not open
// (EIO). After restart: the same.
#include "fixture.h"
#include <sys/ioctl.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    char name[64]; snprintf(name, sizeof name, "%s", ptsname(m));
    int s0 = open(name, O_RDWR | O_NOCTTY); int e0 = errno;
    printf("setup: slave open %d errno %d\n", s0, e0);
    fixture_ready();
    fixture_wait();
    int lk = -1; ioctl(m, TIOCGPTLCK, &lk);
    EXPECT(lk == 1, "TIOCGPTLCK %d", lk);
    EXPECT(strcmp(ptsname(m), name) == 0, "ptsname %s was %s", ptsname(m), name);
    int s = open(name, O_RDWR | O_NOCTTY);
    EXPECT(s < 0 && errno == EIO, "slave open %d errno %d, expected EIO (locked)", s, errno);
    unlockpt(m);
    s = open(name, O_RDWR | O_NOCTTY);
    EXPECT(s >= 0, "slave open after unlockpt: %s", strerror(errno));
    return fixture_finish();
}
