// Issue 10: an unlinked file opened with O_NOFOLLOW, its one open file description shared
// by two fds and a child (dup, fork), and mapped MAP_SHARED by both: Python's
// multiprocessing heap (mp.Value, mp.Array) is such a file in /dev/shm. Its restart failed:
// the shared description was reopened by its old name, and then, through ssi's /proc link,
// with O_NOFOLLOW (ELOOP).
// After restart: the fds' flags, the shared offset, and the content seen
// the same through the fds and both mappings, written on each side.
#include "fixture.h"
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

int main(void) {
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/unlinkedshared-%d", getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) { printf("open: %s\n", strerror(errno)); return 2; }
    unlink(path);
    if (ftruncate(fd, 8192)) return 2;
    int fd2 = dup(fd);
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 2;
    strcpy(m, "parent-before");
    if (lseek(fd, 100, SEEK_SET) != 100) return 2;
    int ready[2]; if (pipe(ready)) return 2;
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        strcpy(m + 4096, "child-before");
        fixture_catch_usr1();
        if (write(ready[1], "r", 1) != 1) _exit(2);
        while (!fixture_go) pause();
        // The parent wrote "parent-after" and then signalled us.
        EXPECT(!strcmp(m, "parent-after"), "child: the parent's write through the mapping: '%s'", m);
        EXPECT(lseek(fd, 0, SEEK_CUR) == 104, "child: the shared offset is %lld, expected 104", (long long)lseek(fd, 0, SEEK_CUR));
        strcpy(m + 4096, "child-after");
        _exit(fixture_failures ? 1 : 0);
    }
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) return 2;
    fixture_ready();
    fixture_wait();
    EXPECT(!strcmp(m + 4096, "child-before"), "the child's write before: '%s'", m + 4096);
    // O_NOFOLLOW is not asked for: reopened through ssi's /proc link, the file cannot have
    // it (the one flag F_GETFL shows differently; it acted at the open only).
    EXPECT((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, "O_RDWR kept: flags 0x%x", fcntl(fd, F_GETFL));
    EXPECT(fcntl(fd, F_GETFD) == FD_CLOEXEC && fcntl(fd2, F_GETFD) == 0, "FD_CLOEXEC on fd %d only", fd);
    EXPECT(write(fd2, "abcd", 4) == 4 && lseek(fd, 0, SEEK_CUR) == 104, "the dup shares the offset");
    EXPECT(!memcmp(m + 100, "abcd", 4), "a write through the fd shows in the mapping");
    struct stat st;
    EXPECT(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == 8192, "still unlinked, 8192 bytes: nlink %lu size %lld",
           (unsigned long)st.st_nlink, (long long)st.st_size);
    strcpy(m, "parent-after");
    kill(child, SIGUSR1);
    int status = 0;
    waitpid(child, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's checks (status 0x%x)", status);
    EXPECT(!strcmp(m + 4096, "child-after"), "the child's write after: '%s'", m + 4096);
    return fixture_finish();
}
