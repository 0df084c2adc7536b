// A process that chroot()ed into a directory of the test and changed into a subdirectory,
// then forked: after restart both still have that root and cwd (getcwd "/sub", the jail's
// marker file at "/marker").
#include "fixture.h"
#include <sys/stat.h>
#include <sys/wait.h>

static int check(const char *who) {
    char cwd[256] = {0};
    int ok = 1;
    if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, "/sub") != 0) { printf("FAIL: %s cwd '%s'\n", who, cwd); ok = 0; }
    if (access("/marker", R_OK) != 0) { printf("FAIL: %s cannot see /marker in its root\n", who); ok = 0; }
    fflush(stdout);
    return ok;
}

int main(void) {
    mkdir("jail", 0755);
    mkdir("jail/sub", 0755);
    close(open("jail/marker", O_CREAT | O_WRONLY, 0644));
    if (chroot("jail") != 0 || chdir("/sub") != 0) { perror("chroot"); return 2; }
    pid_t c = fork();
    if (c == 0) {
        fixture_catch_usr1();
        fixture_wait();
        _exit(check("child") ? 0 : 1);
    }
    usleep(100000);
    fixture_ready();
    fixture_wait();
    EXPECT(check("parent"), "parent root or cwd");
    kill(c, SIGUSR1);
    int st = 0;
    waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %x", st);
    return fixture_finish();
}
