// Issue 10, "Refused, though the state is ordinary": applications that made their own
// namespaces; here a mount namespace. A child unshare(CLONE_NEWNS), makes every mount private
// (MS_REC|MS_PRIVATE, so nothing propagates to the root's namespace), then:
//   tmpfs    mounts a tmpfs (size=1m, mode=0750) on ./mnt-t, writes mnt-t/data.txt, and keeps
//            mnt-t/open.txt open (an fd on a file of that mount)
//   bind     bind-mounts ./src on ./mnt-b, then remounts it read-only (MS_REMOUNT|MS_BIND|
//            MS_RDONLY)
//   cwd      its cwd is mnt-t (a directory of its own mount)
//   ro       a second tmpfs on ./mnt-r holding r.txt, then remounted read-only
// After restart the child checks: its mount namespace is not the root's; /proc/self/mountinfo
// lists a tmpfs on mnt-t with size=1024k and mode=750 and a read-only bind of src on mnt-b;
// data.txt's content through the mount; its open fd is on that tmpfs (same st_dev as the
// mount); writing into mnt-b fails EROFS while src stays writable; the root checks that it
// sees none of these mounts (mnt-t is an empty directory of the original file system).
// Nothing is mounted or written in the root's namespace, even when the child finds itself in it.
#include "fixture.h"
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

static void ns_of(pid_t pid, char *out, size_t n) { char p[64]; snprintf(p, sizeof p, "/proc/%d/ns/mnt", pid); ssize_t r = readlink(p, out, n - 1); out[r > 0 ? r : 0] = 0; }

// The mountinfo line whose mount point ends with suffix, or "".
static void mountinfo(const char *suffix, char *out, size_t n) {
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[1024];
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        char mp[512];
        if (sscanf(line, "%*d %*d %*s %*s %511s", mp) == 1) {
            size_t a = strlen(mp), b = strlen(suffix);
            if (a >= b && strcmp(mp + a - b, suffix) == 0) snprintf(out, n, "%s", line);
        }
    }
    if (f) fclose(f);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    mkdir("mnt-t", 0755);
    mkdir("mnt-b", 0755);
    mkdir("mnt-r", 0755);
    mkdir("src", 0755);
    close(open("src/file", O_CREAT | O_WRONLY, 0644));
    struct stat plain;
    stat("mnt-t", &plain);
    pid_t child = fork();
    if (child == 0) {
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) { printf("FAIL: unshare/private: %s\n", strerror(errno)); _exit(1); }
        if (mount("fixture-tmpfs", "mnt-t", "tmpfs", 0, "size=1m,mode=0750") < 0) { printf("FAIL: mount tmpfs: %s\n", strerror(errno)); _exit(1); }
        mount("src", "mnt-b", NULL, MS_BIND, NULL);
        if (mount("fixture-ro", "mnt-r", "tmpfs", 0, "size=64k") < 0) { printf("FAIL: mount tmpfs ro: %s\n", strerror(errno)); _exit(1); }
        int r = open("mnt-r/r.txt", O_CREAT | O_WRONLY, 0640);
        write(r, "read-only", 9);
        close(r);
        if (mount(NULL, "mnt-r", NULL, MS_REMOUNT | MS_RDONLY, "size=64k") < 0) { printf("FAIL: remount ro: %s\n", strerror(errno)); _exit(1); }
        mount(NULL, "mnt-b", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
        int d = open("mnt-t/data.txt", O_CREAT | O_WRONLY, 0644);
        write(d, "on tmpfs", 8);
        close(d);
        int keep = open("mnt-t/open.txt", O_CREAT | O_RDWR, 0600);
        write(keep, "kept", 4);
        chdir("mnt-t");
        char t0[1024], b0[1024];
        mountinfo("/mnt-t", t0, sizeof t0);
        mountinfo("/mnt-b", b0, sizeof b0);
        fixture_wait();
        fixture_failures = 0;
        char parent[64], mine[64];
        ns_of(getppid(), parent, sizeof parent);
        ns_of(getpid(), mine, sizeof mine);
        EXPECT(strcmp(parent, mine) != 0, "child: in its parent's mount namespace (%s)", mine);
        char t[1024], b[1024];
        mountinfo("/mnt-t", t, sizeof t);
        mountinfo("/mnt-b", b, sizeof b);
        EXPECT(strstr(t, " - tmpfs fixture-tmpfs ") && strstr(t, "size=1024k") && strstr(t, "mode=750"), "child: no tmpfs on mnt-t: '%s' (was '%s')", t, t0);
        EXPECT(strstr(b, " ro") && b[0], "child: no read-only bind on mnt-b: '%s' (was '%s')", b, b0);
        char buf[16] = {0};
        int d2 = open("data.txt", O_RDONLY);                    // relative: cwd is mnt-t
        EXPECT(d2 >= 0 && read(d2, buf, 8) == 8 && !strcmp(buf, "on tmpfs"), "child: data.txt through its cwd: '%s'", buf);
        struct stat ks, ms;
        fstat(keep, &ks);
        stat(".", &ms);
        EXPECT(ks.st_dev == ms.st_dev && ms.st_dev != plain.st_dev, "child: open.txt or cwd not on the tmpfs (dev %lx/%lx, plain %lx)", (long)ks.st_dev, (long)ms.st_dev, (long)plain.st_dev);
        memset(buf, 0, sizeof buf);
        EXPECT(pread(keep, buf, 4, 0) == 4 && !strcmp(buf, "kept"), "child: open.txt '%s'", buf);
        char rb[16] = {0};
        int r2 = open("../mnt-r/r.txt", O_RDONLY);
        EXPECT(r2 >= 0 && read(r2, rb, 9) == 9 && !strcmp(rb, "read-only"), "child: mnt-r/r.txt '%s'", rb);
        if (strcmp(parent, mine) != 0) {
            int w2 = open("../mnt-r/new", O_CREAT | O_WRONLY, 0644);
            EXPECT(w2 < 0 && errno == EROFS, "child: mnt-r is writable (open %d errno %d)", w2, errno);
        }
        if (strcmp(parent, mine) != 0) {
            int w = open("../mnt-b/new", O_CREAT | O_WRONLY, 0644);
            EXPECT(w < 0 && errno == EROFS, "child: mnt-b is writable (open %d errno %d)", w, errno);
        }
        printf("child %s\n", fixture_failures ? "FAIL" : "OK");
        _exit(fixture_failures ? 1 : 0);
    }
    for (int i = 0; i < 200; i++) { char p[64]; snprintf(p, sizeof p, "/proc/%d/cwd/data.txt", child); if (access(p, F_OK) == 0) break; usleep(10000); }

    fixture_ready();
    fixture_wait();

    char t[1024];
    mountinfo("/mnt-t", t, sizeof t);
    EXPECT(t[0] == 0, "root: sees a mount on mnt-t: %s", t);
    struct stat s;
    EXPECT(stat("mnt-t", &s) == 0 && s.st_dev == plain.st_dev && access("mnt-t/data.txt", F_OK) < 0, "root: mnt-t is not the plain empty directory");
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    return fixture_finish();
}
