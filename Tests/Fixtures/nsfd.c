// Issue 10, "Refused, though the state is ordinary": an fd open on a namespace file such as
// /proc/self/ns/net (programs keep them to setns(2) back and forth, or to keep a namespace
// alive).
//   self     fds on the root's own /proc/self/ns/net, /proc/self/ns/uts and ns/mnt
//   other    an fd on the network namespace of a child that unshare(CLONE_NEWNET)'d and has
//            since EXITED: the fd alone keeps that namespace alive (as `ip netns` bind mounts do)
//   flags    O_CLOEXEC on one of them
// After restart: each self fd is the namespace the root is in (fstat st_ino/st_dev equal to
// /proc/self/ns/*'s, and ioctl NS_GET_NSTYPE gives the type); the "other" fd is a network
// namespace that is not the root's (NS_GET_NSTYPE CLONE_NEWNET, a different inode), and a
// checker child can setns into it and finds only "lo" there (a fresh namespace).
#include "fixture.h"
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE 0xb703
#endif

static int same(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int net = open("/proc/self/ns/net", O_RDONLY);
    int uts = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
    int mnt = open("/proc/self/ns/mnt", O_RDONLY);
    int p[2];
    pipe(p);
    pid_t child = fork();
    if (child == 0) {
        unshare(CLONE_NEWNET);
        write(p[1], "x", 1);
        pause();
        _exit(0);
    }
    char c;
    read(p[0], &c, 1);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/net", child);
    int other = open(path, O_RDONLY);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(p[0]);
    close(p[1]);
    struct stat os;
    fstat(other, &os);

    fixture_ready();
    fixture_wait();

    EXPECT(same(net, "/proc/self/ns/net") && ioctl(net, NS_GET_NSTYPE) == CLONE_NEWNET, "net fd is not the root's network namespace (type %d)", ioctl(net, NS_GET_NSTYPE));
    EXPECT(same(uts, "/proc/self/ns/uts") && ioctl(uts, NS_GET_NSTYPE) == CLONE_NEWUTS, "uts fd is not the root's UTS namespace");
    EXPECT(same(mnt, "/proc/self/ns/mnt") && ioctl(mnt, NS_GET_NSTYPE) == CLONE_NEWNS, "mnt fd is not the root's mount namespace");
    EXPECT(fcntl(uts, F_GETFD) & FD_CLOEXEC, "uts fd lost O_CLOEXEC");
    EXPECT(ioctl(other, NS_GET_NSTYPE) == CLONE_NEWNET, "other fd: not a network namespace (NS_GET_NSTYPE %d errno %d)", ioctl(other, NS_GET_NSTYPE), errno);
    EXPECT(!same(other, "/proc/self/ns/net"), "other fd: it is the root's own network namespace now");
    pid_t checker = fork();
    if (checker == 0) {
        if (setns(other, CLONE_NEWNET) < 0) { printf("FAIL: checker: setns: %s\n", strerror(errno)); _exit(1); }
        struct if_nameindex *ifs = if_nameindex();
        int n = 0, lo = 0;
        for (struct if_nameindex *i = ifs; i && i->if_index; i++) { n++; if (!strcmp(i->if_name, "lo")) lo = 1; }
        if (n != 1 || !lo) { printf("FAIL: checker: %d interfaces in the other namespace (expected only lo)\n", n); _exit(1); }
        _exit(0);
    }
    int st = 0;
    waitpid(checker, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "checker: status %#x", st);
    return fixture_finish();
}
