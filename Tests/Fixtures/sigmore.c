// Per-thread and per-process states found by probing (December 2026), each refused or lost by
// a restart:
//   - a signal pending on a worker thread that blocks it, made by the kernel (SIGPIPE of a
//     write to a closed pipe, si_code SI_USER) or by pthread_kill (SI_TKILL): the restart
//     failed ("rt_tgsigqueueinfo: Operation not permitted"); each must reach its thread with
//     its code and pid;
//   - PR_SET_PDEATHSIG set by a thread other than the main one (it is per thread);
//   - PR_MCE_KILL per thread (QEMU sets early on its vCPU threads);
//   - a child forked before its parent lowered its own hard limits (RLIMIT_NOFILE,
//     RLIMIT_CORE): the child came back with the parent's lowered ones.
#include "fixture.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

static int go[2], ready[2];

static void check_pending(int sig, int code) {
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, sig);
    struct timespec z = {0, 0};
    siginfo_t si;
    int s = sigtimedwait(&m, &si, &z);
    // pthread_kill's tgkill gives SI_TKILL on some kernels and SI_USER on others: either.
    EXPECT(s == sig && (si.si_code == code || (code == SI_TKILL && si.si_code == SI_USER)) && si.si_pid == getpid(), "thread's pending signal: got %d code %d pid %d, want %d code %d pid %d",
           s, s > 0 ? si.si_code : 0, s > 0 ? si.si_pid : 0, sig, code, getpid());
}

// Blocks SIGPIPE and SIGUSR2, gets a SIGPIPE of its own from a write to a closed pipe, sets its
// parent-death signal and its machine-check policy, then waits for the check.
static void *worker(void *arg) {
    (void)arg;
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGPIPE);
    sigaddset(&m, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
    int p[2];
    if (pipe(p)) return NULL;
    close(p[0]);
    if (write(p[1], "x", 1) >= 0) printf("write to a closed pipe worked\n");
    close(p[1]);
    prctl(PR_SET_PDEATHSIG, SIGHUP);
    prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_LATE, 0, 0);
    char c = 'r';
    if (write(ready[1], &c, 1) != 1) return NULL;
    while (read(go[0], &c, 1) != 1) {}
    check_pending(SIGPIPE, SI_USER);
    check_pending(SIGUSR2, SI_TKILL);
    int pd = -1;
    prctl(PR_GET_PDEATHSIG, &pd);
    EXPECT(pd == SIGHUP, "worker's PR_GET_PDEATHSIG %d, want SIGHUP", pd);
    int mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
    EXPECT(mce == PR_MCE_KILL_LATE, "worker's PR_MCE_KILL_GET %d, want LATE (0)", mce);
    return NULL;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    // The worker's parent-death signal fires when the process's parent goes (`ssi run -b`
    // returns): ignored, so that only its setting is checked.
    signal(SIGHUP, SIG_IGN);
    struct rlimit nofile, core;
    getrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_CORE, &core);
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        fixture_wait();
        struct rlimit a, b;
        getrlimit(RLIMIT_NOFILE, &a);
        getrlimit(RLIMIT_CORE, &b);
        EXPECT(a.rlim_cur == nofile.rlim_cur && a.rlim_max == nofile.rlim_max, "child's RLIMIT_NOFILE %llu/%llu, was %llu/%llu",
               (unsigned long long)a.rlim_cur, (unsigned long long)a.rlim_max, (unsigned long long)nofile.rlim_cur, (unsigned long long)nofile.rlim_max);
        EXPECT(b.rlim_cur == core.rlim_cur && b.rlim_max == core.rlim_max, "child's RLIMIT_CORE %llu/%llu, was %llu/%llu",
               (unsigned long long)b.rlim_cur, (unsigned long long)b.rlim_max, (unsigned long long)core.rlim_cur, (unsigned long long)core.rlim_max);
        _exit(fixture_failures ? 1 : 0);
    }
    // The parent lowers its own hard limits after the fork (a server dropping what its
    // workers keep).
    struct rlimit low = { 256, 512 }, none = { 0, 0 };
    setrlimit(RLIMIT_NOFILE, &low);
    setrlimit(RLIMIT_CORE, &none);
    prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0);

    if (pipe(go) || pipe(ready)) return 4;
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    char c;
    if (read(ready[0], &c, 1) != 1) return 4;
    pthread_kill(t, SIGUSR2);
    usleep(50000);
    fixture_ready();
    fixture_wait();

    int mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
    EXPECT(mce == PR_MCE_KILL_EARLY, "main's PR_MCE_KILL_GET %d, want EARLY (1)", mce);
    struct rlimit a;
    getrlimit(RLIMIT_NOFILE, &a);
    EXPECT(a.rlim_cur == 256 && a.rlim_max == 512, "parent's RLIMIT_NOFILE %llu/%llu, was 256/512", (unsigned long long)a.rlim_cur, (unsigned long long)a.rlim_max);
    c = 'g';
    if (write(go[1], &c, 1) != 1) return 4;
    pthread_join(t, NULL);
    kill(child, SIGUSR1);
    int st;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child's checks failed (status %#x)", st);
    return fixture_finish();
}
