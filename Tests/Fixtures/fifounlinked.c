// Issue 10, "Refused, though the state is ordinary": a FIFO that was unlinked while open.
//   f1   mkfifo f1 (mode 0640), opened read end (O_NONBLOCK) and write end, 11 bytes written,
//        then unlink("f1"): only the two fds hold it
//   f2   mkfifo f2, opened O_RDWR by a child too (inherited), unlinked, empty
// After restart: f1 still holds its 11 bytes, is a FIFO (S_ISFIFO) with st_nlink 0 and mode
// 0640, no file named f1 reappeared; a write on the write end is read on the read end (one
// pipe, not two); the child writes into f2 and the parent reads it (shared between the two).
#include "fixture.h"
#include <sys/stat.h>
#include <sys/wait.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkfifo("f1", 0600);
    chmod("f1", 0640);
    int r = open("f1", O_RDONLY | O_NONBLOCK);
    int w = open("f1", O_WRONLY);
    write(w, "hello fifo\n", 11);
    unlink("f1");
    mkfifo("f2", 0600);
    int rw = open("f2", O_RDWR | O_NONBLOCK);
    unlink("f2");
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        fixture_wait();
        int ok = write(rw, "from child", 10) == 10;
        _exit(ok ? 0 : 1);
    }

    fixture_ready();
    fixture_wait();

    char b[32] = {0};
    ssize_t n = read(r, b, sizeof b);
    EXPECT(n == 11 && memcmp(b, "hello fifo\n", 11) == 0, "f1: read %zd '%s'", n, b);
    struct stat s;
    EXPECT(fstat(r, &s) == 0 && S_ISFIFO(s.st_mode) && s.st_nlink == 0 && (s.st_mode & 0777) == 0640, "f1: mode %o nlink %ld", s.st_mode, (long)s.st_nlink);
    struct stat s2;
    EXPECT(fstat(w, &s2) == 0 && s2.st_ino == s.st_ino, "f1: read and write ends are different FIFOs");
    EXPECT(access("f1", F_OK) < 0 && access("f2", F_OK) < 0, "a FIFO name reappeared in the directory");
    write(w, "again", 5);
    memset(b, 0, sizeof b);
    n = read(r, b, sizeof b);
    EXPECT(n == 5 && memcmp(b, "again", 5) == 0, "f1: after restart read %zd '%s'", n, b);
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    memset(b, 0, sizeof b);
    n = read(rw, b, sizeof b);
    EXPECT(n == 10 && memcmp(b, "from child", 10) == 0, "f2: read %zd '%s' (the child's write)", n, b);
    EXPECT(fstat(rw, &s) == 0 && S_ISFIFO(s.st_mode) && s.st_nlink == 0, "f2: mode %o nlink %ld", s.st_mode, (long)s.st_nlink);
    return fixture_finish();
}
