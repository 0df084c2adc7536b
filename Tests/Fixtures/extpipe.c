// Issue 10, "Refused, though the state is ordinary": pipes to processes that really are
// outside the application (`feeder | ssi run -- app | tee log`, a job whose stdout is its
// launcher's pipe). Wanted: the checkpoint saves them as external, and `ssi restart` connects
// them to what the user says: its own stdin/stdout/stderr for fds 0-2 by default, and
// `--inherit-fd N` for others, with the saved unread bytes delivered first.
// HARNESS (lifecycle.sh --pipes does exactly this):
//   start:   `ssi run -b --keep-fds -- extpipe` with fd 0 a pipe from a feeder process, fds 1
//            and 2 a pipe to `cat >> out.log`, fd 5 a pipe to `cat >> side.log` (all outside
//            the application); write "unread-1\n" into fd 0's pipe; wait for READY
//   checkpoint --kill; the feeder and the cats live on (they are not the application)
//   restart: `ssi restart APP` (plus whatever option gives fd 5, e.g. --inherit-fd 5) with its
//            own fd 0 a new pipe from a feeder, fds 1-2 a new pipe to `cat >> out.log`, fd 5 a
//            new pipe to `cat >> side.log`; write "after-2\n" into the new fd 0 pipe
//   then SIGUSR1; side.log must hold exactly "side-before\nside-after\n".
// The program waits until the 9 bytes "unread-1\n" are in its stdin pipe, unread, before
// READY. After restart: fds 0, 1, 5 are pipes with their access modes; reading fd 0 gives
// "unread-1\n" (saved at checkpoint, delivered first) then "after-2\n"; fd 5 takes
// "side-after\n"; PASS goes to stdout, through the pipe.
#include "fixture.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

static int is_pipe(int fd, int mode) {
    struct stat s;
    return fstat(fd, &s) == 0 && S_ISFIFO(s.st_mode) && (fcntl(fd, F_GETFL) & O_ACCMODE) == mode;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (!is_pipe(0, O_RDONLY) || !is_pipe(1, O_WRONLY) || !is_pipe(5, O_WRONLY)) {
        printf("FAIL: setup: fds 0, 1 and 5 must be pipes (run with lifecycle.sh --pipes)\n");
        return 1;
    }
    int avail = 0;
    for (int i = 0; i < 1000 && avail < 9; i++) { ioctl(0, FIONREAD, &avail); usleep(10000); }
    printf("%d bytes waiting on stdin\n", avail);
    write(5, "side-before\n", 12);

    fixture_ready();
    fixture_wait();

    EXPECT(is_pipe(0, O_RDONLY), "fd 0 is no longer a read-only pipe");
    EXPECT(is_pipe(1, O_WRONLY), "fd 1 is no longer a write-only pipe");
    EXPECT(is_pipe(5, O_WRONLY), "fd 5 is no longer a write-only pipe");
    char buf[64] = {0};
    int got = 0;
    struct pollfd p = { .fd = 0, .events = POLLIN };
    while (got < 17 && poll(&p, 1, 10000) == 1) { ssize_t r = read(0, buf + got, sizeof buf - 1 - got); if (r <= 0) break; got += r; }
    EXPECT(got == 17 && strcmp(buf, "unread-1\nafter-2\n") == 0, "stdin gave %d bytes '%s', expected 'unread-1\\nafter-2\\n'", got, buf);
    EXPECT(write(5, "side-after\n", 11) == 11, "write to fd 5: errno %d", errno);
    return fixture_finish();
}
