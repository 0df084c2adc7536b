// Issue 10, "Restored wrong": POSIX timers armed by several threads; the program never
// finished after restart. timer_create(2) as threaded programs use it:
//   t0..t3   four threads, each with its own CLOCK_MONOTONIC timer, SIGEV_THREAD_ID aimed at
//            itself (signal SIGRTMIN+3, sival = thread index), periodic 20 ms, each waiting
//            for its expirations with sigwaitinfo (the signal blocked everywhere): after
//            restart each thread must get 25 more expirations, each aimed at it (si_value,
//            si_timerid its own timer, si_code SI_TIMER), then exit
//   proc     a process-directed timer (SIGEV_SIGNAL, SIGRTMIN+4, CLOCK_REALTIME, 30 ms) whose
//            handler counts: it keeps firing
//   cpu      a CLOCK_PROCESS_CPUTIME_ID timer (SIGEV_NONE), armed 1000 s: its value is kept
//   thr      a SIGEV_THREAD timer (glibc's helper thread runs the function): 20 ms periodic,
//            keeps calling it
//            (argument "no-sigev-thread": without this one, to see the others alone)
//   /proc/self/timers lists the same ids, signals and notify targets (thread ids) as before.
// A watchdog (alarm) turns "never finishes" into a FAIL.
#include "fixture.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

#define NT 4
static timer_t tids[NT];
static pid_t ttids[NT];
static volatile int counts[NT], bad[NT];
static volatile int proc_count, thr_count;
static pthread_barrier_t ready;

static void on_proc(int s) { (void)s; proc_count++; }
static void on_thr(union sigval v) { if (v.sival_int == 77) __atomic_add_fetch(&thr_count, 1, __ATOMIC_SEQ_CST); }
static void on_alarm(int s) { (void)s; static const char m[] = "FAIL: watchdog: the timers did not finish within 20 s\n"; write(1, m, sizeof m - 1); _exit(1); }

static void *worker(void *arg) {
    int i = (int)(intptr_t)arg;
    ttids[i] = syscall(SYS_gettid);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGRTMIN + 3;
    sev.sigev_value.sival_int = i;
    sev._sigev_un._tid = ttids[i];
    timer_create(CLOCK_MONOTONIC, &sev, &tids[i]);
    struct itimerspec its = { .it_value = { 0, 20000000 }, .it_interval = { 0, 20000000 } };
    timer_settime(tids[i], 0, &its, NULL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 3);
    pthread_barrier_wait(&ready);
    // Before the go: expirations are taken as they come. After: 25 more, then done.
    int after = 0;
    while (after < 25) {
        siginfo_t si;
        if (sigwaitinfo(&s, &si) < 0) continue;
        if (si.si_value.sival_int != i || si.si_code != SI_TIMER || si.si_timerid != (int)(intptr_t)tids[i]) bad[i]++;
        counts[i]++;
        if (fixture_go) after++;
    }
    return NULL;
}

static int timers_file(char *buf, size_t n) {
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) return -1;
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    int withThr = !(argc > 1 && strcmp(argv[1], "no-sigev-thread") == 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 3);
    sigprocmask(SIG_BLOCK, &s, NULL);                            // inherited by the threads
    signal(SIGRTMIN + 4, on_proc);
    fixture_catch_usr1();
    pthread_barrier_init(&ready, NULL, NT + 1);
    pthread_t th[NT];
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigaddset(&usr1, SIGRTMIN + 4);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);                     // SIGUSR1 and proc's signal: main thread only
    for (int i = 0; i < NT; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    pthread_barrier_wait(&ready);

    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN + 4;
    sev.sigev_value.sival_int = 99;
    timer_t proc;
    timer_create(CLOCK_REALTIME, &sev, &proc);
    struct itimerspec its = { .it_value = { 0, 30000000 }, .it_interval = { 0, 30000000 } };
    timer_settime(proc, 0, &its, NULL);
    sev.sigev_notify = SIGEV_NONE;
    timer_t cpu;
    timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &cpu);
    struct itimerspec cits = { .it_value = { 1000, 0 }, .it_interval = { 0, 0 } };
    timer_settime(cpu, 0, &cits, NULL);
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = on_thr;
    sev.sigev_value.sival_int = 77;
    timer_t thr;
    struct itimerspec tits = { .it_value = { 0, 20000000 }, .it_interval = { 0, 20000000 } };
    if (withThr) {
        timer_create(CLOCK_MONOTONIC, &sev, &thr);
        timer_settime(thr, 0, &tits, NULL);
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 1;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) { }
    for (int i = 0; i < NT; i++) printf("thread %d tid %d timer %ld: %d expirations before\n", i, ttids[i], (long)(intptr_t)tids[i], counts[i]);
    static char before[8192], after[8192];
    timers_file(before, sizeof before);

    fixture_ready();
    fixture_wait();

    signal(SIGALRM, on_alarm);
    alarm(20);
    int p0 = proc_count, t0 = thr_count;
    timers_file(after, sizeof after);
    EXPECT(strcmp(before, after) == 0, "/proc/self/timers differs:\n--- before\n%s--- after\n%s", before, after);
    for (int i = 0; i < NT; i++) {
        struct itimerspec cur;
        EXPECT(timer_gettime(tids[i], &cur) == 0 && cur.it_interval.tv_nsec == 20000000, "thread %d: timer %ld gettime errno %d interval %ld", i, (long)(intptr_t)tids[i], errno, cur.it_interval.tv_nsec);
    }
    struct itimerspec cur;
    EXPECT(timer_gettime(cpu, &cur) == 0 && cur.it_value.tv_sec > 990 && cur.it_value.tv_sec <= 1000, "cpu timer: %ld s left", (long)cur.it_value.tv_sec);
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    alarm(0);
    for (int i = 0; i < NT; i++) EXPECT(bad[i] == 0, "thread %d: %d expirations not its own (si_value, si_code or si_timerid wrong)", i, bad[i]);
    usleep(300000);
    EXPECT(proc_count - p0 >= 5, "process timer: %d signals in the last 0.3 s+ (expected about 10+)", proc_count - p0);
    EXPECT(!withThr || thr_count - t0 >= 5, "SIGEV_THREAD timer: %d calls after restart", thr_count - t0);
    return fixture_finish();
}
