// Syscall user dispatch (prctl PR_SET_SYSCALL_USER_DISPATCH, as Wine's threads use it while
// they run Windows code), found by the third probing round (December 7 2026): a thread with
// dispatch on and its selector at BLOCK spins in user space when the checkpoint comes. The
// checkpoint's injected syscalls raised SIGSYS in it, the kernel reset the program's SIGSYS
// handler (the signal was blocked by the injection), and the application, let go, died at
// its next dispatched syscall; a restart lost the setting. Now it is switched off while the
// thread is held (PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG, Linux 6.11), saved, and set again
// last. Afterwards the selector goes back to ALLOW, the thread makes syscalls and must see
// none of the checkpoint's; then BLOCK again and getppid must raise SIGSYS.
#include "fixture.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdint.h>

#define PR_SET_SYSCALL_USER_DISPATCH 59
static volatile char selector;
static volatile int nsys, lastnr = -1, go_on, started;
static volatile unsigned long spins;
static void on_sigsys(int s, siginfo_t *si, void *uc) { (void)s; (void)uc; selector = 0; nsys++; lastnr = si->si_syscall; }
static void *t(void *a) {
    sigset_t m; sigemptyset(&m); sigaddset(&m, SIGUSR1); pthread_sigmask(SIG_BLOCK, &m, NULL);
    if (prctl(PR_SET_SYSCALL_USER_DISPATCH, 1, 0, 0, &selector)) { printf("prctl: %s\n", strerror(errno)); return a; }
    started = 1;
    selector = 1;
    while (!go_on) spins++;   // no syscalls here
    // selector may still be BLOCK: the handler sets it to ALLOW on the first SIGSYS
    selector = 0;
    int before = nsys;
    syscall(SYS_getpid);
    selector = 1;
    syscall(SYS_getppid);
    printf("spins %lu, SIGSYS before release %d, total %d, last nr %d\n", spins, before, nsys, lastnr);
    if (before != 0) printf("FAIL: %d SIGSYS while BLOCK and spinning (checkpoint's syscalls?)\n", before);
    if (nsys != before + 1 || lastnr != SYS_getppid) printf("FAIL: SIGSYS after BLOCK: %d (want %d) nr %d\n", nsys, before + 1, lastnr);
    prctl(PR_SET_SYSCALL_USER_DISPATCH, 0, 0, 0, 0);
    return (void *)(long)(before == 0 && nsys == 1 && lastnr == SYS_getppid);
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction ss = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
    sigaction(SIGSYS, &ss, NULL);
    pthread_t th; pthread_create(&th, NULL, t, NULL);
    while (!started) usleep(1000);
    usleep(100000);
    fixture_ready();
    fixture_wait();
    go_on = 1;
    void *r; pthread_join(th, &r);
    EXPECT(r == (void *)1L, "syscall user dispatch thread");
    return fixture_finish();
}
