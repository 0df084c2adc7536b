// Benchmark load: `benchtree NPROC NTHREADS MIB`: a root with NPROC-1 children, every
// process with NTHREADS threads; the root fills MIB MiB before forking, so that the children
// share it copy-on-write. Prints READY once everything exists, then sleeps.
#define _GNU_SOURCE
#include "fixture.h"
#include <pthread.h>
#include <sys/mman.h>

static void *sleeper(void *a) { for (;;) pause(); return a; }

static void spawn_threads(int n) {
    for (int i = 1; i < n; i++) { pthread_t t; pthread_create(&t, NULL, sleeper, NULL); }
}

int main(int argc, char **argv) {
    int nproc = argc > 1 ? atoi(argv[1]) : 20, nthreads = argc > 2 ? atoi(argv[2]) : 1;
    size_t mib = argc > 3 ? strtoul(argv[3], NULL, 10) : 1;
    unsigned char *p = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < mib << 20; i++) p[i] = (unsigned char)(i * 131);
    for (int i = 1; i < nproc; i++) {
        if (fork() == 0) { spawn_threads(nthreads); for (;;) pause(); }
    }
    spawn_threads(nthreads);
    usleep(300000);
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (;;) pause();
}
