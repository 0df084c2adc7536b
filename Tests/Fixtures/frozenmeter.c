// Measures, from inside, how long the process was stopped: a busy loop on
// clock_gettime(CLOCK_MONOTONIC) keeps the longest gap between two readings in a shared
// stats page (a MAP_SHARED file that the benchmark reads and resets), so the figure is the
// one the application itself saw, whatever the checkpointer's own timer says.
//
//   frozenmeter MIB STATSFILE [PAGES_PER_MS [SLEEP_US]]
//
// With SLEEP_US the loop sleeps that long (usleep(3): a relative nanosleep with no buffer
// for the time left, the common case that a checkpoint must measure) between readings, and
// a gap is what exceeds the sleep; without it the loop spins.
// MIB MiB of anonymous memory hold pseudo-random pages that check themselves: page i holds
// (i, gen) and then bytes generated from (i, gen), and a separate generation table holds
// gen again, so a page restored torn, from another page, or older than the table (a write
// that pre-copy missed) is detected. PAGES_PER_MS pages are rewritten (gen + 1) per
// millisecond while it runs, so that a pre-copy checkpoint has dirty pages to chase.
// Prints "READY <pid>". SIGUSR2: checks every page, prints "CHECK PASS" or "CHECK FAIL ..."
// and goes on. SIGUSR1: checks, prints PASS or FAIL, exits (the tests' convention).
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

struct stats {
    volatile uint64_t max_gap_ns;   // reset to 0 by the reader
    volatile uint64_t loops;
    volatile uint64_t rewrites;
    volatile uint64_t checks;
    // The last 128 gaps of 5 ms or more: where each ended (CLOCK_MONOTONIC ns) and how long
    // it was, so that a long one can be matched with the phases of the move that caused it.
    volatile uint64_t long_gaps;
    struct { volatile uint64_t end_ns, gap_ns; } ring[128];
};

static volatile sig_atomic_t check_requested;
static void on_usr2(int sig) { (void)sig; check_requested = 1; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fill_page(uint64_t *p, uint64_t index, uint64_t gen) {
    uint64_t x = (index + 1) * 0x9e3779b97f4a7c15ull ^ (gen + 1) * 0xbf58476d1ce4e5b9ull;
    p[0] = index;
    p[1] = gen;
    for (int k = 2; k < 512; k++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[k] = x; }
}

// Number of pages that do not match their generation: each is named (the first few).
static size_t check_pages(uint64_t *mem, const uint64_t *gens, size_t npages) {
    uint64_t want[512];
    size_t bad = 0;
    for (size_t i = 0; i < npages; i++) {
        uint64_t *p = mem + i * 512;
        fill_page(want, i, gens[i]);
        if (memcmp(p, want, sizeof(want)) != 0) {
            if (bad++ < 5) printf("FAIL: page %zu: holds index %llu gen %llu, the table says gen %llu\n", i,
                                  (unsigned long long)p[0], (unsigned long long)p[1], (unsigned long long)gens[i]);
        }
    }
    fflush(stdout);
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: frozenmeter MIB STATSFILE [PAGES_PER_MS [SLEEP_US]]\n"); return 2; }
    size_t npages = strtoull(argv[1], NULL, 10) << 8;
    uint64_t per_ms = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    uint64_t sleep_us = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    int fd = open(argv[2], O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) { perror(argv[2]); return 2; }
    struct stats *st = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    uint64_t *mem = npages ? mmap(NULL, npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : NULL;
    uint64_t *gens = calloc(npages + 1, sizeof(uint64_t));
    if (st == MAP_FAILED || mem == MAP_FAILED || !gens) { perror("mmap"); return 2; }
    for (size_t i = 0; i < npages; i++) fill_page(mem + i * 512, i, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    fixture_ready();
    (void)fixture_wait;   // fixture.h's, unused here: the loop never blocks

    uint64_t last = now_ns(), next_page = 0, lcg = 12345, last_ms = last / 1000000;
    st->max_gap_ns = 0;
    for (;;) {
        if (sleep_us) usleep(sleep_us);
        uint64_t t = now_ns();
        uint64_t gap = t - last > sleep_us * 1000 ? t - last - sleep_us * 1000 : 0;
        if (gap > st->max_gap_ns) st->max_gap_ns = gap;
        if (gap >= 5000000) {
            uint64_t k = st->long_gaps % 128;
            st->ring[k].end_ns = t;
            st->ring[k].gap_ns = gap;
            st->long_gaps++;
        }
        st->loops++;
        if (per_ms && npages && t / 1000000 != last_ms) {
            last_ms = t / 1000000;
            // Pages spread over the whole area (an LCG), so dirty pages are scattered.
            for (uint64_t k = 0; k < per_ms; k++) {
                lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
                next_page = (lcg >> 33) % npages;
                gens[next_page]++;
                fill_page(mem + next_page * 512, next_page, gens[next_page]);
                st->rewrites++;
            }
        }
        // One reading per turn, and the next gap runs from it: a second reading here would
        // open a window (from t to it) in which a stop is never seen, and a checkpoint that
        // happened to fall in the page rewriting above went unmeasured.
        last = t;
        if (check_requested || fixture_go) {
            size_t bad = check_pages(mem, gens, npages);
            st->checks++;
            if (fixture_go) {
                fixture_failures += bad != 0;
                return fixture_finish();
            }
            printf(bad ? "CHECK FAIL %zu pages\n" : "CHECK PASS\n", bad);
            fflush(stdout);
            check_requested = 0;
            last = now_ns();   // the check itself is not a stop
        }
    }
}
