// DirtyTracker's witness: 64 pages written once, then, on each SIGUSR1, the pages named by
// the round (round 1: pages 3, 10 and 11; round 2: page 63), then "DONE <round>". The test
// tracks the area from outside and checks that a scan reports exactly those pages. The
// program checks its own bytes at the end (SIGTERM) and prints PASS or FAIL.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>

static volatile sig_atomic_t done;
static void on_term(int sig) { (void)sig; done = 1; }

int main(void) {
    unsigned char *p = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    for (int i = 0; i < 64; i++) memset(p + i * 4096, i, 4096);
    signal(SIGTERM, on_term);
    printf("AREA %p\n", (void *)p);
    fixture_ready();
    int round = 0;
    while (!done) {
        while (!fixture_go && !done) pause();
        if (done) break;
        fixture_go = 0;
        round++;
        if (round == 1) { p[3 * 4096] = 0xa3; p[10 * 4096 + 7] = 0xaa; p[11 * 4096 + 4095] = 0xab; }
        if (round == 2) p[63 * 4096 + 100] = 0xbf;
        printf("DONE %d\n", round);
        fflush(stdout);
    }
    (void)fixture_wait;
    EXPECT(p[3 * 4096] == 0xa3 && p[10 * 4096 + 7] == 0xaa && p[11 * 4096 + 4095] == 0xab, "round 1 writes lost");
    EXPECT(round < 2 || p[63 * 4096 + 100] == 0xbf, "round 2 write lost");
    EXPECT(p[5 * 4096] == 5 && p[62 * 4096] == 62, "untouched pages changed");
    return fixture_finish();
}
