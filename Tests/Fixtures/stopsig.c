// Issue 10, "Restored wrong": a stopped process comes back stopped by SIGSTOP when it had been
// stopped by SIGTSTP (the stop signal must be the original one). Children of the root, each
// stopped by job control in another way, checked from the parent with waitid(WSTOPPED) and
// /proc/PID/stat:
//   tstp    stopped by SIGTSTP sent by the parent, its stop not yet reported: waitid(WSTOPPED|
//           WNOWAIT) gives CLD_STOPPED with si_status SIGTSTP
//   stop    raise(SIGSTOP), not yet reported: si_status SIGSTOP
//   ttin    stopped by SIGTTIN sent by the parent, not yet reported: SIGTTIN
//   ttou    stopped by SIGTTOU, and the parent already consumed the report (waitpid
//           WUNTRACED) before the checkpoint: no new report after restart (waitid WSTOPPED|
//           WNOHANG finds nothing), though it is still stopped
// Then SIGCONT: each reports CLD_CONTINUED (waitid WCONTINUED), resumes, and on SIGUSR1
// checks its own ids and exits 0; a pending SIGUSR2 sent while "tstp" was stopped is delivered after SIGCONT.
#include "fixture.h"
#include <sys/wait.h>

static volatile int got_usr2;
static void on_usr2(int s) { (void)s; got_usr2 = 1; }

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

static void wait_stopped(pid_t pid) { for (int i = 0; i < 500 && stat_state(pid) != 'T'; i++) usleep(10000); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *names[4] = { "tstp", "stop", "ttin", "ttou" };
    int sigs[4] = { SIGTSTP, SIGSTOP, SIGTTIN, SIGTTOU };
    pid_t kids[4];
    signal(SIGUSR2, on_usr2);                                   // inherited: set before a child can stop
    fixture_catch_usr1();
    for (int i = 0; i < 4; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            setpgid(0, 0);
            pid_t me = getpid(), pg = getpgid(0);
            if (i == 1) raise(SIGSTOP);
            else while (!got_usr2) pause();
            // Resumed; stays until SIGUSR1, so that the parent can take its CLD_CONTINUED
            // report first (an exit would replace it).
            while (!fixture_go) pause();
            // Resumed (by SIGCONT): tstp also got its SIGUSR2.
            int ok = getpid() == me && getpgid(0) == pg;
            if (i == 0) ok = ok && got_usr2;
            printf("%s %s\n", names[i], ok ? "OK" : "FAIL (ids or SIGUSR2)");
            _exit(ok ? 0 : 1);
        }
    }
    // Each child leads its own process group, whose parent (the root) is in another group of
    // the same session: the group is not orphaned, so the kernel lets SIGTSTP/SIGTTIN/SIGTTOU
    // stop it (the root's own group is orphaned: ssi run's process is gone).
    for (int i = 0; i < 4; i++) setpgid(kids[i], kids[i]);
    kill(kids[0], SIGTSTP);
    kill(kids[2], SIGTTIN);
    kill(kids[3], SIGTTOU);
    for (int i = 0; i < 4; i++) wait_stopped(kids[i]);
    int st = 0;
    pid_t w = waitpid(kids[3], &st, WUNTRACED);                 // ttou's report consumed now
    EXPECT(w == kids[3] && WIFSTOPPED(st) && WSTOPSIG(st) == SIGTTOU, "before checkpoint: ttou waitpid %d status %#x", w, st);
    kill(kids[0], SIGUSR2);                                     // pending while stopped
    for (int i = 0; i < 4; i++) EXPECT(stat_state(kids[i]) == 'T', "before checkpoint: %s not stopped", names[i]);

    fixture_ready();
    fixture_wait();

    for (int i = 0; i < 4; i++) EXPECT(stat_state(kids[i]) == 'T', "%s: state %c, expected T (stopped)", names[i], stat_state(kids[i]));
    for (int i = 0; i < 3; i++) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r = waitid(P_PID, kids[i], &si, WSTOPPED | WNOWAIT | WNOHANG);
        EXPECT(r == 0 && si.si_pid == kids[i] && si.si_code == CLD_STOPPED && si.si_status == sigs[i],
               "%s: waitid(WSTOPPED) %d pid %d code %d si_status %d, expected CLD_STOPPED by %d (%s)", names[i], r, si.si_pid, si.si_code, si.si_status, sigs[i], strsignal(sigs[i]));
        st = 0;
        w = waitpid(kids[i], &st, WUNTRACED | WNOHANG);
        EXPECT(w == kids[i] && WIFSTOPPED(st) && WSTOPSIG(st) == sigs[i], "%s: waitpid(WUNTRACED) %d status %#x (stop signal %d, expected %d)", names[i], w, st, WSTOPSIG(st), sigs[i]);
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, kids[3], &si, WSTOPPED | WNOHANG);
    EXPECT(r == 0 && si.si_pid == 0, "ttou: its stop was reported again after restart (si_pid %d si_status %d)", si.si_pid, si.si_status);
    for (int i = 0; i < 4; i++) {
        kill(kids[i], SIGCONT);
        if (i != 1) kill(kids[i], SIGUSR2);                     // wakes the pause() loop
        memset(&si, 0, sizeof si);
        r = waitid(P_PID, kids[i], &si, WCONTINUED);
        EXPECT(r == 0 && si.si_code == CLD_CONTINUED && si.si_status == SIGCONT, "%s: WCONTINUED report %d code %d status %d", names[i], r, si.si_code, si.si_status);
        kill(kids[i], SIGUSR1);
    }
    for (int i = 0; i < 4; i++) {
        st = 0;
        w = waitpid(kids[i], &st, 0);
        EXPECT(w == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit status %#x", names[i], st);
    }
    return fixture_finish();
}
