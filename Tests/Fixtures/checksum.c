// Deterministic multi-threaded work: 4 threads each hash their own long sequence, with a
// short sleep now and then; main prints the combined checksum. A run checkpointed, killed
// and restarted midway must print the same checksum as an uninterrupted run.
#define _GNU_SOURCE
#include "fixture.h"
#include <pthread.h>
#include <stdint.h>
#include <time.h>

static uint64_t results[4];

static void *work(void *a) {
    int i = (int)(long)a;
    uint64_t h = 0x9e3779b97f4a7c15ULL * (i + 1);
    for (int round = 0; round < 120; round++) {
        for (int k = 0; k < 2000000; k++) { h ^= h << 13; h ^= h >> 7; h ^= h << 17; h += k; }
        struct timespec t = { 0, 10 * 1000 * 1000 };
        nanosleep(&t, NULL);
    }
    results[i] = h;
    return NULL;
}

int main(void) {
    pthread_t t[4];
    printf("READY %d\n", getpid());
    fflush(stdout);
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("SUM %016llx\n", (unsigned long long)(results[0] ^ (results[1] * 3) ^ (results[2] * 5) ^ (results[3] * 7)));
    return 0;
}
