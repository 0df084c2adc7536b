// Issue 10: file descriptors ordinary programs hold that the other fixtures do not.
//   O_PATH      an O_PATH fd on a file and one on a directory (used with openat after)
//   semaphore   an eventfd in EFD_SEMAPHORE|EFD_NONBLOCK mode with a count of 3
//   directory   a directory fd read part way with getdents64: the rest comes after
//   renamed     a file opened, written, then renamed: the fd follows it
//   devices     /dev/null, /dev/zero, /dev/urandom
//   flags       O_APPEND|O_NONBLOCK kept, FD_CLOEXEC on one fd number and not on its dup
//   pidfd       a pidfd of a child (pidfd_open): signals through it, sees the child exit
// Each is checked after restart by using it, not only by its flags.
#include "fixture.h"
#include <sys/epoll.h>
#include <dirent.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static char dir[256];

// The names left in the directory stream, read with getdents64.
static int rest_of(int fd, char seen[][64], int max) {
    char buf[4096];
    int n = 0;
    for (;;) {
        long r = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (r <= 0) break;
        for (long off = 0; off < r;) {
            struct { unsigned long long ino; long long off; unsigned short reclen; unsigned char type; char name[]; } *d = (void *)(buf + off);
            if (strcmp(d->name, ".") && strcmp(d->name, "..") && n < max) snprintf(seen[n++], 64, "%s", d->name);
            off += d->reclen;
        }
    }
    return n;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/fdmore-%d", getpid());
    mkdir(dir, 0700);
    char p[512];
    for (int i = 0; i < 40; i++) {
        snprintf(p, sizeof p, "%s/entry-%02d", dir, i);
        close(open(p, O_CREAT | O_WRONLY, 0600));
    }
    snprintf(p, sizeof p, "%s/pathfile", dir);
    int f = open(p, O_CREAT | O_WRONLY, 0640); if (write(f, "path", 4) != 4) return 2; close(f);
    int opath = open(p, O_PATH);
    int odir = open(dir, O_PATH | O_DIRECTORY);
    int sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    // The directory stream, read in small steps until 10 names are behind it.
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    char first[64][64];
    int before = 0;
    {
        char buf[256];
        while (before < 10) {
            long r = syscall(SYS_getdents64, d, buf, sizeof buf);
            if (r <= 0) break;
            for (long off = 0; off < r;) {
                struct { unsigned long long ino; long long off; unsigned short reclen; unsigned char type; char name[]; } *e = (void *)(buf + off);
                if (strcmp(e->name, ".") && strcmp(e->name, "..")) snprintf(first[before++], 64, "%s", e->name);
                off += e->reclen;
            }
        }
    }
    snprintf(p, sizeof p, "%s/before-rename", dir);
    int ren = open(p, O_CREAT | O_RDWR, 0600);
    if (write(ren, "one", 3) != 3) return 2;
    char q[512]; snprintf(q, sizeof q, "%s/after-rename", dir);
    rename(p, q);
    int dnull = open("/dev/null", O_WRONLY), dzero = open("/dev/zero", O_RDONLY), drand = open("/dev/urandom", O_RDONLY);
    snprintf(p, sizeof p, "%s/appended", dir);
    int app = open(p, O_CREAT | O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC, 0600);
    if (write(app, "a", 1) != 1) return 2;
    int appdup = dup(app);
    pid_t child = fork();
    if (child == 0) { fixture_catch_usr1(); while (!fixture_go) pause(); _exit(7); }
    int pfd = (int)syscall(SYS_pidfd_open, child, 0);
    if (pfd < 0) { printf("pidfd_open: %s\n", strerror(errno)); return 2; }
    // An epoll set watching the pidfd (as asyncio's pidfd child watcher does): built after
    // the restart once the pidfd exists again.
    int pep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event pe = { .events = EPOLLIN, .data.u64 = 77 };
    if (epoll_ctl(pep, EPOLL_CTL_ADD, pfd, &pe) != 0) { printf("epoll_ctl pidfd: %s\n", strerror(errno)); return 2; }
    fixture_ready();
    fixture_wait();

    struct stat st;
    EXPECT((fcntl(opath, F_GETFL) & O_PATH) && fstat(opath, &st) == 0 && st.st_size == 4 && (st.st_mode & 0777) == 0640,
           "O_PATH fd on a file: flags 0x%x size %lld", fcntl(opath, F_GETFL), (long long)st.st_size);
    int viadir = openat(odir, "pathfile", O_RDONLY);
    char buf[16] = {0};
    EXPECT(viadir >= 0 && read(viadir, buf, 4) == 4 && !memcmp(buf, "path", 4), "openat through the O_PATH directory fd: %s", viadir < 0 ? strerror(errno) : buf);
    uint64_t v = 0;
    EXPECT(read(sem, &v, 8) == 8 && v == 1, "semaphore eventfd read %llu, expected 1", (unsigned long long)v);
    EXPECT(read(sem, &v, 8) == 8 && read(sem, &v, 8) == 8 && read(sem, &v, 8) < 0 && errno == EAGAIN, "semaphore eventfd: 3 reads then EAGAIN");
    char after[64][64];
    int rest = rest_of(d, after, 64);
    // The 41 names made before the stream was read each come once, before or after; names
    // made since may come or not (readdir(3)).
    for (int i = 0; i <= 40; i++) {
        char want[64];
        if (i < 40) snprintf(want, sizeof want, "entry-%02d", i); else snprintf(want, sizeof want, "pathfile");
        int n = 0;
        for (int j = 0; j < before; j++) n += !strcmp(first[j], want);
        for (int j = 0; j < rest; j++) n += !strcmp(after[j], want);
        EXPECT(n == 1, "directory stream: %s came %d times (%d names before the stop, %d after)", want, n, before, rest);
    }
    EXPECT(lseek(ren, 0, SEEK_CUR) == 3 && write(ren, "two", 3) == 3, "renamed file: offset %lld", (long long)lseek(ren, 0, SEEK_CUR));
    f = open(q, O_RDONLY);
    EXPECT(f >= 0 && read(f, buf, 6) == 6 && !memcmp(buf, "onetwo", 6), "the renamed file got both writes");
    EXPECT(write(dnull, "x", 1) == 1, "/dev/null");
    memset(buf, 1, 8);
    EXPECT(read(dzero, buf, 8) == 8 && buf[0] == 0 && buf[7] == 0, "/dev/zero");
    EXPECT(read(drand, buf, 8) == 8, "/dev/urandom");
    int fl = fcntl(app, F_GETFL);
    EXPECT((fl & O_APPEND) && (fl & O_NONBLOCK), "O_APPEND|O_NONBLOCK kept: 0x%x", fl);
    EXPECT(fcntl(app, F_GETFD) == FD_CLOEXEC && fcntl(appdup, F_GETFD) == 0, "FD_CLOEXEC on fd %d only", app);
    EXPECT(write(appdup, "b", 1) == 1 && lseek(app, 0, SEEK_CUR) == 2, "the dup shares the offset");
    EXPECT(syscall(SYS_pidfd_send_signal, pfd, SIGUSR1, NULL, 0) == 0, "pidfd_send_signal: %s", strerror(errno));
    struct pollfd pf = { .fd = pfd, .events = POLLIN };
    EXPECT(poll(&pf, 1, 5000) == 1 && (pf.revents & POLLIN), "the pidfd is readable once the child exits");
    struct epoll_event got = { 0 };
    EXPECT(epoll_wait(pep, &got, 1, 1000) == 1 && got.data.u64 == 77, "the epoll set watching the pidfd does not report the child's exit");
    int status = 0;
    EXPECT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 7, "the child's status 0x%x", status);
    char cmd[600]; snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    return fixture_finish();
}
