// Issue 10: seccomp filters, as sandboxed programs install them (libmagic's `file`, man-db,
// OpenSSH, systemd's SystemCallFilter=, memcached): they were refused at checkpoint.
//   before    a thread started before any filter: it has none
//   main      no_new_privs, then three filters: uname(2) fails with EPERM, then
//             sched_yield(2) with EACCES (filters stack: the newest runs first), then
//             sigaltstack(2) kills the process: ssi injects that call at checkpoint, so
//             the filters must be suspended while it works (PTRACE_O_SUSPEND_SECCOMP)
//   after     a thread started after both: it inherits them
//   child     forked after both: it inherits them
// After restart each checks what its filters do (and that other calls work), and
// /proc/thread-self/status Seccomp and Seccomp_filters.
#include "fixture.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#ifndef AUDIT_ARCH_X86_64
#define AUDIT_ARCH_X86_64 0xc000003e
#endif

// Fails syscall `nr` with `err` (or kills the process if err is 0), allows every other (and kills a foreign architecture's).
static int deny(int nr, int err) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, err ? SECCOMP_RET_ERRNO | err : SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int status_field(const char *name) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
    FILE *f = fopen(path, "r");
    int v = -1;
    size_t n = strlen(name);
    while (f && fgets(line, sizeof line, f)) if (!strncmp(line, name, n) && line[n] == ':') v = atoi(line + n + 1);
    if (f) fclose(f);
    return v;
}

static void check(const char *who, int filtered) {
    struct utsname u;
    errno = 0;
    int r = uname(&u);
    if (filtered) EXPECT(r < 0 && errno == EPERM, "%s: uname gave %d (%s), expected EPERM", who, r, strerror(errno));
    else EXPECT(r == 0, "%s: uname failed (%s) without a filter", who, strerror(errno));
    errno = 0;
    r = sched_yield();
    if (filtered) EXPECT(r < 0 && errno == EACCES, "%s: sched_yield gave %d (%s), expected EACCES", who, r, strerror(errno));
    else EXPECT(r == 0, "%s: sched_yield failed", who);
    EXPECT(getppid() > 0 && syscall(SYS_gettid) > 0, "%s: other calls work", who);
    EXPECT(status_field("Seccomp") == (filtered ? 2 : 0), "%s: Seccomp %d", who, status_field("Seccomp"));
    EXPECT(status_field("Seccomp_filters") == (filtered ? 3 : 0), "%s: Seccomp_filters %d", who, status_field("Seccomp_filters"));
    EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "%s: no_new_privs lost", who);
}

static volatile int done[2];

static void *thread_main(void *arg) {
    int i = (int)(long)arg;
    sigset_t m; sigemptyset(&m); sigaddset(&m, SIGUSR1); pthread_sigmask(SIG_BLOCK, &m, NULL);
    while (!fixture_go) usleep(2000);
    check(i == 0 ? "thread before" : "thread after", i == 1);
    done[i] = 1;
    return NULL;
}

int main(void) {
    fixture_catch_usr1();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { printf("PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno)); return 2; }
    pthread_t before, after;
    pthread_create(&before, NULL, thread_main, (void *)0L);
    if (deny(SYS_uname, EPERM) || deny(SYS_sched_yield, EACCES) || deny(SYS_sigaltstack, 0)) { printf("seccomp: %s\n", strerror(errno)); return 2; }
    pthread_create(&after, NULL, thread_main, (void *)1L);
    pid_t child = fork();
    if (child == 0) {
        while (!fixture_go) pause();
        check("child", 1);
        _exit(fixture_failures ? 1 : 0);
    }
    fixture_ready();
    fixture_wait();
    check("main", 1);
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's checks failed (status 0x%x)", st);
    pthread_join(before, NULL);
    pthread_join(after, NULL);
    return fixture_finish();
}
