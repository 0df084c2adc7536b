// A process tree: children in their own session and process group (with a grandchild in
// that group), a zombie not yet reaped, a child stopped by SIGSTOP, a child blocked in wait
// for its own child, and 20 processes in all. On SIGUSR1 after restart, the root checks the
// links, ids and states of its tree, each child checks its own, and all print PASS or FAIL.
#include "fixture.h"
#include <sys/wait.h>

static void child_wait_and_check(pid_t want_parent, const char *name, int check_session) {
    fixture_catch_usr1();
    pid_t me = getpid(), sid = getsid(0), pgid = getpgid(0);
    fixture_wait();
    EXPECT(getppid() == want_parent, "%s: parent %d, expected %d", name, getppid(), want_parent);
    EXPECT(getpid() == me && getsid(0) == sid && getpgid(0) == pgid, "%s: ids changed (sid %d pgid %d, were %d %d)", name, getsid(0), getpgid(0), sid, pgid);
    if (check_session) EXPECT(sid == me, "%s: not a session leader", name);
    printf("%s %s\n", name, fixture_failures ? "FAIL" : "OK");
    fflush(stdout);
    _exit(fixture_failures ? 1 : 0);
}

int main(void) {
    pid_t root = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t leader = fork();
    if (leader == 0) { setsid(); child_wait_and_check(root, "session-leader", 1); }
    pid_t group = fork();
    if (group == 0) {
        setpgid(0, 0);
        pid_t gc = fork();
        if (gc == 0) child_wait_and_check(getppid(), "grandchild", 0);
        // Blocked in wait() for its child across the restart.
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGUSR1, &sa, NULL);
        int st = 0;
        pid_t w = waitpid(gc, &st, 0);
        int ok = w == gc && WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("group-leader %s\n", ok ? "OK" : "FAIL");
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    setpgid(group, group);
    pid_t zombie = fork();
    if (zombie == 0) _exit(7);
    pid_t stopped = fork();
    if (stopped == 0) {
        fixture_catch_usr1();
        raise(SIGSTOP);
        child_wait_and_check(root, "stopped", 0);
    }
    pid_t more[14];
    for (int i = 0; i < 14; i++) {
        more[i] = fork();
        if (more[i] == 0) { char n[16]; snprintf(n, sizeof n, "worker-%d", i); child_wait_and_check(root, n, 0); }
    }
    // Let the zombie exit and the stopped child stop before saying READY.
    for (int i = 0; i < 100; i++) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", zombie);
        FILE *f = fopen(path, "r");
        int z = 0;
        if (f) { if (fgets(buf, sizeof buf, f)) z = strstr(buf, ") Z ") != NULL; fclose(f); }
        snprintf(path, sizeof path, "/proc/%d/stat", stopped);
        f = fopen(path, "r");
        int t = 0;
        if (f) { if (fgets(buf, sizeof buf, f)) t = strstr(buf, ") T ") != NULL; fclose(f); }
        if (z && t) break;
        usleep(20000);
    }
    fixture_ready();
    fixture_wait();

    EXPECT(getsid(leader) == leader, "session leader's session is %d", getsid(leader));
    EXPECT(getpgid(group) == group, "group leader's group is %d", getpgid(group));
    EXPECT(getsid(0) == root, "root no longer leads its session");
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", stopped);
    FILE *f = fopen(path, "r");
    int isStopped = f && fgets(buf, sizeof buf, f) && strstr(buf, ") T ");
    if (f) fclose(f);
    EXPECT(isStopped, "the stopped child is not stopped");
    int st = 0;
    pid_t w = waitpid(zombie, &st, WNOHANG);
    EXPECT(w == zombie && WIFEXITED(st) && WEXITSTATUS(st) == 7, "zombie: waitpid %d status %x", w, st);
    kill(stopped, SIGCONT);
    pid_t all[17] = { leader, stopped };
    for (int i = 0; i < 14; i++) all[2 + i] = more[i];
    for (int i = 0; i < 16; i++) kill(all[i], SIGUSR1);
    kill(-group, SIGUSR1);
    for (int i = 0; i < 16; i++) {
        w = waitpid(all[i], &st, 0);
        EXPECT(w == all[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %x", all[i], st);
    }
    w = waitpid(group, &st, 0);
    EXPECT(w == group && WIFEXITED(st) && WEXITSTATUS(st) == 0, "group leader: status %x", st);
    return fixture_finish();
}
