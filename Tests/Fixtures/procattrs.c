// Issue 10, "Restored wrong": what a process keeps of itself in the kernel besides its memory
// and files, set by ordinary programs (daemons dropping privileges, `prctl`, `setarch`,
// `capsh`, shells' umask, supervisors) and lost when the restored tasks keep the restorer's.
//   main      comm "pa-main", umask 027, personality ADDR_NO_RANDOMIZE|ADDR_COMPAT_LAYOUT,
//             not dumpable, keep-caps, CAP_NET_RAW dropped from effective and permitted,
//             CAP_SYS_BOOT dropped from the bounding set, CAP_CHOWN inheritable and ambient,
//             securebits NO_SETUID_FIXUP, supplementary groups {4,5,6}, soft RLIMIT_NOFILE
//             200 and RLIMIT_CORE 0, ITIMER_REAL 300 s every 200 s, ITIMER_VIRTUAL 500 s,
//             child subreaper
//   thread    comm "pa-thread", its own umask-free state: CAP_SETUID dropped from its effective
//             set only (capabilities are per thread)
//   child     comm "pa-child", parent-death signal SIGUSR2, real/effective/saved uid
//             1000/1001/0 and gid 2000/2001/0, groups {7}, umask 077, and a thread made
//             after the uid change (which must not come back as root)
//   cont      as in a container: uid 0, a seccomp filter installed without no_new_privs,
//             then CAP_SYS_ADMIN dropped from every set (the restart must install the
//             filter before it narrows the capabilities)
// After restart each task checks its own through the same calls (prctl, capget, getgroups,
// getresuid, getitimer, getrlimit, personality(0xffffffff)).
#include "fixture.h"
#include <grp.h>
#include <stdint.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>

struct caps { uint64_t eff, perm, inh; };

static int capget_self(struct caps *c) {
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d)) return -1;
    c->eff = d[0].effective | ((uint64_t)d[1].effective << 32);
    c->perm = d[0].permitted | ((uint64_t)d[1].permitted << 32);
    c->inh = d[0].inheritable | ((uint64_t)d[1].inheritable << 32);
    return 0;
}

static int capset_self(struct caps c) {
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct d[2] = {
        { (uint32_t)c.eff, (uint32_t)c.perm, (uint32_t)c.inh },
        { (uint32_t)(c.eff >> 32), (uint32_t)(c.perm >> 32), (uint32_t)(c.inh >> 32) },
    };
    return (int)syscall(SYS_capset, &h, d);
}

#define BIT(c) (1ULL << (c))

static const char *comm(char *buf) {
    buf[0] = 0;
    prctl(PR_GET_NAME, buf, 0, 0, 0);
    return buf;
}

static uint64_t main_eff;   // main's effective set as set up, for the thread's check

static pthread_barrier_t ready;

static void *thread_main(void *arg) {
    (void)arg;
    prctl(PR_SET_NAME, "pa-thread", 0, 0, 0);
    struct caps c;
    capget_self(&c);
    c.eff &= ~BIT(CAP_SETUID);
    if (capset_self(c)) printf("thread: capset: %s\n", strerror(errno));
    pthread_barrier_wait(&ready);
    while (!fixture_go) usleep(10000);
    char b[32];
    EXPECT(strcmp(comm(b), "pa-thread") == 0, "thread comm '%s', want pa-thread", b);
    struct caps now;
    EXPECT(capget_self(&now) == 0, "thread capget: %s", strerror(errno));
    EXPECT(now.eff == (main_eff & ~BIT(CAP_SETUID)), "thread effective caps %#llx, want %#llx",
           (unsigned long long)now.eff, (unsigned long long)(main_eff & ~BIT(CAP_SETUID)));
    return NULL;
}

// A thread of the child, made after its uid change: credentials are per thread in the
// kernel, and a restore that set only the main thread's would leave this one root.
static void *child_thread(void *arg) {
    (void)arg;
    while (!fixture_go) usleep(10000);
    uid_t r, e, s;
    syscall(SYS_getresuid, &r, &e, &s);
    EXPECT(r == 1000 && e == 1001 && s == 0, "child thread uids %u/%u/%u, want 1000/1001/0", r, e, s);
    struct caps c;
    capget_self(&c);
    EXPECT(c.eff == 0, "child thread effective caps %#llx, want none", (unsigned long long)c.eff);
    return NULL;
}

static int child_main(void) {
    fixture_catch_usr1();
    prctl(PR_SET_NAME, "pa-child", 0, 0, 0);
    gid_t g = 7;
    if (setgroups(1, &g)) printf("child: setgroups: %s\n", strerror(errno));
    if (setresgid(2000, 2001, 0)) printf("child: setresgid: %s\n", strerror(errno));
    if (setresuid(1000, 1001, 0)) printf("child: setresuid: %s\n", strerror(errno));
    umask(077);
    // After the uid change: changing the effective uid clears the parent-death signal
    // (prctl(2), PR_SET_PDEATHSIG).
    if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0)) printf("child: PR_SET_PDEATHSIG: %s\n", strerror(errno));
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, child_thread, NULL);
    while (!fixture_go) pause();
    pthread_join(t, NULL);
    char b[32];
    EXPECT(strcmp(comm(b), "pa-child") == 0, "child comm '%s', want pa-child", b);
    int sig = -1;
    prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0);
    EXPECT(sig == SIGUSR2, "child parent-death signal %d, want %d", sig, SIGUSR2);
    uid_t r, e, s; gid_t rg, eg, sg;
    getresuid(&r, &e, &s); getresgid(&rg, &eg, &sg);
    EXPECT(r == 1000 && e == 1001 && s == 0, "child uids %u/%u/%u, want 1000/1001/0", r, e, s);
    EXPECT(rg == 2000 && eg == 2001 && sg == 0, "child gids %u/%u/%u, want 2000/2001/0", rg, eg, sg);
    gid_t gs[8]; int n = getgroups(8, gs);
    EXPECT(n == 1 && gs[0] == 7, "child has %d groups (first %u), want {7}", n, n > 0 ? gs[0] : 0);
    mode_t m = umask(0); umask(m);
    EXPECT(m == 077, "child umask %03o, want 077", m);
    return fixture_finish();
}

// Like a process in a container: uid 0, a seccomp filter installed without no_new_privs
// (which needs CAP_SYS_ADMIN), then CAP_SYS_ADMIN dropped everywhere. Its restart must
// install the filter before it narrows the capabilities.
static int container_main(void) {
    fixture_catch_usr1();
    prctl(PR_SET_NAME, "pa-cont", 0, 0, 0);
    struct sock_filter allow[1] = { { BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW } };
    struct sock_fprog prog = { 1, allow };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) printf("container: seccomp: %s\n", strerror(errno));
    struct caps c;
    capget_self(&c);
    c.eff &= ~BIT(CAP_SYS_ADMIN);
    c.perm &= ~BIT(CAP_SYS_ADMIN);
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) || capset_self(c)) printf("container: drop CAP_SYS_ADMIN: %s\n", strerror(errno));
    struct caps set;
    capget_self(&set);
    fflush(stdout);
    while (!fixture_go) pause();
    struct caps now;
    capget_self(&now);
    EXPECT(now.eff == set.eff && now.perm == set.perm, "container caps %#llx/%#llx, want %#llx/%#llx",
           (unsigned long long)now.eff, (unsigned long long)now.perm, (unsigned long long)set.eff, (unsigned long long)set.perm);
    FILE *f = fopen("/proc/self/status", "r");
    char line[256]; int mode = -1;
    while (f && fgets(line, sizeof line, f)) sscanf(line, "Seccomp: %d", &mode);
    if (f) fclose(f);
    EXPECT(mode == 2, "container seccomp mode %d, want 2 (filter)", mode);
    EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0, "container has no_new_privs set");
    return fixture_finish();
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t cont = fork();
    if (cont == 0) return container_main();
    prctl(PR_SET_NAME, "pa-main", 0, 0, 0);
    umask(027);
    int pers = ADDR_NO_RANDOMIZE | ADDR_COMPAT_LAYOUT;
    if (personality(pers) < 0) printf("personality: %s\n", strerror(errno));
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) printf("PR_SET_CHILD_SUBREAPER: %s\n", strerror(errno));
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl); rl.rlim_cur = 200;
    if (setrlimit(RLIMIT_NOFILE, &rl)) printf("setrlimit NOFILE: %s\n", strerror(errno));
    getrlimit(RLIMIT_CORE, &rl); rl.rlim_cur = 0;
    if (setrlimit(RLIMIT_CORE, &rl)) printf("setrlimit CORE: %s\n", strerror(errno));
    struct itimerval real = { .it_interval = { 200, 0 }, .it_value = { 300, 0 } };
    struct itimerval virt = { .it_interval = { 0, 0 }, .it_value = { 500, 0 } };
    if (setitimer(ITIMER_REAL, &real, NULL) || setitimer(ITIMER_VIRTUAL, &virt, NULL)) printf("setitimer: %s\n", strerror(errno));
    signal(SIGALRM, SIG_IGN);

    pid_t child = fork();
    if (child == 0) return child_main();

    gid_t groups[] = { 4, 5, 6 };
    if (setgroups(3, groups)) printf("setgroups: %s\n", strerror(errno));
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) printf("PR_CAPBSET_DROP: %s\n", strerror(errno));
    if (prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0)) printf("PR_SET_SECUREBITS: %s\n", strerror(errno));
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)) printf("PR_SET_KEEPCAPS: %s\n", strerror(errno));
    struct caps c;
    capget_self(&c);
    c.eff &= ~BIT(CAP_NET_RAW);
    c.perm &= ~BIT(CAP_NET_RAW);
    c.inh |= BIT(CAP_CHOWN);
    if (capset_self(c)) printf("capset: %s\n", strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_CHOWN, 0, 0)) printf("PR_CAP_AMBIENT_RAISE: %s\n", strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) printf("PR_SET_DUMPABLE: %s\n", strerror(errno));
    struct caps set;
    capget_self(&set);
    main_eff = set.eff;

    pthread_barrier_init(&ready, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    pthread_barrier_wait(&ready);
    usleep(100000);
    fixture_ready();
    fixture_wait();

    char b[32];
    EXPECT(strcmp(comm(b), "pa-main") == 0, "main comm '%s', want pa-main", b);
    mode_t m = umask(0); umask(m);
    EXPECT(m == 027, "umask %03o, want 027", m);
    int p = personality(0xffffffff);
    EXPECT(p == pers, "personality %#x, want %#x", p, pers);
    EXPECT(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0, "dumpable %d, want 0", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
    EXPECT(prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) == 1, "keep-caps %d, want 1", prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0));
    int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
    // PR_SET_KEEPCAPS is the SECBIT_KEEP_CAPS bit of the same word.
    EXPECT(sb == (SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS), "securebits %#x, want %#x", sb, SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS);
    EXPECT(prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0) == 0, "CAP_SYS_BOOT is in the bounding set again");
    EXPECT(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) == 1, "CAP_SYS_ADMIN left the bounding set");
    EXPECT(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_CHOWN, 0, 0) == 1, "CAP_CHOWN is not ambient");
    struct caps now;
    capget_self(&now);
    EXPECT(now.eff == set.eff && now.perm == set.perm && now.inh == set.inh,
           "caps eff/perm/inh %#llx/%#llx/%#llx, want %#llx/%#llx/%#llx",
           (unsigned long long)now.eff, (unsigned long long)now.perm, (unsigned long long)now.inh,
           (unsigned long long)set.eff, (unsigned long long)set.perm, (unsigned long long)set.inh);
    gid_t gs[8]; int n = getgroups(8, gs);
    EXPECT(n == 3 && gs[0] == 4 && gs[1] == 5 && gs[2] == 6, "%d groups, want {4,5,6}", n);
    getrlimit(RLIMIT_NOFILE, &rl);
    EXPECT(rl.rlim_cur == 200, "RLIMIT_NOFILE soft %llu, want 200", (unsigned long long)rl.rlim_cur);
    getrlimit(RLIMIT_CORE, &rl);
    EXPECT(rl.rlim_cur == 0, "RLIMIT_CORE soft %llu, want 0", (unsigned long long)rl.rlim_cur);
    struct itimerval r2, v2;
    getitimer(ITIMER_REAL, &r2); getitimer(ITIMER_VIRTUAL, &v2);
    EXPECT(r2.it_interval.tv_sec == 200 && r2.it_value.tv_sec > 200 && r2.it_value.tv_sec <= 300,
           "ITIMER_REAL %ld s every %ld s, want 200..300 every 200", (long)r2.it_value.tv_sec, (long)r2.it_interval.tv_sec);
    EXPECT(v2.it_value.tv_sec >= 490 && v2.it_value.tv_sec <= 500, "ITIMER_VIRTUAL %ld s left, want about 500", (long)v2.it_value.tv_sec);
    EXPECT(prctl(PR_GET_CHILD_SUBREAPER, &n, 0, 0, 0) == 0 && n == 1, "not a child subreaper");

    pthread_join(t, NULL);
    kill(child, SIGUSR1);
    int st;
    EXPECT(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status %#x)", st);
    kill(cont, SIGUSR1);
    EXPECT(waitpid(cont, &st, 0) == cont && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the container-like child failed (status %#x)", st);
    return fixture_finish();
}
