// A daemon-style double fork in an application whose root is not a subreaper: the grandchild K
// is reparented outside the application (to init or the nearest subreaper) but stays in the
// root's session and group. The checkpoint leaves K out silently (not killed either); the
// restart then fails, naming K, which still uses the root's pid as its sid and pgid.
#include "fixture.h"
#include <sys/wait.h>
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t p = fork();
    if (p == 0) {
        if (fork() == 0) { sleep(60); _exit(0); }   // K: escapes, exits on its own after 60 s
        _exit(0);
    }
    waitpid(p, NULL, 0);
    usleep(100000);
    fixture_ready();
    fixture_wait();
    return fixture_finish();
}
