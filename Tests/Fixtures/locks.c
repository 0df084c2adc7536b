// Issue 10, "Restored wrong": file locks held at checkpoint are not held after restart.
// A process never conflicts with its own POSIX locks, so every check is made from another
// process (a checker forked after restart), with F_GETLK, F_OFD_GETLK and non-blocking flock:
//   posix    the root holds POSIX record locks (fcntl F_SETLK) on posix.dat: a write lock on
//            [0,100), a read lock on [200,300), a write lock from 1000 to EOF (l_len 0); the
//            checker sees each with its type, range and l_pid = root, and [100,200) free
//   posix-c  a child holds a write lock on [0,10) of posix.dat's sibling child.dat: seen
//            with l_pid = the child
//   flock    flock LOCK_SH on shared.dat (the checker can take LOCK_SH, not LOCK_EX) and
//            LOCK_EX on excl.dat (the checker can take neither); the LOCK_EX fd was dup'd and
//            the original closed (the lock belongs to the open file description)
//   ofd      OFD locks (F_OFD_SETLK) on ofd.dat through two open file descriptions of the
//            root: write [500,600) on one, read [700,800) on the other; F_OFD_GETLK from the
//            checker reports them with l_pid -1; a POSIX write lock attempt on them fails
//   /proc/locks lists as many POSIX, FLOCK and OFDLCK locks as before, on the same inodes.
// Finally the root unlocks [0,100) and the checker can lock it: the lock is a real one.
#include "fixture.h"
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

static int mk(const char *name) {
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
    char z[4096] = {0};
    write(fd, z, sizeof z);
    return fd;
}

static int lk(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock f = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    return fcntl(fd, cmd, &f);
}

// In the checker: F_GETLK/F_OFD_GETLK for a write lock on [start, start+len).
static void expect_lock(int fd, int cmd, const char *what, off_t start, off_t len, short type, off_t lstart, off_t llen, pid_t pid) {
    struct flock f = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    int r = fcntl(fd, cmd, &f);
    EXPECT(r == 0 && f.l_type == type && (type == F_UNLCK || (f.l_start == lstart && f.l_len == llen && f.l_pid == pid)),
           "%s: %s [%ld,+%ld): type %d start %ld len %ld pid %d (expected type %d start %ld len %ld pid %d)", what, cmd == F_GETLK ? "F_GETLK" : "F_OFD_GETLK",
           (long)start, (long)len, f.l_type, (long)f.l_start, (long)f.l_len, f.l_pid, type, (long)lstart, (long)llen, pid);
}

/* OFD locks show pid -1 in /proc/locks: only those on our own file (its inode) count, not
 * the OFD locks other programs on the machine hold. */
static unsigned long ofd_inode;

static int count_locks(const char *kind, pid_t a, pid_t b) {
    FILE *f = fopen("/proc/locks", "r");
    char line[256];
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        char k[16], adv[16], rw[16];
        int pid;
        unsigned int maj, min;
        unsigned long ino = 0;
        if (strstr(line, "->")) continue;                        // waiters
        if (sscanf(line, "%*d: %15s %15s %15s %d %x:%x:%lu", k, adv, rw, &pid, &maj, &min, &ino) >= 4 && strcmp(k, kind) == 0
            && (pid == a || pid == b || (pid == -1 && strcmp(kind, "OFDLCK") == 0 && ino == ofd_inode))) n++;
    }
    if (f) fclose(f);
    return n;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t root = getpid();
    int pfd = mk("posix.dat");
    lk(pfd, F_SETLK, F_WRLCK, 0, 100);
    lk(pfd, F_SETLK, F_RDLCK, 200, 100);
    lk(pfd, F_SETLK, F_WRLCK, 1000, 0);
    int cfd = mk("child.dat");
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        lk(cfd, F_SETLK, F_WRLCK, 0, 10);
        fixture_wait();
        _exit(0);
    }
    int sfd = mk("shared.dat");
    flock(sfd, LOCK_SH);
    int xfd0 = mk("excl.dat");
    flock(xfd0, LOCK_EX);
    int xfd = dup(xfd0);                                         // the lock lives on through xfd alone
    close(xfd0);
    (void)xfd;
    int ofd1 = mk("ofd.dat");
    int ofd2 = open("ofd.dat", O_RDWR);
    struct stat ost;
    if (fstat(ofd1, &ost) == 0) ofd_inode = (unsigned long)ost.st_ino;
    lk(ofd1, F_OFD_SETLK, F_WRLCK, 500, 100);
    lk(ofd2, F_OFD_SETLK, F_RDLCK, 700, 100);
    usleep(100000);
    int nposix = count_locks("POSIX", root, child), nflock = count_locks("FLOCK", root, child), nofd = count_locks("OFDLCK", root, child);
    printf("locks before: POSIX %d FLOCK %d OFDLCK %d\n", nposix, nflock, nofd);

    fixture_ready();
    fixture_wait();

    EXPECT(count_locks("POSIX", root, child) == nposix && count_locks("FLOCK", root, child) == nflock && count_locks("OFDLCK", root, child) == nofd,
           "/proc/locks: POSIX %d FLOCK %d OFDLCK %d, were %d %d %d", count_locks("POSIX", root, child), count_locks("FLOCK", root, child), count_locks("OFDLCK", root, child), nposix, nflock, nofd);
    pid_t checker = fork();
    if (checker == 0) {
        fixture_failures = 0;
        int p = open("posix.dat", O_RDWR);
        expect_lock(p, F_GETLK, "posix write", 0, 100, F_WRLCK, 0, 100, root);
        expect_lock(p, F_GETLK, "posix gap", 100, 100, F_UNLCK, 0, 0, 0);
        expect_lock(p, F_GETLK, "posix read", 200, 100, F_RDLCK, 200, 100, root);
        expect_lock(p, F_GETLK, "posix to EOF", 5000, 10, F_WRLCK, 1000, 0, root);
        struct flock rd = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 200, .l_len = 100 };
        EXPECT(fcntl(p, F_SETLK, &rd) == 0, "posix read: a second reader was refused (errno %d)", errno);
        int c = open("child.dat", O_RDWR);
        expect_lock(c, F_GETLK, "child's posix write", 0, 10, F_WRLCK, 0, 10, child);
        int s = open("shared.dat", O_RDWR);
        EXPECT(flock(s, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK, "flock LOCK_SH lost: LOCK_EX was granted");
        EXPECT(flock(s, LOCK_SH | LOCK_NB) == 0, "flock LOCK_SH: a second LOCK_SH refused (errno %d)", errno);
        int x = open("excl.dat", O_RDWR);
        EXPECT(flock(x, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK, "flock LOCK_EX lost: LOCK_SH was granted");
        int o = open("ofd.dat", O_RDWR);
        expect_lock(o, F_OFD_GETLK, "ofd write", 500, 100, F_WRLCK, 500, 100, -1);
        expect_lock(o, F_OFD_GETLK, "ofd read", 700, 100, F_RDLCK, 700, 100, -1);
        expect_lock(o, F_OFD_GETLK, "ofd gap", 600, 100, F_UNLCK, 0, 0, 0);
        EXPECT(lk(o, F_SETLK, F_WRLCK, 550, 1) < 0 && (errno == EAGAIN || errno == EACCES), "ofd write lock lost: a POSIX write lock on 550 was granted");
        _exit(fixture_failures);
    }
    int st = 0;
    waitpid(checker, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the checker found %d problems (above)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    // The root's own view: still its locks to change.
    EXPECT(lk(pfd, F_SETLK, F_UNLCK, 0, 100) == 0, "unlock [0,100): errno %d", errno);
    checker = fork();
    if (checker == 0) {
        int p = open("posix.dat", O_RDWR);
        _exit(lk(p, F_SETLK, F_WRLCK, 0, 100) == 0 ? 0 : 1);
    }
    waitpid(checker, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "after the root unlocked [0,100), another process still cannot lock it");
    kill(child, SIGUSR1);
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    return fixture_finish();
}
