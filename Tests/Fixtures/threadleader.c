// Issue 10, "Refused, though the state is ordinary": a process whose main thread has exited
// while its other threads run (pthread_exit in main: the leader is a zombie, the process is
// not) was refused as "has exited".
//   main      sets things up, starts 3 threads, prints READY (from a thread, once main is
//             gone), and calls pthread_exit
//   counter   two threads counting under a mutex, sleeping 1 ms per step
//   waiter    blocked in pthread_cond_wait, woken after restart
//   the last  thread waits for SIGUSR1 (SIGUSR1 is blocked in the others, so the process-
//             directed signal goes to it) and checks
// After restart: /proc/self/stat of the leader (tid = pid) says Z while the process lives,
// /proc/self/status Threads: 4 (the zombie leader counts), getpid() the same, the counters go
// on, the waiter wakes on the condition, every thread's tid is as before; the program ends
// with exit(0) from a thread and its exit status is 0.
#include "fixture.h"
#include <pthread.h>
#include <sys/syscall.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile long counts[2];
static volatile int woken, go_waiter, stop;
static pid_t tids[4], pid;
static volatile int started;

static void *counter(void *arg) {
    int i = (int)(long)arg;
    tids[i] = syscall(SYS_gettid);
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    while (!stop) { pthread_mutex_lock(&mu); counts[i]++; pthread_mutex_unlock(&mu); usleep(1000); }
    return NULL;
}

static void *waiter(void *arg) {
    (void)arg;
    tids[2] = syscall(SYS_gettid);
    pthread_mutex_lock(&mu);
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
    while (!go_waiter) pthread_cond_wait(&cv, &mu);
    woken = 1;
    pthread_mutex_unlock(&mu);
    return NULL;
}

static char leader_state(void) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    char *r = fgets(buf, sizeof buf, f);
    fclose(f);
    char *p = r ? strrchr(buf, ')') : NULL;
    return p ? p[2] : '?';
}

static int threads_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f)) if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}

static void *checker(void *arg) {
    (void)arg;
    tids[3] = syscall(SYS_gettid);
    sigset_t u;
    sigemptyset(&u);
    sigaddset(&u, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &u, NULL);
    while (started < 3 || leader_state() != 'Z') usleep(1000);
    pid_t before[4];
    memcpy(before, tids, sizeof before);
    int nthreads = threads_count();
    printf("leader %d is %c, %d threads\n", pid, leader_state(), nthreads);
    fixture_ready();
    fixture_wait();

    EXPECT(getpid() == pid, "getpid %d, was %d", getpid(), pid);
    EXPECT(leader_state() == 'Z', "the leader's state is %c, expected Z (exited, the process alive)", leader_state());
    EXPECT(threads_count() == nthreads, "Threads: %d, were %d", threads_count(), nthreads);
    EXPECT(syscall(SYS_gettid) == before[3], "this thread's tid changed");
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d", before[i]);
        EXPECT(access(path, F_OK) == 0, "thread %d (tid %d) is gone", i, before[i]);
    }
    long c0 = counts[0], c1 = counts[1];
    usleep(100000);
    EXPECT(counts[0] > c0 && counts[1] > c1, "counters stopped (%ld %ld)", counts[0] - c0, counts[1] - c1);
    pthread_mutex_lock(&mu);
    go_waiter = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 200 && !woken; i++) usleep(10000);
    EXPECT(woken, "the waiter did not wake on its condition variable");
    stop = 1;
    exit(fixture_finish());
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid = getpid();
    fixture_catch_usr1();
    sigset_t u;
    sigemptyset(&u);
    sigaddset(&u, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &u, NULL);                       // inherited: only the checker unblocks it
    pthread_t t;
    pthread_create(&t, NULL, counter, (void *)0L);
    pthread_create(&t, NULL, counter, (void *)1L);
    pthread_create(&t, NULL, waiter, NULL);
    pthread_create(&t, NULL, checker, NULL);
    pthread_exit(NULL);
}
