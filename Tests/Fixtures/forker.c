// A process that keeps forking while it is checkpointed: a new child every millisecond
// (up to 300), each of which also forks one grandchild, and all of them wait in pause().
// A checkpoint that misses a process born during the seize leaves it out of the snapshot;
// with --kill it would then survive, which the test looks for (argv[0] names them all).
#include "fixture.h"
#include <sys/wait.h>

int main(void) {
    fixture_ready();
    for (int i = 0; i < 300 && !fixture_go; i++) {
        pid_t c = fork();
        if (c == 0) {
            if (fork() == 0) { for (;;) pause(); }
            for (;;) pause();
        }
        usleep(1000);
    }
    (void)fixture_wait;
    (void)fixture_finish;
    for (;;) pause();
}
