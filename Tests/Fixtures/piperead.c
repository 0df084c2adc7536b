// Blocked in read() on a pipe it holds both ends of, with bytes waiting in a second pipe:
// after restart the read resumes, and the waiting bytes are all there, in order.
#include "fixture.h"

static int wake[2];
static void on_usr1(int s) { (void)s; write(wake[1], "wake", 4); }

int main(void) {
    int held[2];
    pipe(wake);
    pipe(held);
    write(held[1], "queued-data", 11);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    printf("READY %d\n", getpid());
    fflush(stdout);
    char buf[32] = {0};
    ssize_t n = read(wake[0], buf, sizeof buf - 1);
    EXPECT(n == 4 && memcmp(buf, "wake", 4) == 0, "read on the wake pipe returned %zd '%s' (errno %d)", n, buf, errno);
    memset(buf, 0, sizeof buf);
    n = read(held[0], buf, sizeof buf - 1);
    EXPECT(n == 11 && strcmp(buf, "queued-data") == 0, "pipe content '%s'", buf);
    return fixture_finish();
}
