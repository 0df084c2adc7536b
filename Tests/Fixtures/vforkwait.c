// A parent blocked in vfork while its child (which shares its memory) sleeps before
// _exit: the checkpoint must fail at once, naming the parent, and the application go on.
#include "fixture.h"

int main(void) {
    printf("READY %d\n", getpid());
    fflush(stdout);
    pid_t child = vfork();
    if (child == 0) {
        sleep(2);
        _exit(0);
    }
    printf("DONE %d\n", child);
    fflush(stdout);
    return 0;
}
