// Issue 10, "Restored wrong", PIDs: a tree with several sessions failed restart with "busy
// (taken while restarting)", and a program that checks its pid/ppid/pgid/sid relations after
// restart saw a difference. The root is a child subreaper (as init-like programs are) and
// leads the session ssi run gave it. The tree (no pipes, so that only this is tested):
//   root                 session R (leader), group R
//   ├─ s1                setsid: session S1, leader
//   │  ├─ s1g            group of its own in S1 (setpgid(0,0))
//   │  │  └─ s1g.k       joined s1g's group
//   │  └─ s1m            stays in s1's group
//   ├─ s2                setsid: session S2 (leader), then exited: its session and group
//   │                    live on without their leader, and its child
//   │    (s2c)           was reparented to the root (the subreaper): ppid = root, sid = S2,
//   │                    pgid = S2
//   │       └─ s2c.s3    setsid: session S3 inside, with its own child s3k
//   ├─ g                 group of its own in session R, led by g
//   │  └─ gk             in g's group
//   └─ x                 joined g's group (a group whose members have different parents)
// Every process writes its pid, ppid, pgid and sid at setup; after restart each checks its own
// (getpid/getppid/getpgid/getsid), and the root checks everyone's from /proc/PID/stat and
// getpgid/getsid, then wakes them; each reaps its children and exits with their result and
// its own; the root reaps its children (s2c too: it is its subreaper) and checks
// PR_GET_CHILD_SUBREAPER.
#include "fixture.h"
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define MAXP 16
struct ids { char name[12]; pid_t pid, ppid, pgid, sid; };
static struct ids *tab;                      // shared with every process (MAP_SHARED)

static void record(int slot, const char *name) {
    struct ids *e = &tab[slot];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ppid = getppid(); e->pgid = getpgid(0); e->sid = getsid(0);
    __atomic_store_n(&e->pid, getpid(), __ATOMIC_SEQ_CST);
}

static void wait_slot(int slot) { while (__atomic_load_n(&tab[slot].pid, __ATOMIC_SEQ_CST) == 0) usleep(1000); }

// Each non-root process: checks its own ids after SIGUSR1, exits 0/1.
static void live(int slot) {
    struct ids *e = &tab[slot];
    fixture_wait();
    int ok = getpid() == e->pid && getppid() == e->ppid && getpgid(0) == e->pgid && getsid(0) == e->sid;
    printf("%s %s (pid %d ppid %d pgid %d sid %d; were %d %d %d %d)\n", e->name, ok ? "OK" : "FAIL", getpid(), getppid(), getpgid(0), getsid(0), e->pid, e->ppid, e->pgid, e->sid);
    // Its children checked their ppid against it: it leaves after them, with their verdict.
    int st;
    while (wait(&st) > 0) if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = 0;
    _exit(ok ? 0 : 1);
}

static int proc_ids(pid_t pid, pid_t *ppid, pid_t *pgid, pid_t *sid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *r = fgets(buf, sizeof buf, f);
    fclose(f);
    char *p = r ? strrchr(buf, ')') : NULL;
    char st;
    return p && sscanf(p + 2, "%c %d %d %d", &st, ppid, pgid, sid) == 4 ? 0 : -1;
}

enum { ROOT, S1, S1G, S1GK, S1M, S2, S2C, S3, S3K, G, GK, X, N };

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    tab = mmap(NULL, sizeof(struct ids) * MAXP, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    fixture_catch_usr1();                                       // inherited by every child
    record(ROOT, "root");

    pid_t s1 = fork();
    if (s1 == 0) {
        setsid();
        record(S1, "s1");
        pid_t g = fork();
        if (g == 0) {
            setpgid(0, 0);
            if (fork() == 0) { record(S1GK, "s1g.k"); live(S1GK); }
            record(S1G, "s1g");
            live(S1G);
        }
        setpgid(g, g);
        if (fork() == 0) { record(S1M, "s1m"); live(S1M); }
        live(S1);
    }
    pid_t s2 = fork();
    if (s2 == 0) {
        setsid();
        record(S2, "s2");
        if (fork() == 0) {
            record(S2C, "s2c");                                 // ppid rewritten once s2 is gone
            if (fork() == 0) {
                setsid();
                record(S3, "s2c.s3");
                if (fork() == 0) { record(S3K, "s3k"); live(S3K); }
                live(S3);
            }
            while (getppid() == tab[S2].pid) usleep(1000);
            tab[S2C].ppid = getppid();
            live(S2C);
        }
        wait_slot(S2C);
        _exit(0);                                               // the session leader leaves
    }
    pid_t g = fork();
    if (g == 0) {
        setpgid(0, 0);
        if (fork() == 0) { record(GK, "gk"); live(GK); }
        record(G, "g");
        live(G);
    }
    setpgid(g, g);
    pid_t x = fork();
    if (x == 0) {
        setpgid(0, g);
        record(X, "x");
        live(X);
    }
    setpgid(x, g);
    for (int i = 0; i < N; i++) if (i != S2) wait_slot(i);
    int st;
    waitpid(s2, &st, 0);
    while (tab[S2C].ppid != getpid()) usleep(1000);             // s2c reparented to us
    usleep(50000);
    for (int i = 0; i < N; i++) if (i != S2 && i != ROOT) { pid_t a, b, c; proc_ids(tab[i].pid, &a, &b, &c); EXPECT(a == tab[i].ppid && b == tab[i].pgid && c == tab[i].sid, "before checkpoint: %s ids differ from /proc", tab[i].name); }
    printf("tree: root %d s1 %d s2(gone) %d s2c %d s3 %d g %d x %d\n", getpid(), tab[S1].pid, tab[S2].pid, tab[S2C].pid, tab[S3].pid, tab[G].pid, tab[X].pid);

    fixture_ready();
    fixture_wait();

    struct ids *r = &tab[ROOT];
    EXPECT(getpid() == r->pid && getppid() != 0 && getpgid(0) == r->pgid && getsid(0) == r->sid && getsid(0) == getpid(), "root: pid %d pgid %d sid %d, were %d %d %d", getpid(), getpgid(0), getsid(0), r->pid, r->pgid, r->sid);
    int sub = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &sub);
    EXPECT(sub == 1, "root is no longer a child subreaper");
    for (int i = 0; i < N; i++) {
        if (i == ROOT || i == S2) continue;
        struct ids *e = &tab[i];
        pid_t ppid = -1, pgid = -1, sid = -1;
        int ok = proc_ids(e->pid, &ppid, &pgid, &sid) == 0;
        EXPECT(ok && ppid == e->ppid && pgid == e->pgid && sid == e->sid && getpgid(e->pid) == e->pgid && getsid(e->pid) == e->sid,
               "%s (%d): ppid %d pgid %d sid %d, were %d %d %d", e->name, e->pid, ppid, pgid, sid, e->ppid, e->pgid, e->sid);
    }
    EXPECT(kill(tab[S2].pid, 0) < 0 && errno == ESRCH, "s2 (%d), which had exited, exists again", tab[S2].pid);
    // Wake everyone, leaves first (parents wait for nothing: orphans come to us).
    for (int i = N - 1; i > 0; i--) if (i != S2) kill(tab[i].pid, SIGUSR1);
    int reaped = 0, bad = 0;
    for (;;) {
        pid_t w = waitpid(-1, &st, 0);
        if (w < 0) break;
        reaped++;
        int known = 0;
        for (int i = 0; i < N; i++) if (tab[i].pid == w) known = 1;
        if (!known || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { bad++; printf("FAIL: reaped %d (%s) status %#x\n", w, known ? "known" : "unknown", st); }
    }
    fixture_failures += bad;
    EXPECT(reaped == 4, "reaped %d processes, expected 4 (s1, g, x, s2c; each reaps its own children)", reaped);
    return fixture_finish();
}
