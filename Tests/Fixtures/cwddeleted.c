// Issue 10, "Refused, though the state is ordinary": the current directory deleted while the
// process sits in it.
//   root     mkdir work.d (mode 0750), chdir into it, rmdir it (from the parent directory
//            by path): its cwd is a removed directory
//   child    a child forked before, sitting in another removed directory (gone.d/sub; its
//            parent gone.d stays)
// After restart: readlink /proc/self/cwd ends with " (deleted)" and names the same path;
// getcwd(3) fails with ENOENT (as the kernel does for an unlinked cwd); stat(".") gives a
// directory with st_nlink 0 and the original mode; creating a file in it fails ENOENT;
// ".." is still the parent directory (same inode as before).
#include "fixture.h"
#include <sys/stat.h>
#include <sys/wait.h>

static void check_removed(const char *who, const char *name, mode_t mode, ino_t parent) {
    char link[512] = {0}, want[512];
    readlink("/proc/self/cwd", link, sizeof link - 1);
    snprintf(want, sizeof want, "/%s (deleted)", name);
    size_t lw = strlen(want), ll = strlen(link);
    EXPECT(ll >= lw && strcmp(link + ll - lw, want) == 0, "%s: /proc/self/cwd is '%s', expected '...%s'", who, link, want);
    char buf[512];
    errno = 0;
    EXPECT(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "%s: getcwd gave '%s' (errno %d), expected ENOENT", who, errno ? "" : buf, errno);
    struct stat s;
    EXPECT(stat(".", &s) == 0 && S_ISDIR(s.st_mode) && s.st_nlink == 0 && (s.st_mode & 07777) == mode, "%s: '.' mode %o nlink %ld (expected %o, 0)", who, s.st_mode & 07777, (long)s.st_nlink, mode);
    EXPECT(open("new.txt", O_CREAT | O_WRONLY, 0644) < 0 && errno == ENOENT, "%s: a file could be created in the removed directory", who);
    struct stat p;
    EXPECT(stat("..", &p) == 0 && p.st_ino == parent, "%s: '..' is inode %ld, expected %ld", who, (long)p.st_ino, (long)parent);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct stat top;
    stat(".", &top);
    mkdir("gone.d", 0755);
    mkdir("gone.d/sub", 0700);
    struct stat gone;
    stat("gone.d", &gone);
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        chdir("gone.d/sub");
        fixture_wait();
        check_removed("child", "sub", 0700, gone.st_ino);
        printf("child %s\n", fixture_failures ? "FAIL" : "OK");
        _exit(fixture_failures ? 1 : 0);
    }
    usleep(100000);
    mkdir("work.d", 0750);
    chmod("work.d", 0750);
    chdir("work.d");
    rmdir("../work.d");
    rmdir("../gone.d/sub");
    struct stat s;
    EXPECT(stat(".", &s) == 0 && s.st_nlink == 0, "setup: work.d not removed");

    fixture_ready();
    fixture_wait();

    check_removed("root", "work.d", 0750, top.st_ino);
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    return fixture_finish();
}
