// Two processes sharing one fd table (CLONE_FILES) whose parent, the creator of both, has
// exited: they are now children of the root (a child subreaper) and share the table with
// each other but not with it. That cannot be rebuilt by forking: the checkpoint must fail,
// naming them, and the application go on.
#include "fixture.h"
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

int main(void) {
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t a = fork();
    if (a == 0) {
        for (int i = 0; i < 2; i++) {
            if (syscall(SYS_clone, CLONE_FILES | SIGCHLD, NULL, NULL, NULL, 0) == 0) {
                sleep(3);
                _exit(0);
            }
        }
        _exit(0);
    }
    waitpid(a, NULL, 0);
    printf("READY %d\n", getpid());
    fflush(stdout);
    int n = 0;
    while (wait(NULL) > 0) n++;
    printf("DONE %d\n", n);
    fflush(stdout);
    return 0;
}
