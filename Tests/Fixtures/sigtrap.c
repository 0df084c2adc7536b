// Issue 10, "Restored wrong": a process stopped with a pending SIGTRAP does not resume
// correctly. (The engine itself works with ptrace, whose stops are SIGTRAP-shaped: a SIGTRAP
// that belongs to the program must neither be eaten nor taken for the engine's own.)
//   stopped   a child with a SIGTRAP handler (SA_SIGINFO), stopped by SIGSTOP; the parent then
//             sends it SIGTRAP with sigqueue (value 77): pending while it is stopped. After
//             restart it is still stopped (waitid WSTOPPED|WNOWAIT: SIGSTOP), SIGTRAP still
//             pending (SigPnd/ShdPnd in /proc/PID/status); after SIGCONT its handler runs once
//             with si_code SI_QUEUE, si_value 77, si_pid the parent; it exits 0
//   blocked   the root itself has SIGTRAP blocked and one pending, sent by tgkill (a
//             thread-directed one: si_code SI_TKILL): after restart sigpending shows it, and
//             when unblocked its handler runs once with si_code SI_TKILL
//   int3      a child that executes int3 with a SIGTRAP handler (si_code SI_KERNEL on x86) in
//             a loop once it is woken: the handler runs, the program goes on (the engine's
//             ptrace must not swallow it), 3 times
#include "fixture.h"
#include <sys/syscall.h>
#include <sys/wait.h>

static volatile int traps, trap_code, trap_value, trap_pid;
static void on_trap(int s, siginfo_t *si, void *c) { (void)s; (void)c; traps++; trap_code = si->si_code; trap_value = si->si_value.sival_int; trap_pid = si->si_pid; }

static int stat_state(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    char *r = fgets(buf, sizeof buf, f);
    fclose(f);
    char *p = r ? strrchr(buf, ')') : NULL;
    return p ? p[2] : '?';
}

// SIGTRAP (5) pending in /proc/pid/status: SigPnd or ShdPnd has bit 4.
static int trap_pending(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    int p = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "SigPnd:", 7) || !strncmp(line, "ShdPnd:", 7)) p |= (strtoull(line + 8, NULL, 16) >> (SIGTRAP - 1)) & 1;
    if (f) fclose(f);
    return p;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);                              // inherited by the children
    pid_t root = getpid();
    pid_t stopped = fork();
    if (stopped == 0) {
        raise(SIGSTOP);
        // Resumed: the SIGTRAP handler has run by now (pending signals are delivered on resume).
        int ok = traps == 1 && trap_code == SI_QUEUE && trap_value == 77 && trap_pid == root;
        printf("stopped: %d traps, code %d value %d pid %d: %s\n", traps, trap_code, trap_value, trap_pid, ok ? "OK" : "FAIL");
        _exit(ok ? 0 : 1);
    }
    pid_t int3 = fork();
    if (int3 == 0) {
        fixture_catch_usr1();
        fixture_wait();
        for (int i = 0; i < 3; i++) __asm__ volatile("int3");
        int ok = traps == 3 && trap_code == SI_KERNEL;
        printf("int3: %d traps, code %d: %s\n", traps, trap_code, ok ? "OK" : "FAIL");
        _exit(ok ? 0 : 1);
    }
    while (stat_state(stopped) != 'T') usleep(1000);
    union sigval v = { .sival_int = 77 };
    sigqueue(stopped, SIGTRAP, v);
    sigset_t t;
    sigemptyset(&t);
    sigaddset(&t, SIGTRAP);
    sigprocmask(SIG_BLOCK, &t, NULL);
    syscall(SYS_tgkill, getpid(), getpid(), SIGTRAP);
    usleep(50000);
    EXPECT(trap_pending(stopped) && trap_pending(getpid()), "setup: SIGTRAP not pending");

    fixture_ready();
    fixture_wait();

    EXPECT(stat_state(stopped) == 'T', "stopped: state %c, expected T", stat_state(stopped));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    EXPECT(waitid(P_PID, stopped, &si, WSTOPPED | WNOWAIT | WNOHANG) == 0 && si.si_pid == stopped && si.si_status == SIGSTOP,
           "stopped: waitid(WSTOPPED) pid %d status %d", si.si_pid, si.si_status);
    EXPECT(trap_pending(stopped), "stopped: SIGTRAP no longer pending");
    kill(stopped, SIGCONT);
    int st = 0;
    waitpid(stopped, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "stopped: status %#x (%s)", st, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exit");

    sigset_t p;
    sigpending(&p);
    EXPECT(sigismember(&p, SIGTRAP), "blocked: SIGTRAP no longer pending");
    sigprocmask(SIG_UNBLOCK, &t, NULL);
    EXPECT(traps == 1 && trap_code == SI_TKILL && trap_pid == root, "blocked: %d traps, code %d (expected 1, SI_TKILL %d)", traps, trap_code, SI_TKILL);

    kill(int3, SIGUSR1);
    waitpid(int3, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "int3: status %#x (%s)", st, WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exit");
    return fixture_finish();
}
