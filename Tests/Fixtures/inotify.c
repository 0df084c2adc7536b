// An inotify instance watching a directory and a file, with a gap in its watch descriptors
// (watches added and removed before them) and a dup() of its fd: after checkpoint/kill/
// restart the same watch descriptors report the events, the next watch gets the next wd,
// and both fds are still one instance.
#include "fixture.h"
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static int next_event(int fd, struct inotify_event *out, char *name, size_t namelen) {
    char buf[4096] __attribute__((aligned(8)));
    for (int tries = 0; tries < 100; tries++) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            struct inotify_event *e = (struct inotify_event *)buf;
            *out = *e;
            snprintf(name, namelen, "%s", e->len ? e->name : "");
            return 1;
        }
        usleep(10000);
    }
    return 0;
}

int main(void) {
    mkdir("watched", 0755);
    int tf = open("watched.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fd = inotify_init1(IN_NONBLOCK);
    // 40 watches added and removed: the real ones get wd 41 and 42.
    for (int i = 0; i < 40; i++) inotify_rm_watch(fd, inotify_add_watch(fd, ".", IN_ATTRIB));
    char drain[4096];
    while (read(fd, drain, sizeof drain) > 0) {}
    int dirwd = inotify_add_watch(fd, "watched", IN_CREATE | IN_DELETE);
    int filewd = inotify_add_watch(fd, "watched.txt", IN_MODIFY | IN_EXCL_UNLINK);
    int copy = dup(fd);
    printf("wds %d %d\n", dirwd, filewd);

    fixture_ready();
    fixture_wait();

    EXPECT(fcntl(fd, F_GETFL) & O_NONBLOCK, "inotify fd lost O_NONBLOCK");
    EXPECT(syscall(SYS_kcmp, getpid(), getpid(), 0 /* KCMP_FILE */, fd, copy) == 0, "the dup of the inotify fd is another instance");
    struct inotify_event e;
    char name[256];
    EXPECT(read(fd, drain, sizeof drain) < 0 && errno == EAGAIN, "events queued right after restart");
    close(open("watched/new-file", O_WRONLY | O_CREAT, 0644));
    EXPECT(next_event(copy, &e, name, sizeof name) && e.wd == dirwd && (e.mask & IN_CREATE) && strcmp(name, "new-file") == 0,
           "create in the directory: wd %d mask %x name '%s' (want wd %d)", e.wd, e.mask, name, dirwd);
    write(tf, "x", 1);
    EXPECT(next_event(fd, &e, name, sizeof name) && e.wd == filewd && (e.mask & IN_MODIFY),
           "write to the file: wd %d mask %x (want wd %d)", e.wd, e.mask, filewd);
    int again = inotify_add_watch(fd, "watched", IN_CREATE | IN_DELETE);
    EXPECT(again == dirwd, "watching the directory again gave wd %d, not %d", again, dirwd);
    int third = inotify_add_watch(fd, ".", IN_ATTRIB);
    EXPECT(third == filewd + 1, "a new watch got wd %d, want %d", third, filewd + 1);
    return fixture_finish();
}
