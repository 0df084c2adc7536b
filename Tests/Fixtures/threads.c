// Threads: five threads with names, thread-local values and per-thread signal masks; one
// blocked on a mutex held by main, one waiting on a condition variable, one in nanosleep,
// two counting under a lock. After restart (SIGUSR1, which only main accepts), each thread
// checks its own state, main releases them, and the shared count is checked.
#define _GNU_SOURCE
#include "fixture.h"
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER, lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile int released, stop_counting;
static long counter, per_thread[2];
static __thread long tls_value;
static pid_t tids[5];
static int thread_failures;

static void check_self(int i) {
    char name[16], want[16];
    pthread_getname_np(pthread_self(), name, sizeof name);
    snprintf(want, sizeof want, "worker-%d", i);
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    int ok = tls_value == 1000 + i && syscall(SYS_gettid) == tids[i] && strcmp(name, want) == 0 &&
             sigismember(&m, SIGUSR1) && (sigismember(&m, SIGUSR2) == (i % 2));
    if (!ok) {
        __sync_fetch_and_add(&thread_failures, 1);
        printf("FAIL: thread %d: tls %ld tid %ld/%d name %s\n", i, tls_value, (long)syscall(SYS_gettid), tids[i], name);
    }
}

static void setup(int i) {
    tls_value = 1000 + i;
    tids[i] = syscall(SYS_gettid);
    char n[16];
    snprintf(n, sizeof n, "worker-%d", i);
    pthread_setname_np(pthread_self(), n);
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    if (i % 2) sigaddset(&m, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
}

static void *on_mutex(void *a) { setup(0); pthread_mutex_lock(&held); check_self(0); pthread_mutex_unlock(&held); return a; }
static void *on_cond(void *a) {
    setup(1);
    pthread_mutex_lock(&lock);
    while (!released) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    check_self(1);
    return a;
}
static void *sleeping(void *a) {
    setup(2);
    while (!released) { struct timespec t = { 0, 50 * 1000 * 1000 }; nanosleep(&t, NULL); }
    check_self(2);
    return a;
}
static void *counting(void *a) {
    int i = (int)(long)a;
    setup(i);
    while (!stop_counting) {
        pthread_mutex_lock(&lock);
        counter++;
        per_thread[i - 3]++;
        pthread_mutex_unlock(&lock);
    }
    check_self(i);
    return a;
}

int main(void) {
    pthread_t t[5];
    pthread_mutex_lock(&held);
    pthread_create(&t[0], NULL, on_mutex, NULL);
    pthread_create(&t[1], NULL, on_cond, NULL);
    pthread_create(&t[2], NULL, sleeping, NULL);
    pthread_create(&t[3], NULL, counting, (void *)3L);
    pthread_create(&t[4], NULL, counting, (void *)4L);
    usleep(200000);
    fixture_ready();
    fixture_wait();
    pthread_mutex_lock(&lock);
    released = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&held);
    usleep(100000);
    stop_counting = 1;
    for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
    EXPECT(thread_failures == 0, "%d threads failed their checks", thread_failures);
    EXPECT(counter == per_thread[0] + per_thread[1] && counter > 0, "counter %ld != %ld + %ld", counter, per_thread[0], per_thread[1]);
    return fixture_finish();
}
