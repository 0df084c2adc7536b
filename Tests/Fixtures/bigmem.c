// Benchmark and test load: N MiB of anonymous memory filled with pseudo-random bytes.
// Prints "READY <pid> <checksum>", then on each SIGUSR1 recomputes and prints
// "SUM <checksum>", so a restarted copy can be checked against the original.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>

static uint64_t sum(const uint64_t *p, size_t n) {
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    size_t n = mib << 17;                                       // 64-bit words
    uint64_t *p = mmap(NULL, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    fixture_catch_usr1();
    printf("READY %d %016llx\n", getpid(), (unsigned long long)sum(p, n));
    fflush(stdout);
    for (;;) {
        while (!fixture_go) pause();
        fixture_go = 0;
        printf("SUM %016llx\n", (unsigned long long)sum(p, n));
        fflush(stdout);
    }
}
