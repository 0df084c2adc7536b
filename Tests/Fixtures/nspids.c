// Issue 17: a cluster application's identity across checkpoint and restart (on another
// node). Started by `ssi run --node N`, it runs in a PID namespace of its own as process 2
// (ssi-init is 1). It records, before the checkpoint, for itself, one thread and one child:
// getpid(), getppid(), gettid(); it fills 8 MiB with a pattern. On SIGUSR1 (forwarded by
// ssi-init after the restart) each checks its ids are unchanged, /proc/self names itself
// (the restored mount namespace's /proc is its PID namespace's), the memory is intact, and
// prints PASS or FAIL; the exit status is 0 only if everything held.
#include "fixture.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static pid_t my_pid, my_ppid, my_tid, thread_tid, thread_pid;
static volatile int thread_ok = -1;
static unsigned char *mem;
static const size_t mem_size = 8 << 20;

static int proc_self_ok(void) {
    char buf[32] = {0};
    ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
    return n > 0 && atoi(buf) == getpid();
}

static void *thread_main(void *arg) {
    (void)arg;
    thread_tid = (pid_t)syscall(SYS_gettid);
    thread_pid = getpid();
    while (!fixture_go) usleep(10000);
    thread_ok = (pid_t)syscall(SYS_gettid) == thread_tid && getpid() == thread_pid;
    return NULL;
}

static int child_main(void) {
    pid_t pid = getpid(), ppid = getppid();
    fixture_catch_usr1();
    printf("child pid %d ppid %d\n", pid, ppid);
    fflush(stdout);
    fixture_wait();
    EXPECT(getpid() == pid && getppid() == ppid, "child ids changed: pid %d->%d ppid %d->%d", pid, getpid(), ppid, getppid());
    EXPECT(proc_self_ok(), "child: /proc/self does not name pid %d", getpid());
    if (!fixture_failures) printf("PASS child pid %d ppid %d\n", getpid(), getppid());
    fflush(stdout);
    return fixture_failures ? 1 : 0;
}

int main(void) {
    my_pid = getpid();
    my_ppid = getppid();
    my_tid = (pid_t)syscall(SYS_gettid);
    mem = malloc(mem_size);
    for (size_t i = 0; i < mem_size; i++) mem[i] = (unsigned char)(i * 7 + 3);
    fixture_catch_usr1();
    pid_t child = fork();
    if (child == 0) return child_main();
    pthread_t th;
    pthread_create(&th, NULL, thread_main, NULL);
    while (thread_tid == 0) usleep(1000);
    printf("main pid %d ppid %d tid %d thread %d child %d\n", my_pid, my_ppid, my_tid, thread_tid, child);
    fixture_ready();
    fixture_wait();
    pthread_join(th, NULL);
    EXPECT(getpid() == my_pid && getppid() == my_ppid && (pid_t)syscall(SYS_gettid) == my_tid,
           "main ids changed: pid %d->%d ppid %d->%d", my_pid, getpid(), my_ppid, getppid());
    EXPECT(thread_ok == 1, "thread %d: gettid()/getpid() changed", thread_tid);
    EXPECT(proc_self_ok(), "main: /proc/self does not name pid %d", getpid());
    size_t bad = 0;
    for (size_t i = 0; i < mem_size; i++) bad += mem[i] != (unsigned char)(i * 7 + 3);
    EXPECT(bad == 0, "%zu bytes of memory changed", bad);
    kill(child, SIGUSR1);
    int st = 0;
    EXPECT(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d did not pass (status %d)", child, st);
    if (!fixture_failures) printf("main pid %d ppid %d tid %d thread %d child %d unchanged\n", my_pid, my_ppid, my_tid, thread_tid, child);
    return fixture_finish();
}
