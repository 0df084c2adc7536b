// fds at the top of the fd table (found by probing, December 2026): RLIMIT_NOFILE raised to
// its hard limit, a pipe's ends dup2'd to 1000 and to the hard limit - 1 (argument: another
// number), with data queued; a file at 5000 with FD_CLOEXEC and an offset; fds 10-999 free;
// a periodic timerfd read by three threads blocked in read(). The restart kept its own fd
// numbers above the image's, past the limit, and failed ("dup3 shared: Bad file
// descriptor"); now they go to a free run below it (SharedDescriptions.region).
#include "fixture.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
static int tfd; static volatile int reads[3];
static void *reader(void *arg) {
    long i = (long)arg; uint64_t v;
    for (;;) { if (read(tfd, &v, 8) == 8) __sync_fetch_and_add(&reads[i], 1); }
    return NULL;
}
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);
    int top = argc > 1 ? atoi(argv[1]) : (int)rl.rlim_max - 1;   // arg: the high fd (default hard limit - 1)
    int p[2]; pipe(p);
    dup2(p[0], 1000); dup2(p[1], top); close(p[0]); close(p[1]);
    write(top, "high-fd", 7);
    int f = open("high.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    write(f, "five-thousand", 13);
    dup3(f, 5000, O_CLOEXEC); close(f);
    tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = { { 0, 20000000 }, { 0, 20000000 } };
    timerfd_settime(tfd, 0, &its, NULL);
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, reader, (void *)i);
    usleep(200000);
    printf("top fd %d\n", top);
    fixture_ready(); fixture_wait();
    struct rlimit r2; getrlimit(RLIMIT_NOFILE, &r2);
    EXPECT(r2.rlim_cur == rl.rlim_cur, "RLIMIT_NOFILE cur %lu", (unsigned long)r2.rlim_cur);
    char b[16] = {0};
    EXPECT(read(1000, b, 7) == 7 && !memcmp(b, "high-fd", 7), "fd 1000 read '%s'", b);
    EXPECT(write(top, "x", 1) == 1 && read(1000, b, 1) == 1 && b[0] == 'x', "fd %d -> 1000 pipe broken", top);
    EXPECT(fcntl(5000, F_GETFD) == FD_CLOEXEC, "fd 5000 F_GETFD %d", fcntl(5000, F_GETFD));
    EXPECT(lseek(5000, 0, SEEK_CUR) == 13, "fd 5000 offset");
    int gaps = 0;
    for (int fd = 10; fd < 1000; fd++) if (fd != tfd && fcntl(fd, F_GETFD) >= 0) gaps++;
    EXPECT(gaps == 0, "%d unexpected fds open between 10 and 999", gaps);
    int nf = open("/dev/null", O_RDONLY);
    EXPECT(nf == tfd + 1 || nf < 10, "lowest free fd is %d (tfd %d)", nf, tfd);
    int before[3]; for (int i = 0; i < 3; i++) before[i] = reads[i];
    usleep(300000);
    int total = 0; for (int i = 0; i < 3; i++) total += reads[i] - before[i];
    EXPECT(total >= 5, "timerfd readers: %d reads in 300 ms after restart", total);
    return fixture_finish();
}
