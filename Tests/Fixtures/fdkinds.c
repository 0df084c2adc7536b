// eventfd (with its counter), timerfd (armed: remaining time and interval), signalfd (with a
// pending signal to read), epoll (watching the eventfd), an interval timer (setitimer) and a
// POSIX timer with its id and sigev value: all survive checkpoint/kill/restart.
#include "fixture.h"
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>

int main(void) {
    int efd = eventfd(5, EFD_NONBLOCK);
    uint64_t add = 37;
    write(efd, &add, 8);                                         // counter 42
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec ts = { .it_interval = { 7, 0 }, .it_value = { 100, 0 } };
    timerfd_settime(tfd, 0, &ts, NULL);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    sigprocmask(SIG_BLOCK, &m, NULL);
    int sfd = signalfd(-1, &m, SFD_NONBLOCK);
    kill(getpid(), SIGUSR2);                                     // pending, read via signalfd
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xfeedbeef };
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    struct itimerval it = { .it_interval = { 0, 0 }, .it_value = { 200, 0 } };
    signal(SIGALRM, SIG_IGN);
    setitimer(ITIMER_REAL, &it, NULL);
    timer_t tid;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN + 2;
    sev.sigev_value.sival_ptr = (void *)0x1234abcd;
    signal(SIGRTMIN + 2, SIG_IGN);
    timer_create(CLOCK_MONOTONIC, &sev, &tid);
    timer_t tid2;
    timer_create(CLOCK_REALTIME, &sev, &tid2);                   // a second id, disarmed
    struct itimerspec pts = { .it_interval = { 3, 0 }, .it_value = { 150, 0 } };
    timer_settime(tid, 0, &pts, NULL);

    fixture_ready();
    fixture_wait();

    struct epoll_event got;
    int n = epoll_wait(ep, &got, 1, 0);
    EXPECT(n == 1 && got.data.u64 == 0xfeedbeef && (got.events & EPOLLIN), "epoll_wait: %d events, data %llx", n, (unsigned long long)got.data.u64);
    uint64_t count = 0;
    EXPECT(read(efd, &count, 8) == 8 && count == 42, "eventfd count %llu", (unsigned long long)count);
    EXPECT(fcntl(efd, F_GETFL) & O_NONBLOCK, "eventfd lost O_NONBLOCK");
    struct itimerspec cur;
    timerfd_gettime(tfd, &cur);
    EXPECT(cur.it_interval.tv_sec == 7 && cur.it_value.tv_sec > 80 && cur.it_value.tv_sec <= 100, "timerfd: value %ld interval %ld", (long)cur.it_value.tv_sec, (long)cur.it_interval.tv_sec);
    EXPECT(fcntl(tfd, F_GETFD) & FD_CLOEXEC, "timerfd lost FD_CLOEXEC");
    struct signalfd_siginfo si;
    EXPECT(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2, "signalfd: no SIGUSR2 to read");
    struct itimerval ic;
    getitimer(ITIMER_REAL, &ic);
    EXPECT(ic.it_value.tv_sec > 180 && ic.it_value.tv_sec <= 200, "itimer real: %ld s left", (long)ic.it_value.tv_sec);
    struct itimerspec pc;
    EXPECT(timer_gettime(tid, &pc) == 0 && pc.it_interval.tv_sec == 3 && pc.it_value.tv_sec > 130 && pc.it_value.tv_sec <= 150,
           "POSIX timer %ld: %ld s left, interval %ld (errno %d)", (long)(intptr_t)tid, (long)pc.it_value.tv_sec, (long)pc.it_interval.tv_sec, errno);
    EXPECT(timer_gettime(tid2, &pc) == 0 && pc.it_value.tv_sec == 0, "second POSIX timer missing");
    FILE *f = fopen("/proc/self/timers", "r");
    char buf[2048] = {0};
    if (f) { fread(buf, 1, sizeof buf - 1, f); fclose(f); }
    EXPECT(strstr(buf, "1234abcd") != NULL, "sigev value lost: %s", buf);
    return fixture_finish();
}
