// Incremental checkpoints from a kept write tracking (IncrementalBase.swift): the changes a
// program makes between two versions that a page taken from the previous version by
// reference must not miss. Areas: A (MIB MiB, argument 1, default 8), B (1 MiB), each page
// filled from its area, its index and its generation (0: the page must read as zeros), with
// the generations in a table of their own. On SIGUSR1, round n:
//   1  one page of A in a hundred rewritten
//   2  pages 64-127 of A dropped (MADV_DONTNEED: zero again), page 130 rewritten
//   3  B unmapped and mapped again at the same address (MAP_FIXED), with new contents
//   4  C, a new area of 1 MiB, filled; one page of A in a hundred rewritten
//   5  execve(2) of itself: the new image builds A and B again with generation 5
//   6+ one page of A in a hundred rewritten
// then "CHANGED n". On SIGTERM: every page checked against the table, PASS or FAIL.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>

#define PG 4096
static volatile sig_atomic_t done;
static void on_term(int sig) { (void)sig; done = 1; }

struct area { unsigned char *mem; size_t pages; uint32_t *gen; int id; };

static void fill(uint64_t *page, int id, size_t index, uint32_t gen) {
    if (gen == 0) { memset(page, 0, PG); return; }
    uint64_t x = ((uint64_t)id << 56) ^ (index + 1) * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)gen << 40);
    for (size_t k = 0; k < PG / 8; k++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; page[k] = x; }
}

static void make(struct area *a, int id, size_t pages, uint32_t gen, void *at) {
    a->id = id;
    a->pages = pages;
    a->mem = mmap(at, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
    if (!a->gen) a->gen = mmap(NULL, pages * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a->mem == MAP_FAILED || a->gen == MAP_FAILED) { perror("mmap"); exit(1); }
    for (size_t i = 0; i < pages; i++) { a->gen[i] = gen; fill((uint64_t *)(a->mem + i * PG), id, i, gen); }
}

static void rewrite(struct area *a, size_t i) { fill((uint64_t *)(a->mem + i * PG), a->id, i, ++a->gen[i]); }

static void check(struct area *a) {
    uint64_t want[PG / 8];
    for (size_t i = 0; i < a->pages && fixture_failures <= 5; i++) {
        fill(want, a->id, i, a->gen[i]);
        EXPECT(memcmp(want, a->mem + i * PG, PG) == 0, "area %d page %zu does not hold generation %u", a->id, i, a->gen[i]);
    }
}

int main(int argc, char **argv) {
    int execd = argc > 2 && strcmp(argv[2], "exec") == 0;
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 8;
    struct area a = {0}, b = {0}, c = {0};
    make(&a, 1, mib << 8, execd ? 5 : 1, NULL);
    make(&b, 2, 256, execd ? 5 : 1, NULL);
    signal(SIGTERM, on_term);
    int round = execd ? 5 : 0;
    if (execd) {
        // SIGUSR1's handler and the output are set up again in the new image.
        fixture_catch_usr1();
        printf("CHANGED 5\n");
        fflush(stdout);
    } else {
        fixture_ready();
    }
    while (!done) {
        while (!fixture_go && !done) pause();
        if (done) break;
        fixture_go = 0;
        round++;
        if (round == 2) {
            if (madvise(a.mem + 64 * PG, 64 * PG, MADV_DONTNEED) != 0) { perror("madvise"); return 1; }
            for (size_t i = 64; i < 128; i++) a.gen[i] = 0;
            rewrite(&a, 130);
        } else if (round == 3) {
            void *at = b.mem;
            if (munmap(b.mem, b.pages * PG) != 0) { perror("munmap"); return 1; }
            make(&b, 2, 256, 7, at);
        } else if (round == 4) {
            make(&c, 3, 256, 9, NULL);
        } else if (round == 5) {
            char *args[] = { argv[0], argv[1] ? argv[1] : "8", "exec", NULL };
            execv(argv[0], args);
            perror("execv");
            return 1;
        }
        if (round != 2 && round != 3) for (size_t i = (size_t)round % 100; i < a.pages; i += 100) rewrite(&a, i);
        printf("CHANGED %d\n", round);
        fflush(stdout);
    }
    check(&a);
    check(&b);
    if (c.mem) check(&c);
    return fixture_finish();
}
