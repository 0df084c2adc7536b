// no_new_privs is per thread (prctl(2)): a worker w1 sets it itself (as a thread that then
// installs its own seccomp filter); with "main", the main thread sets it after worker w2
// exists. It was saved per process and given to every thread (found by the fourth probing
// round, December 2026): w1 lost it, or w2 gained it. After restart each thread reads its own.
#include "fixture.h"
#include <pthread.h>
#include <sys/prctl.h>
static volatile int w1set, g1 = -1, g2 = -1, go;
static void *w1(void *x) { (void)x; prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); w1set = 1; while (!go) usleep(10000); g1 = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); return NULL; }
static void *w2(void *x) { (void)x; while (!go) usleep(10000); g2 = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); return NULL; }
int main(int argc, char **argv) {
    pthread_t a, b;
    pthread_create(&a, NULL, w1, NULL);
    pthread_create(&b, NULL, w2, NULL);
    while (!w1set) usleep(1000);
    int mainset = argc > 1 && !strcmp(argv[1], "main");
    if (mainset) prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    fixture_ready();
    fixture_wait();
    go = 1; pthread_join(a, NULL); pthread_join(b, NULL);
    EXPECT(g1 == 1, "w1 (set it itself): no_new_privs %d", g1);
    EXPECT(g2 == 0, "w2 (never set): no_new_privs %d", g2);
    EXPECT(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == mainset, "main: no_new_privs %d want %d", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), mainset);
    return fixture_finish();
}
