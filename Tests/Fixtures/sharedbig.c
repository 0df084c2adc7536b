// Issue 10, "Restored wrong", memory: a large MAP_SHARED anonymous area shared by a parent and
// its child comes back zeroed. The parent maps 256 MiB MAP_SHARED|MAP_ANONYMOUS, writes a
// pattern in every page of the first 192 MiB (the last 64 MiB never touched: they must stay
// zero and need not be saved), forks a child, and the child writes its own pattern in a
// second region; a second, small (64 KiB) shared area is made after the fork by the child
// alone (not shared with the parent). The parent never reads the child's half before the
// checkpoint (those pages are mapped in the child's page tables only), and drops its page
// table entries of the first 16 MiB with MADV_DONTNEED (the content stays in the shared
// object, mapped by nobody). Argument: another size in MiB (1024 for 1 GiB). After restart: both see every page's pattern (parent's
// and child's), the untouched tail is zero, and the area is still shared: the child writes,
// the parent sees it, and the other way round.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

static unsigned long SIZE = 256UL << 20, TOUCHED = 192UL << 20;   // argv[1]: another size in MiB
#define PAGE 4096UL

static uint64_t pat(uint64_t page, uint64_t who) { return (page * 0x9E3779B97F4A7C15ULL) ^ who; }

// Counts pages of [from, to) whose first and last words do not hold pat(page, who).
static long bad_pages(volatile uint64_t *m, uint64_t from, uint64_t to, uint64_t who) {
    long bad = 0;
    for (uint64_t p = from; p < to; p++) {
        volatile uint64_t *w = m + p * (PAGE / 8);
        if (w[0] != pat(p, who) || w[PAGE / 8 - 1] != ~pat(p, who)) bad++;
    }
    return bad;
}

static void write_pages(volatile uint64_t *m, uint64_t from, uint64_t to, uint64_t who) {
    for (uint64_t p = from; p < to; p++) { m[p * (PAGE / 8)] = pat(p, who); m[p * (PAGE / 8) + PAGE / 8 - 1] = ~pat(p, who); }
}

static long zero_pages(volatile uint64_t *m, uint64_t from, uint64_t to) {
    long nz = 0;
    for (uint64_t p = from; p < to; p++) { volatile uint64_t *w = m + p * (PAGE / 8); if (w[0] || w[1] || w[PAGE / 8 - 1]) nz++; }
    return nz;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) { SIZE = strtoul(argv[1], NULL, 0) << 20; TOUCHED = SIZE / 4 * 3; }
    volatile uint64_t *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    volatile int *flag = (volatile int *)(m + (TOUCHED - PAGE) / 8 + 8);   // a word in the parent's last touched page
    uint64_t half = TOUCHED / PAGE / 2, top = TOUCHED / PAGE;
    write_pages(m, 0, half, 1);                                   // the parent's half
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        write_pages(m, half, top, 2);                             // the child's half
        volatile char *own = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        memset((char *)own, 'c', 65536);
        __atomic_store_n(flag, 1, __ATOMIC_SEQ_CST);
        fixture_wait();
        long b1 = bad_pages(m, 0, half, 1), b2 = bad_pages(m, half, top - 1, 2);
        long nz = zero_pages(m, top, SIZE / PAGE);
        int ownok = 1;
        for (int i = 0; i < 65536; i++) if (own[i] != 'c') { ownok = 0; break; }
        int ok = b1 == 0 && b2 == 0 && nz == 0 && ownok;
        printf("child: %ld bad parent pages, %ld bad child pages, %ld non-zero untouched pages, own area %s: %s\n", b1, b2, nz, ownok ? "ok" : "BAD", ok ? "OK" : "FAIL");
        // Sharing: the parent writes 2, we answer 3.
        for (int i = 0; i < 500 && __atomic_load_n(flag, __ATOMIC_SEQ_CST) != 2; i++) usleep(10000);
        int saw = __atomic_load_n(flag, __ATOMIC_SEQ_CST) == 2;
        if (!saw) printf("FAIL: child: the parent's write to the shared area never showed\n");
        __atomic_store_n(flag, 3, __ATOMIC_SEQ_CST);
        _exit(ok && saw ? 0 : 1);
    }
    while (__atomic_load_n(flag, __ATOMIC_SEQ_CST) != 1) usleep(1000);
    write_pages(m, top - 1, top, 1);                              // restore the flag page's pattern...
    __atomic_store_n(flag, 1, __ATOMIC_SEQ_CST);                  // ...but for the flag word
    // The parent does not read the child's half before the checkpoint: those pages are in the
    // child's page tables only (fork copies no page table entries of a shared mapping).
    // The first 16 MiB: written by the parent, then MADV_DONTNEED, which for a shared mapping
    // only drops the page table entries: the content stays in the shared memory object and
    // is in nobody's page tables at checkpoint time.
    madvise((void *)m, 16UL << 20, MADV_DONTNEED);

    fixture_ready();
    fixture_wait();

    long b1 = bad_pages(m, 0, half, 1), b2 = bad_pages(m, half, top - 1, 2);
    EXPECT(b1 == 0, "parent: %ld of %lu of its own pages lost (zeroed?)", b1, (unsigned long)half);
    EXPECT(b2 == 0, "parent: %ld of %lu of the child's pages lost", b2, (unsigned long)(top - 1 - half));
    EXPECT(zero_pages(m, top, SIZE / PAGE) == 0, "parent: untouched tail not zero");
    kill(child, SIGUSR1);
    __atomic_store_n(flag, 2, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 500 && __atomic_load_n(flag, __ATOMIC_SEQ_CST) != 3; i++) usleep(10000);
    EXPECT(__atomic_load_n(flag, __ATOMIC_SEQ_CST) == 3, "parent: the child's write to the shared area never showed (not shared any more)");
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    return fixture_finish();
}
