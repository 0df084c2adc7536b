// Issue 10, "Refused, though the state is ordinary": applications that made their own
// namespaces; here a PID namespace. A child ("outer") calls unshare(CLONE_NEWPID) and forks:
//   sib      outer's child forked before the unshare: it stays in the root's namespace
//   init     PID 1 in the new namespace (its getpid() is 1, getppid() 0), a subreaper by nature
//   k        init's child: PID 2 inside; it forks and exits at once (a zombie, unreaped)
//   orphan   k's child, PID 3 inside, reparented to init (ppid 1 inside) when k exited
// Each records its ids inside and (through /proc/self/status NSpid) outside.
//   thread   a second thread of init, with its own id inside (gettid)
//   grp      init's child, leader of a process group of its own inside; its child "member"
//            joined that group (setpgid with the id inside)
// A second child ("lone") starts a thread, then calls unshare(CLONE_NEWPID) and does not fork
// before the checkpoint: its pid_for_children is a namespace nobody lives in yet.
// After restart: getpid()/getppid() inside as before (1/0 for init, 3/1 for orphan), NSpid unchanged
// (both levels), the thread's gettid() unchanged, the root sees the same outer PIDs, the
// processes are in a PID namespace that is not the root's; a new child forked by init after
// restart gets a PID inside (> 3), not an outer one; init reaps it, k (exit 0) and the orphan;
// a child forked by outer after restart lands in init's namespace (two NSpid levels, ppid 0
// inside); a child forked by lone is PID 1 of a new namespace, and lone's thread runs; member is
// still in grp's group (getpgrp() == grp's id inside); everyone exits 0.
#include "fixture.h"
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <pthread.h>
#include <sys/syscall.h>

struct rec { pid_t in, inppid; char nspid[64]; };
static struct rec *tab;                                         // MAP_SHARED, set by each process

static void nspid(char *out, size_t n) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];   // NSpid of 3 levels fits: out holds 64
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) if (!strncmp(line, "NSpid:", 6)) { snprintf(out, n, "%s", line + 6); out[strcspn(out, "\n")] = 0; }
    if (f) fclose(f);
}

static void record(int i) { tab[i].in = getpid(); tab[i].inppid = getppid(); nspid(tab[i].nspid, sizeof tab[i].nspid); }

static int check(int i, const char *who) {
    char now[64];
    nspid(now, sizeof now);
    int ok = getpid() == tab[i].in && getppid() == tab[i].inppid && strcmp(now, tab[i].nspid) == 0;
    printf("%s: pid %d ppid %d NSpid '%s' (were %d %d '%s') %s\n", who, getpid(), getppid(), now, tab[i].in, tab[i].inppid, tab[i].nspid, ok ? "OK" : "FAIL");
    return ok;
}

static int levels(void) { char s[64]; nspid(s, sizeof s); int n = 0; for (char *p = strtok(s, " \t"); p; p = strtok(NULL, " \t")) n++; return n; }

static volatile int thread_go, thread_ok;
static void *thread_main(void *arg) {
    (void)arg;
    tab[3].in = (pid_t)syscall(SYS_gettid);
    while (!thread_go) usleep(1000);
    thread_ok = (pid_t)syscall(SYS_gettid) == tab[3].in;
    printf("thread: tid %ld inside (was %d) %s\n", (long)syscall(SYS_gettid), tab[3].in, thread_ok ? "OK" : "FAIL");
    return NULL;
}

static volatile int lone_go;
static void *lone_thread(void *arg) { (void)arg; while (!lone_go) usleep(1000); return NULL; }

static void ns_of(pid_t pid, char *out, size_t n) { char p[64]; snprintf(p, sizeof p, "/proc/%d/ns/pid", pid); ssize_t r = readlink(p, out, n - 1); out[r > 0 ? r : 0] = 0; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    tab = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    fixture_catch_usr1();
    pid_t outer = fork();
    if (outer == 0) {
        // A child of outer from before the unshare: it stays in the root's namespace.
        pid_t sib = fork();
        if (sib == 0) {
            tab[9].in = levels();
            while (!tab[8].in) usleep(1000);
            int ok = levels() == tab[9].in;
            printf("sibling: %d NSpid levels (were %d) %s\n", levels(), tab[9].in, ok ? "OK" : "FAIL");
            _exit(ok ? 0 : 1);
        }
        if (unshare(CLONE_NEWPID) < 0) { printf("FAIL: unshare: %s\n", strerror(errno)); _exit(1); }
        pid_t init = fork();
        if (init == 0) {
            pthread_t th;
            pthread_create(&th, NULL, thread_main, NULL);
            record(0);
            pid_t grp = fork();
            if (grp == 0) {
                setpgid(0, 0);
                tab[6].in = getpid();
                pid_t member = fork();
                if (member == 0) {
                    setpgid(0, tab[6].in);
                    tab[7].in = getpgrp();
                    while (!tab[8].in) usleep(1000);
                    int ok = getpgrp() == tab[6].in;
                    printf("member: group %d inside (grp is %d) %s\n", getpgrp(), tab[6].in, ok ? "OK" : "FAIL");
                    _exit(ok ? 0 : 1);
                }
                int st = -1;
                waitpid(member, &st, 0);
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
            }
            pid_t k = fork();
            if (k == 0) {
                record(1);
                pid_t o = fork();
                if (o == 0) {
                    while (getppid() != 1) usleep(1000);
                    record(2);
                    fixture_wait();
                    _exit(check(2, "orphan") ? 0 : 1);
                }
                _exit(0);                                   // its child becomes init's (an orphan)
            }
            fixture_wait();
            while (!tab[4].in) usleep(1000);                // outer has forked into this namespace
            tab[8].in = 1;                                  // grp and member may check
            int ok = check(0, "init");
            thread_go = 1;
            pthread_join(th, NULL);
            ok = ok && thread_ok;
            pid_t n = fork();
            if (n == 0) _exit(getpid() > 3 && getppid() == 1 ? 0 : 1);
            ok = ok && n > 3;
            if (n <= 3) printf("FAIL: init: a child forked after restart got PID %d inside\n", n);
            int st, bad = 0, reaped = 0;
            pid_t w;
            while ((w = wait(&st)) > 0) { reaped++; if (!WIFEXITED(st) || WEXITSTATUS(st)) { bad++; printf("FAIL: init: %d exited %#x\n", w, st); } }
            _exit(ok && !bad && reaped == 4 ? 0 : 1);
        }
        fixture_wait();
        // Its pid_for_children is still init's namespace: a child lands there.
        pid_t c = fork();
        if (c == 0) _exit(levels() == 2 && getppid() == 0 && getpid() > 3 ? 0 : 1);
        tab[4].in = 1;
        int st, cst = -1;
        waitpid(c, &cst, 0);
        if (!(WIFEXITED(cst) && WEXITSTATUS(cst) == 0)) printf("FAIL: outer: its child after restart (%d) was not in init's namespace (status %#x)\n", c, cst);
        waitpid(init, &st, 0);
        int sst = -1;
        waitpid(sib, &sst, 0);
        _exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 && WIFEXITED(cst) && WEXITSTATUS(cst) == 0 && WIFEXITED(sst) && WEXITSTATUS(sst) == 0 ? 0 : 1);
    }
    pid_t lone = fork();
    if (lone == 0) {
        // A thread made before the unshare: threads cannot be made after it (clone(2):
        // CLONE_THREAD with pid_for_children another namespace is EINVAL), nor at restart.
        pthread_t lt;
        pthread_create(&lt, NULL, lone_thread, NULL);
        if (unshare(CLONE_NEWPID) < 0) { printf("FAIL: lone: unshare: %s\n", strerror(errno)); _exit(1); }
        tab[5].in = 1;
        fixture_wait();
        lone_go = 1;
        pthread_join(lt, NULL);
        pid_t c = fork();
        if (c == 0) { char s[64]; nspid(s, sizeof s); printf("lone's child: pid %d NSpid '%s'\n", getpid(), s); _exit(getpid() == 1 && levels() == 2 ? 0 : 1); }
        int st = -1;
        waitpid(c, &st, 0);
        printf("lone: its first child after restart %s (status %#x)\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "was PID 1 of a new namespace: OK" : "FAIL", st);
        _exit(WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1);
    }
    for (int i = 0; i < 500 && (!tab[2].in || !tab[3].in || !tab[5].in || !tab[7].in || !tab[9].in); i++) usleep(10000);
    char r0[64], c0[64];
    usleep(100000);
    printf("init %s, k %s, orphan %s\n", tab[0].nspid, tab[1].nspid, tab[2].nspid);

    fixture_ready();
    fixture_wait();

    pid_t outs[3];
    for (int i = 0; i < 3; i++) outs[i] = atoi(tab[i].nspid);
    ns_of(getpid(), r0, sizeof r0);
    ns_of(outs[0], c0, sizeof c0);
    EXPECT(c0[0] && strcmp(r0, c0) != 0, "init (outer PID %d) is in the root's PID namespace (%s)", outs[0], c0);
    for (int i = 0; i < 3; i++) EXPECT(kill(outs[i], 0) == 0, "outer PID %d (%s) is gone", outs[i], tab[i].nspid);
    kill(outs[0], SIGUSR1);
    kill(outs[2], SIGUSR1);
    kill(outer, SIGUSR1);
    kill(lone, SIGUSR1);
    int st = 0;
    waitpid(outer, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the namespace's processes: status %#x", st);
    waitpid(lone, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "lone (unshared, no child yet): status %#x", st);
    return fixture_finish();
}
