// A slave in exclusive mode (TIOCEXCL, as serial/terminal programs set it): lost at restart.
#include "fixture.h"
#include <sys/ioctl.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m = posix_openpt(O_RDWR | O_NOCTTY); grantpt(m); unlockpt(m);
    int s = open(ptsname(m), O_RDWR | O_NOCTTY);
    ioctl(s, TIOCEXCL);
    fixture_ready();
    fixture_wait();
    int ex = -1;
    EXPECT(ioctl(s, TIOCGEXCL, &ex) == 0 && ex == 1, "TIOCGEXCL %d, expected 1", ex);
    return fixture_finish();
}
