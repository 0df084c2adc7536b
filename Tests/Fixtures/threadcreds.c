// A thread whose credentials differ from the main thread's (raw setresuid/setresgid/setgroups
// act on the caller only: Go's syscall.RawSyscall, Samba's per-thread credentials): after restart
// it has the main thread's.
#include "fixture.h"
#include <pthread.h>
#include <sys/syscall.h>
static volatile int set, ok = -1;
static void *thr(void *a) {
    (void)a;
    sigset_t ss; sigemptyset(&ss); sigaddset(&ss, SIGUSR1); pthread_sigmask(SIG_BLOCK, &ss, NULL);
    gid_t g[] = {99};
    syscall(SYS_setgroups, 1, g); syscall(SYS_setresgid, 70, 80, 90); syscall(SYS_setresuid, 7, 8, 9);
    set = 1;
    while (!fixture_go) usleep(10000);
    uid_t r, e, s; gid_t gr, ge, gs; gid_t l[8];
    syscall(SYS_getresuid, &r, &e, &s); syscall(SYS_getresgid, &gr, &ge, &gs);
    int n = (int)syscall(SYS_getgroups, 8, l);
    ok = r == 7 && e == 8 && s == 9 && gr == 70 && ge == 80 && gs == 90 && n == 1 && l[0] == 99;
    if (!ok) printf("FAIL: thread: uids %u %u %u gids %u %u %u, %d groups\n", r, e, s, gr, ge, gs, n);
    fflush(stdout);
    return NULL;
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t t; pthread_create(&t, NULL, thr, NULL);
    while (!set) usleep(1000);
    fixture_ready();
    fixture_wait();
    pthread_join(t, NULL);
    EXPECT(ok == 1, "thread credentials");
    EXPECT(getuid() == 0 && geteuid() == 0, "main uid %d", getuid());
    return fixture_finish();
}
