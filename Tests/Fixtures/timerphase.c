// Periodic timers keep their schedule across a checkpoint and restart, as across a stop
// (setitimer(2), timer_create(2): a stopped process's timers run on). Found by probing
// (December 2026): a period that fell due while the application was down fired at the
// restart and every period from then on (the phase lost), and the periods missed were not
// counted as overruns. Checked at 4.5 s after the start (its own CLOCK_MONOTONIC):
//   itreal    (child) ITIMER_REAL first at 0.3 s, every 1 s: getitimer's value at 4.5 s is
//             0.8 (next at 5.3), interval 1; SIGALRMs arrived
//   pnone     SIGEV_NONE CLOCK_MONOTONIC every 0.3 s: timer_gettime's value is the phase
//   phandler  CLOCK_MONOTONIC every 1 s from 0.5 s, handled: signals + overruns = 5 by 4.6 s
//   pblocked  CLOCK_MONOTONIC every 0.25 s, its signal blocked: 1 + si_overrun counts at least
//             the expirations since the checkpoint (those before it are not known: nothing
//             reads a pending timer's overruns) and never more than all of them
//   prtabs    SIGEV_NONE CLOCK_REALTIME, TIMER_ABSTIME at start + 6 s: 1.5 s left
//   pboot     SIGEV_NONE CLOCK_BOOTTIME 6 s: 1.5 s left
// The test gives SIGUSR1 well before 4.5 s (lifecycle.sh --gap 2 included).
#include "fixture.h"
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
static double t0;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static double tsd(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }
static void until(double t) { while (now() - t0 < t) usleep(2000); }
static volatile int nalrm;
static void on_alrm(int s) { (void)s; nalrm++; }
static volatile int nh, ovh;
static void on_rt(int s, siginfo_t *si, void *u) { (void)s; (void)u; nh++; ovh += si->si_overrun; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    struct timespec m0, r0;
    clock_gettime(CLOCK_MONOTONIC, &m0);
    clock_gettime(CLOCK_REALTIME, &r0);
    t0 = tsd(m0);
    pid_t c = fork();
    if (c == 0) {
        struct sigaction sa = { .sa_handler = on_alrm };
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = { { 1, 0 }, { 0, 300000 } };
        setitimer(ITIMER_REAL, &it, NULL);
        until(4.5);
        struct itimerval g;
        getitimer(ITIMER_REAL, &g);
        double val = g.it_value.tv_sec + g.it_value.tv_usec / 1e6, iv = g.it_interval.tv_sec + g.it_interval.tv_usec / 1e6;
        printf("itreal: value %.3f interval %.3f, %d SIGALRMs\n", val, iv, nalrm);
        int bad = 0;
        if (!(val > 0.75 && val < 0.85)) { printf("FAIL: itreal: getitimer value %.3f at 4.5 s, want 0.8 (next at 5.3: schedule kept)\n", val); bad++; }
        if (iv != 1.0) { printf("FAIL: itreal: interval %.3f, want 1\n", iv); bad++; }
        if (nalrm < 2) { printf("FAIL: itreal: %d SIGALRMs by 4.5 s\n", nalrm); bad++; }
        _exit(bad);
    }
    sigset_t b;
    sigemptyset(&b);
    sigaddset(&b, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &b, NULL);
    struct sigaction sa = { .sa_sigaction = on_rt, .sa_flags = SA_SIGINFO | SA_RESTART };
    sigaction(SIGRTMIN + 1, &sa, NULL);
    timer_t pb, ph, pn, pr, pbo;
    struct sigevent e1 = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN };
    struct sigevent e2 = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN + 1 };
    struct sigevent en = { .sigev_notify = SIGEV_NONE };
    timer_create(CLOCK_MONOTONIC, &e1, &pb);
    timer_create(CLOCK_MONOTONIC, &e2, &ph);
    timer_create(CLOCK_MONOTONIC, &en, &pn);
    timer_create(CLOCK_REALTIME, &en, &pr);
    timer_create(CLOCK_BOOTTIME, &en, &pbo);
    struct itimerspec s1 = { { 0, 250000000 }, { 0, 250000000 } }, s2 = { { 1, 0 }, { 0, 500000000 } };
    struct itimerspec s3 = { { 0, 300000000 }, { 0, 300000000 } };
    timer_settime(pb, 0, &s1, NULL);
    timer_settime(ph, 0, &s2, NULL);
    timer_settime(pn, 0, &s3, NULL);
    struct itimerspec sa6 = { { 0, 0 }, { r0.tv_sec + 6, r0.tv_nsec } };
    timer_settime(pr, TIMER_ABSTIME, &sa6, NULL);
    struct itimerspec s6 = { { 0, 0 }, { 6, 0 } };
    timer_settime(pbo, 0, &s6, NULL);
    usleep(300000);
    fixture_ready();
    fixture_wait();
    double go = now() - t0;
    printf("SIGUSR1 at %.3f\n", go);
    EXPECT(go < 4.3, "SIGUSR1 came at %.3f s: too late to check the schedules at 4.5 s", go);
    until(4.5);
    struct itimerspec g;
    timer_gettime(pn, &g);
    double pnv = tsd(g.it_value);
    timer_gettime(pr, &g);
    double prv = tsd(g.it_value);
    timer_gettime(pbo, &g);
    double pbov = tsd(g.it_value);
    siginfo_t si;
    struct timespec z = { 0, 0 };
    int sig = sigtimedwait(&b, &si, &z);
    double at = now() - t0;
    until(4.6);
    // The 0.3 s schedule's phase: the next expiry is at the next multiple of 0.3.
    double want = 0.3 - (at - 0.3 * (int)(at / 0.3));
    double dd = pnv - want;
    dd -= 0.3 * (int)(dd / 0.3 + (dd < 0 ? -0.5 : 0.5));
    printf("pnone value %.3f (want %.3f), prtabs %.3f, pboot %.3f\n", pnv, want, prv, pbov);
    EXPECT(dd > -0.03 && dd < 0.03, "pnone: periodic 0.3 s timer value %.3f at %.3f s, want %.3f (schedule kept)", pnv, at, want);
    EXPECT(prv > 1.4 && prv < 1.55, "prtabs: value %.3f, want 1.5", prv);
    EXPECT(pbov > 1.4 && pbov < 1.55, "pboot: value %.3f, want 1.5", pbov);
    int exps = sig == SIGRTMIN ? 1 + si.si_overrun : 0;
    int all = (int)(at / 0.25), since = (int)((at - go) / 0.25);
    printf("pblocked: sig %d, 1 + overrun = %d (all %d, since SIGUSR1 %d)\n", sig, exps, all, since);
    EXPECT(exps >= since - 1 && exps <= all + 1, "pblocked: 1 + si_overrun = %d expirations of the 0.25 s timer by %.3f s, want %d to %d",
           exps, at, since - 1, all + 1);
    printf("phandler: %d signals, %d overruns\n", nh, ovh);
    EXPECT(nh + ovh == 5, "phandler: %d signals + %d overruns of the 1 s timer (from 0.5 s) by 4.6 s, want 5", nh, ovh);
    int st;
    waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child (ITIMER_REAL) failed: %#x", st);
    return fixture_finish();
}
