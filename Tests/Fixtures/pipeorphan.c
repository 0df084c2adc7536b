// Issue 10, "Refused, though the state is ordinary": a pipe whose other end is closed
// everywhere, or held only by a process that has exited, was refused as "other end outside
// the application". The usual ways programs get there:
//   eof       a readiness pipe: each of 3 children writes one byte and exits (they are zombies,
//             not yet reaped); the parent closed its write end: its read end holds 3 bytes and
//             then EOF (read returns 0, poll gives POLLHUP), with no writer anywhere
//   eofempty  the same with nothing left to read: read returns 0 at once
//   epipe     a pipe whose read end was closed everywhere: the write end's write fails with
//             EPIPE (SIGPIPE ignored), poll gives POLLERR
//   inherited a child holds the read end of "sync", whose write end the parent closed (the
//             child is alive, blocked in read until... it gets EOF once the bytes are read)
// F_GETPIPE_SZ and O_NONBLOCK of each end are kept.
#include "fixture.h"
#include <poll.h>
#include <sys/wait.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    int eof[2], empty[2], epipe[2], sync[2];
    pipe(eof);
    pipe(empty);
    pipe2(epipe, O_NONBLOCK);
    pipe(sync);
    fcntl(eof[0], F_SETPIPE_SZ, 65536 * 2);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fork();
        if (kids[i] == 0) { char c = '0' + i; write(eof[1], &c, 1); _exit(0); }
    }
    close(eof[1]);
    close(empty[1]);
    close(epipe[0]);
    write(sync[1], "go", 2);
    pid_t reader = fork();
    if (reader == 0) {
        close(sync[1]);
        fixture_catch_usr1();
        fixture_wait();
        char b[4] = {0};
        ssize_t r1 = read(sync[0], b, 2), r2 = read(sync[0], b + 2, 1);
        int ok = r1 == 2 && memcmp(b, "go", 2) == 0 && r2 == 0;
        printf("inherited: read %zd '%s' then %zd: %s\n", r1, b, r2, ok ? "OK" : "FAIL");
        _exit(ok ? 0 : 1);
    }
    close(sync[0]);
    close(sync[1]);
    for (int i = 0; i < 3; i++) { siginfo_t si; waitid(P_PID, kids[i], &si, WEXITED | WNOWAIT); }
    int sz = fcntl(eof[0], F_GETPIPE_SZ);

    fixture_ready();
    fixture_wait();

    struct pollfd p[2] = { { .fd = eof[0], .events = POLLIN }, { .fd = epipe[1], .events = POLLOUT } };
    poll(p, 2, 0);
    EXPECT((p[0].revents & POLLIN) && (p[0].revents & POLLHUP), "eof: poll revents %#x, expected POLLIN|POLLHUP", p[0].revents);
    EXPECT(p[1].revents & POLLERR, "epipe: poll revents %#x, expected POLLERR", p[1].revents);
    fcntl(eof[0], F_SETFL, O_NONBLOCK);                          // a missing EOF must not hang us
    char b[8] = {0};
    ssize_t r = read(eof[0], b, sizeof b);
    EXPECT(r == 3 && strchr(b, '0') && strchr(b, '1') && strchr(b, '2'), "eof: read %zd '%s'", r, b);
    r = read(eof[0], b, sizeof b);
    EXPECT(r == 0, "eof: read %zd (errno %d) after the bytes, expected 0 (EOF: no writer left)", r, errno);
    EXPECT(fcntl(eof[0], F_GETPIPE_SZ) == sz, "eof: pipe size %d, was %d", fcntl(eof[0], F_GETPIPE_SZ), sz);
    fcntl(empty[0], F_SETFL, O_NONBLOCK);
    r = read(empty[0], b, sizeof b);
    EXPECT(r == 0, "eofempty: read %zd (errno %d), expected 0", r, errno);
    r = write(epipe[1], "x", 1);
    EXPECT(r < 0 && errno == EPIPE, "epipe: write %zd errno %d, expected EPIPE", r, errno);
    EXPECT(fcntl(epipe[1], F_GETFL) & O_NONBLOCK, "epipe: lost O_NONBLOCK");
    int st;
    for (int i = 0; i < 3; i++) EXPECT(waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %#x", i, st);
    kill(reader, SIGUSR1);
    EXPECT(waitpid(reader, &st, 0) == reader && WIFEXITED(st) && WEXITSTATUS(st) == 0, "inherited: status %#x", st);
    return fixture_finish();
}
