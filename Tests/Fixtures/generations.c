// Incremental versions' witness (issue 16): MIB MiB (argument, default 16) of pages, each
// filled from its index and its generation, and a table kept in another mapping that says
// each page's generation. On SIGUSR1: one page in a hundred is rewritten with the next
// generation, then "CHANGED <n>". On SIGTERM: every page is checked against the table,
// "PASS" or "FAIL ..." and exit. Any version restored must hold pages and table that agree.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>

#define PG 4096
static volatile sig_atomic_t done;
static void on_term(int sig) { (void)sig; done = 1; }

static void fill(uint64_t *page, size_t index, uint32_t gen) {
    uint64_t x = (index + 1) * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)gen << 40);
    for (size_t k = 0; k < PG / 8; k++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; page[k] = x; }
}

int main(int argc, char **argv) {
    size_t pages = (argc > 1 ? strtoul(argv[1], NULL, 10) : 16) << 8;
    unsigned char *mem = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *gen = mmap(NULL, pages * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || gen == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < pages; i++) { gen[i] = 1; fill((uint64_t *)(mem + i * PG), i, 1); }
    signal(SIGTERM, on_term);
    fixture_ready();
    int round = 0;
    while (!done) {
        while (!fixture_go && !done) pause();
        if (done) break;
        fixture_go = 0;
        round++;
        for (size_t i = (size_t)round % 100; i < pages; i += 100) fill((uint64_t *)(mem + i * PG), i, ++gen[i]);
        printf("CHANGED %d\n", round);
        fflush(stdout);
    }
    uint64_t want[PG / 8];
    for (size_t i = 0; i < pages; i++) {
        fill(want, i, gen[i]);
        EXPECT(memcmp(want, mem + i * PG, PG) == 0, "page %zu does not hold generation %u", i, gen[i]);
        if (fixture_failures > 5) break;
    }
    return fixture_finish();
}
