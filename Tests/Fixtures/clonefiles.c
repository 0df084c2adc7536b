// A parent and a child created with clone(CLONE_FILES | CLONE_FS), and a second child made
// by a plain fork: after checkpoint/kill/restart the first pair still shares one fd table
// and one cwd (kcmp, and an fd opened by the child is there in the parent; the child's chdir
// moves the parent), and the plain child still has its own.
#include "fixture.h"
#include <limits.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>

int main(void) {
    int p[2];
    pipe(p);
    fixture_ready();
    // No stack: without CLONE_VM the child runs on its copy of ours, as after fork.
    pid_t sharer = (pid_t)syscall(SYS_clone, CLONE_FILES | CLONE_FS | SIGCHLD, NULL, NULL, NULL, 0);
    if (sharer == 0) {
        fixture_wait();
        int fd = open("/etc/hostname", O_RDONLY);
        chdir("/");
        write(p[1], &fd, sizeof fd);
        return 0;
    }
    pid_t plain = fork();
    if (plain == 0) { fixture_wait(); return 0; }
    fixture_wait();
    pid_t me = getpid();
    EXPECT(syscall(SYS_kcmp, me, sharer, 2 /* KCMP_FILES */, 0, 0) == 0, "the clone no longer shares the fd table");
    EXPECT(syscall(SYS_kcmp, me, sharer, 3 /* KCMP_FS */, 0, 0) == 0, "the clone no longer shares cwd/root/umask");
    EXPECT(syscall(SYS_kcmp, me, plain, 2 /* KCMP_FILES */, 0, 0) != 0, "the forked child shares the fd table");
    EXPECT(syscall(SYS_kcmp, me, plain, 3 /* KCMP_FS */, 0, 0) != 0, "the forked child shares cwd");
    kill(sharer, SIGUSR1);
    kill(plain, SIGUSR1);
    int fd = -1;
    EXPECT(read(p[0], &fd, sizeof fd) == sizeof fd, "no fd number from the clone");
    char link[64], path[PATH_MAX] = {0}, cwd[PATH_MAX] = {0};
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    EXPECT(readlink(link, path, sizeof path - 1) > 0 && strcmp(path, "/etc/hostname") == 0, "fd %d opened by the clone is '%s' here", fd, path);
    EXPECT(getcwd(cwd, sizeof cwd) && strcmp(cwd, "/") == 0, "the clone's chdir did not move us: cwd %s", cwd);
    int st1 = -1, st2 = -1;
    waitpid(sharer, &st1, 0);
    waitpid(plain, &st2, 0);
    EXPECT(WIFEXITED(st1) && WEXITSTATUS(st1) == 0 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0, "children: %x %x", st1, st2);
    return fixture_finish();
}
