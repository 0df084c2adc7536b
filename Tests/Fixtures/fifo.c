// Named FIFOs opened by two processes: f1 with bytes waiting in it, a read end and a write
// end shared by parent and child (fork), plus the child's own O_RDWR fd; f2 opened only by
// the child, with its own bytes. The test removes f1 while the application is down: restart
// must recreate it (mode 0640) and put the bytes back; then the child writes to f1 and the
// parent reads what it wrote.
#include "fixture.h"
#include <sys/stat.h>
#include <sys/wait.h>

int main(void) {
    unlink("f1"); unlink("f2");
    mkfifo("f1", 0600);
    chmod("f1", 0640);
    mkfifo("f2", 0600);
    int r = open("f1", O_RDONLY | O_NONBLOCK);
    int w = open("f1", O_WRONLY);
    write(w, "hello-fifo", 10);
    fixture_ready();
    pid_t child = fork();
    if (child == 0) {
        int rw = open("f1", O_RDWR);
        int f2 = open("f2", O_RDWR);
        write(f2, "child-data", 10);
        fixture_wait();
        char buf[32] = {0};
        EXPECT(read(f2, buf, sizeof buf) == 10 && memcmp(buf, "child-data", 10) == 0, "child: f2 held '%s'", buf);
        EXPECT(write(w, "from-child", 10) == 10, "child: write to the shared write end");
        EXPECT(write(rw, "+rw", 3) == 3, "child: write to its own O_RDWR fd");
        return fixture_finish();
    }
    fixture_wait();
    struct stat st;
    EXPECT(stat("f1", &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 07777) == 0640, "f1 is not a FIFO with mode 0640 (mode %o)", st.st_mode);
    EXPECT(fcntl(r, F_GETFL) & O_NONBLOCK, "read end lost O_NONBLOCK");
    char buf[64] = {0};
    EXPECT(read(r, buf, sizeof buf) == 10 && memcmp(buf, "hello-fifo", 10) == 0, "f1 held '%s'", buf);
    kill(child, SIGUSR1);
    int status = -1;
    waitpid(child, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (status %x)", status);
    memset(buf, 0, sizeof buf);
    EXPECT(read(r, buf, sizeof buf) == 13 && memcmp(buf, "from-child+rw", 13) == 0, "parent read '%s' from the child", buf);
    return fixture_finish();
}
