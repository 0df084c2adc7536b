// Issue 10, "Restored wrong": zombies whose parent has signal handlers (restart failed
// resetting a handler with EINVAL), and zombie trees that come back with wrong wait results.
// The root has handlers for many signals (SA_SIGINFO, SA_RESTART, SA_NOCLDSTOP, SA_ONSTACK,
// masks, SIG_IGN for some) and a SIGCHLD handler that only counts; its children inherited
// those handlers and left as zombies in every way a process can end:
//   exit7     _exit(7)
//   exit0     returned 0 from a thread-less main path (exit(0) with atexit handlers run)
//   term      killed by SIGTERM (handler reset to default first)
//   kill      killed by SIGKILL
//   segv      killed by SIGSEGV, RLIMIT_CORE 0 so no core (CLD_KILLED, not CLD_DUMPED)
//   abrt      killed by SIGABRT with RLIMIT_CORE 0
//   mid       alive, with handlers of its own, holding its own zombie child (exit 42) unreaped
// After restart the root checks with waitid(WEXITED|WNOWAIT) then waitpid: si_pid, si_code,
// si_status, si_uid, and the status word of each; that its handlers are all as they were;
// that no extra SIGCHLD came (its handler count is unchanged: the zombies did not die again
// in front of it); "mid" checks its own zombie the same way.
#include "fixture.h"
#include <sys/resource.h>
#include <sys/wait.h>

static volatile int chld_count;
static void on_chld(int sig, siginfo_t *si, void *ctx) { (void)sig; (void)si; (void)ctx; chld_count++; }
static void on_other(int sig) { (void)sig; }
static char altstack[65536];

struct kid { const char *name; pid_t pid; int code; int status; };

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

static void wait_zombie(pid_t pid) { for (int i = 0; i < 500 && stat_state(pid) != 'Z'; i++) usleep(10000); }

static void check_zombie(const char *who, struct kid *k) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, k->pid, &si, WEXITED | WNOWAIT | WNOHANG);
    EXPECT(r == 0 && si.si_pid == k->pid && si.si_code == k->code && si.si_status == k->status && si.si_uid == getuid() && si.si_signo == SIGCHLD,
           "%s: zombie %s (%d): waitid %d pid %d code %d status %d uid %d (expected code %d status %d)", who, k->name, k->pid, r, si.si_pid, si.si_code, si.si_status, si.si_uid, k->code, k->status);
    int st = 0;
    pid_t w = waitpid(k->pid, &st, WNOHANG);
    int ok = w == k->pid;
    if (k->code == CLD_EXITED) ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == k->status;
    else ok = ok && WIFSIGNALED(st) && WTERMSIG(st) == k->status && !WCOREDUMP(st);
    EXPECT(ok, "%s: zombie %s (%d): waitpid %d status %#x", who, k->name, k->pid, w, st);
}

static void set_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_other;
    sa.sa_flags = SA_RESTART | SA_ONSTACK;
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGRTMIN);
    int sigs[] = { SIGHUP, SIGINT, SIGQUIT, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGWINCH, SIGURG, SIGIO, SIGRTMIN, SIGRTMAX };
    for (unsigned i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
    signal(SIGTSTP, SIG_IGN);
    signal(SIGTTOU, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack };
    sigaltstack(&ss, NULL);
}

static struct sigaction saved[65];

static void save_handlers(void) { for (int s = 1; s <= 64; s++) if (s != SIGKILL && s != SIGSTOP && s != 32 && s != 33) sigaction(s, NULL, &saved[s]); }

static void compare_handlers(const char *who) {
    for (int s = 1; s <= 64; s++) {
        if (s == SIGKILL || s == SIGSTOP || s == 32 || s == 33) continue;
        struct sigaction now;
        sigaction(s, NULL, &now);
        EXPECT(now.sa_sigaction == saved[s].sa_sigaction && now.sa_flags == saved[s].sa_flags && memcmp(&now.sa_mask, &saved[s].sa_mask, 8) == 0,
               "%s: signal %d handler %p flags %#x, was %p flags %#x", who, s, (void *)now.sa_sigaction, now.sa_flags, (void *)saved[s].sa_sigaction, saved[s].sa_flags);
    }
}

static void on_exit_run(void) { }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit nocore = { 0, 0 };
    setrlimit(RLIMIT_CORE, &nocore);
    set_handlers();
    fixture_catch_usr1();                                       // fixture_ready sets it anyway
    save_handlers();
    struct kid kids[6] = {
        { "exit7", 0, CLD_EXITED, 7 }, { "exit0", 0, CLD_EXITED, 0 }, { "term", 0, CLD_KILLED, SIGTERM },
        { "kill", 0, CLD_KILLED, SIGKILL }, { "segv", 0, CLD_KILLED, SIGSEGV }, { "abrt", 0, CLD_KILLED, SIGABRT },
    };
    for (int i = 0; i < 6; i++) {
        pid_t p = fork();
        if (p == 0) {
            switch (i) {
            case 0: _exit(7);
            case 1: atexit(on_exit_run); exit(0);
            case 2: signal(SIGTERM, SIG_DFL); raise(SIGTERM); break;
            case 3: raise(SIGKILL); break;
            case 4: signal(SIGSEGV, SIG_DFL); *(volatile int *)8 = 1; break;
            case 5: abort();
            }
            _exit(99);
        }
        kids[i].pid = p;
    }
    pid_t mid = fork();
    if (mid == 0) {
        // Handlers of its own, and its own zombie.
        fixture_catch_usr1();
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_other;
        sa.sa_flags = SA_RESETHAND | SA_NODEFER;
        sigaction(SIGINT, &sa, NULL);
        signal(SIGCHLD, SIG_DFL);
        save_handlers();
        struct kid g = { "grandchild", 0, CLD_EXITED, 42 };
        g.pid = fork();
        if (g.pid == 0) _exit(42);
        wait_zombie(g.pid);
        fixture_wait();
        compare_handlers("mid");
        check_zombie("mid", &g);
        printf("mid %s\n", fixture_failures ? "FAIL" : "OK");
        _exit(fixture_failures ? 1 : 0);
    }
    for (int i = 0; i < 6; i++) wait_zombie(kids[i].pid);
    usleep(100000);
    int chldBefore = chld_count;

    fixture_ready();
    fixture_wait();

    compare_handlers("root");
    for (int i = 0; i < 6; i++) EXPECT(stat_state(kids[i].pid) == 'Z', "%s (%d) is not a zombie: state %c", kids[i].name, kids[i].pid, stat_state(kids[i].pid));
    EXPECT(chld_count == chldBefore, "SIGCHLD handler ran %d more times after restart (the zombies' deaths were seen again)", chld_count - chldBefore);
    for (int i = 0; i < 6; i++) check_zombie("root", &kids[i]);
    kill(mid, SIGUSR1);
    int st = 0;
    EXPECT(waitpid(mid, &st, 0) == mid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "mid: status %#x", st);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    EXPECT(waitid(P_ALL, 0, &si, WEXITED | WNOHANG) < 0 && errno == ECHILD, "root has children left (pid %d)", si.si_pid);
    return fixture_finish();
}
