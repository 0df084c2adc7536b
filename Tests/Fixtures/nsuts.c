// Issue 10, "Refused, though the state is ordinary": applications that made their own
// namespaces; here UTS (with its hostname and domain name).
//   a     a child that unshare(CLONE_NEWUTS), sethostname("ssi-uts-a"), setdomainname("dom-a"),
//         then forked a grandchild (a.k) that shares its namespace
//   b     another child with its own UTS namespace, hostname "ssi-uts-b"
//   root  stays in the namespace it started in
// After restart: each process's uname() nodename/domainname are its own; a and a.k are in
// one namespace (same /proc/PID/ns/uts), b in another, the root in neither; sethostname in a
// changes a.k's view, not the root's.
#include "fixture.h"
#include <sched.h>
#include <sys/utsname.h>
#include <sys/wait.h>

static volatile sig_atomic_t k_checked;
static void on_usr2(int s) { (void)s; k_checked = 1; }

static void ns_of(pid_t pid, char *out, size_t n) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/uts", pid);
    ssize_t r = readlink(path, out, n - 1);
    out[r > 0 ? r : 0] = 0;
}

static int check_names(const char *who, const char *host, const char *dom) {
    struct utsname u;
    uname(&u);
    int ok = strcmp(u.nodename, host) == 0 && (!dom || strcmp(u.domainname, dom) == 0);
    if (!ok) printf("FAIL: %s: hostname '%s' domain '%s', expected '%s' '%s'\n", who, u.nodename, u.domainname, host, dom ? dom : "*");
    return ok;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    struct utsname mine;
    uname(&mine);
    int p[2];
    pipe(p);                                                    // a.k's pid for the root (closed before READY)
    pid_t a = fork();
    if (a == 0) {
        signal(SIGUSR2, on_usr2);
        unshare(CLONE_NEWUTS);
        sethostname("ssi-uts-a", 9);
        setdomainname("dom-a", 5);
        pid_t k = fork();
        if (k == 0) {
            fixture_wait();
            int ok = check_names("a.k", "ssi-uts-a", "dom-a");
            kill(getppid(), SIGUSR2);                           // a may rename now
            // a changes the name on SIGUSR2 (below): wait for it to show
            for (int i = 0; i < 300; i++) { struct utsname u; uname(&u); if (!strcmp(u.nodename, "renamed-a")) break; usleep(10000); }
            ok = check_names("a.k (after a renamed)", "renamed-a", "dom-a") && ok;
            _exit(ok ? 0 : 1);
        }
        write(p[1], &k, sizeof k);
        fixture_wait();
        int ok = check_names("a", "ssi-uts-a", "dom-a");
        // Never rename the machine: only if a's namespace is not its parent's (the root's).
        char mine[64], parent[64];
        ns_of(getpid(), mine, sizeof mine);
        ns_of(getppid(), parent, sizeof parent);
        for (int i = 0; i < 300 && !k_checked; i++) usleep(10000);
        if (strcmp(mine, parent) != 0) sethostname("renamed-a", 9);
        else { printf("FAIL: a: in its parent's UTS namespace (%s): not renaming\n", mine); ok = 0; kill(k, SIGKILL); }
        int st;
        waitpid(k, &st, 0);
        ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
        _exit(ok ? 0 : 1);
    }
    pid_t b = fork();
    if (b == 0) {
        unshare(CLONE_NEWUTS);
        sethostname("ssi-uts-b", 9);
        fixture_wait();
        _exit(check_names("b", "ssi-uts-b", NULL) ? 0 : 1);
    }
    pid_t k;
    read(p[0], &k, sizeof k);
    close(p[0]);
    close(p[1]);
    usleep(100000);
    char nr[64], na[64], nk[64], nb[64];
    ns_of(getpid(), nr, sizeof nr);
    ns_of(a, na, sizeof na);
    ns_of(k, nk, sizeof nk);
    ns_of(b, nb, sizeof nb);
    printf("uts: root %s a %s a.k %s b %s\n", nr, na, nk, nb);

    fixture_ready();
    fixture_wait();

    char r2[64], a2[64], k2[64], b2[64];
    ns_of(getpid(), r2, sizeof r2);
    ns_of(a, a2, sizeof a2);
    ns_of(k, k2, sizeof k2);
    ns_of(b, b2, sizeof b2);
    EXPECT(strcmp(a2, k2) == 0, "a (%s) and a.k (%s) are not in one UTS namespace", a2, k2);
    EXPECT(strcmp(a2, r2) != 0 && strcmp(b2, r2) != 0 && strcmp(a2, b2) != 0, "namespaces: root %s a %s b %s (expected three)", r2, a2, b2);
    EXPECT(check_names("root", mine.nodename, mine.domainname), "root's names changed");
    kill(k, SIGUSR1);
    kill(a, SIGUSR1);
    kill(b, SIGUSR1);
    int st;
    waitpid(a, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a or a.k: status %#x", st);
    waitpid(b, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "b: status %#x", st);
    EXPECT(check_names("root", mine.nodename, mine.domainname), "root's hostname changed by a's sethostname");
    return fixture_finish();
}
