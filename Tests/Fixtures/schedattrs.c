// Issue 10, "Restored wrong": what `nice`, `chrt`, `taskset`, `ionice` and `setpriv
// --no-new-privs` give a program, kept per thread by the kernel, and lost at restart when
// the restored tasks keep those of the restorer they were forked from.
//   main      nice 7, SCHED_BATCH, bound to the first CPU it may use, timer slack 123456 ns,
//             I/O class idle, no_new_privs
//   thread    nice 3, SCHED_IDLE, bound to the last CPU it may use, timer slack 7777 ns,
//             I/O best effort level 6 (and no_new_privs, which it inherited)
//   child     forked after main's settings, then nice 15 and I/O best effort level 2
// After restart each task checks its own: getpriority, sched_getscheduler (and the
// priority 0 these policies have), sched_getaffinity, PR_GET_TIMERSLACK, ioprio_get,
// PR_GET_NO_NEW_PRIVS.
#include "fixture.h"
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_VALUE(class, data) (((class) << 13) | (data))

struct want { int nice, policy, cpu; unsigned long slack; int ioprio; };

static int ioprio_get_self(void) { return (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0); }

static int set(const char *who, struct want w) {
    int ok = 1;
    if (setpriority(PRIO_PROCESS, 0, w.nice)) { printf("%s: setpriority: %s\n", who, strerror(errno)); ok = 0; }
    if (w.policy >= 0) {
        struct sched_param p = { .sched_priority = 0 };
        if (sched_setscheduler(0, w.policy, &p)) { printf("%s: sched_setscheduler: %s\n", who, strerror(errno)); ok = 0; }
    }
    if (w.cpu >= 0) {
        cpu_set_t s; CPU_ZERO(&s); CPU_SET(w.cpu, &s);
        if (sched_setaffinity(0, sizeof s, &s)) { printf("%s: sched_setaffinity: %s\n", who, strerror(errno)); ok = 0; }
    }
    if (w.slack && prctl(PR_SET_TIMERSLACK, w.slack, 0, 0, 0)) { printf("%s: PR_SET_TIMERSLACK: %s\n", who, strerror(errno)); ok = 0; }
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, w.ioprio)) { printf("%s: ioprio_set: %s\n", who, strerror(errno)); ok = 0; }
    fflush(stdout);
    return ok;
}

static void check(const char *who, struct want w) {
    errno = 0;
    int n = getpriority(PRIO_PROCESS, 0);
    EXPECT(errno == 0 && n == w.nice, "%s: nice %d, expected %d", who, n, w.nice);
    if (w.policy >= 0) {
        int p = sched_getscheduler(0);
        EXPECT(p == w.policy, "%s: policy %d, expected %d", who, p, w.policy);
        struct sched_param sp;
        EXPECT(sched_getparam(0, &sp) == 0 && sp.sched_priority == 0, "%s: priority %d", who, sp.sched_priority);
    }
    if (w.cpu >= 0) {
        cpu_set_t s; CPU_ZERO(&s);
        EXPECT(sched_getaffinity(0, sizeof s, &s) == 0 && CPU_COUNT(&s) == 1 && CPU_ISSET(w.cpu, &s),
               "%s: affinity has %d CPUs, expected only CPU %d", who, CPU_COUNT(&s), w.cpu);
    }
    if (w.slack) {
        long sl = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        EXPECT((unsigned long)sl == w.slack, "%s: timer slack %ld ns, expected %lu", who, sl, w.slack);
    }
    int io = ioprio_get_self();
    EXPECT(io == w.ioprio, "%s: I/O priority 0x%x, expected 0x%x", who, io, w.ioprio);
    EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "%s: no_new_privs lost", who);
}

static struct want tw;
static volatile int thread_set, thread_done;

static void *thread_main(void *arg) {
    (void)arg;
    // SIGUSR1 goes to main (blocked here).
    sigset_t m; sigemptyset(&m); sigaddset(&m, SIGUSR1); pthread_sigmask(SIG_BLOCK, &m, NULL);
    if (!set("thread", tw)) exit(2);
    thread_set = 1;
    while (!fixture_go) usleep(2000);
    check("thread", tw);
    thread_done = 1;
    return NULL;
}

int main(void) {
    cpu_set_t all; CPU_ZERO(&all);
    sched_getaffinity(0, sizeof all, &all);
    int first = -1, last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++) if (CPU_ISSET(c, &all)) { if (first < 0) first = c; last = c; }
    struct want mw = { 7, SCHED_BATCH, first, 123456, IOPRIO_VALUE(3, 0) };
    tw = (struct want){ 3, SCHED_IDLE, last, 7777, IOPRIO_VALUE(2, 6) };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { printf("PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno)); return 2; }
    if (!set("main", mw)) return 2;
    fixture_catch_usr1();
    pthread_t th;
    pthread_create(&th, NULL, thread_main, NULL);
    while (!thread_set) usleep(1000);
    // The child: main's settings but its own nice and I/O priority.
    struct want cw = { 15, SCHED_BATCH, first, 123456, IOPRIO_VALUE(2, 2) };
    int ready[2]; if (pipe(ready)) return 2;
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        if (setpriority(PRIO_PROCESS, 0, cw.nice) || syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, cw.ioprio)) _exit(2);
        fixture_catch_usr1();
        if (write(ready[1], "r", 1) != 1) _exit(2);
        while (!fixture_go) pause();
        check("child", cw);
        _exit(fixture_failures ? 1 : 0);
    }
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) { printf("the child did not start\n"); return 2; }
    fixture_ready();
    fixture_wait();
    check("main", mw);
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's checks failed (status 0x%x)", st);
    while (!thread_done) usleep(1000);
    pthread_join(th, NULL);
    return fixture_finish();
}
