// Memory that a process changes in the very first moments after a migration, while the
// target may still be copying its pages in (LazyMemory.swift, the pages of a migrated
// process are filled after it runs again). Right after the stop (a gap of more than 50 ms
// in its own CLOCK_MONOTONIC loop, or its network namespace changed), or at SIGUSR1 if it
// never saw one, it:
//   - forks a child that checks every page of A and B (what the child gets of pages not
//     yet copied in the parent),
//   - moves B elsewhere with mremap (MREMAP_MAYMOVE|MREMAP_FIXED),
//   - throws C away with madvise(MADV_DONTNEED) (must read zeros, not the old bytes),
//   - unmaps D and maps fresh anonymous memory at the same place (zeros),
//   - splits E with mprotect (a page read-only every 1 MiB) and unmaps a page next to
//     each (the kernel copies into one area at a time: a copy across the new boundary
//     once dropped the rest of E's run, read as zeros),
//   - marks W MADV_WIPEONFORK before that fork (the child must read zeros there, not
//     the parent's bytes still being copied in),
// then checks A, B where it went, C, D, E and W, and waits for SIGUSR1 to print PASS or FAIL.
// E and W are mapped first (the highest addresses: filled after A, lowest first).
//
//   lazyfill [MIB [lazy]]   A is MIB MiB (default 128); B, C and D 16 MiB each. With
//                           "lazy": FAIL unless it acted right after a stop while A was
//                           still being filled ("um", userfaultfd missing mode, in A's
//                           VmFlags in /proc/self/smaps): the case it is there to reach.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#define SMALL (16ul << 20)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fill(uint64_t *p, size_t bytes, uint64_t seed) {
    for (size_t i = 0; i < bytes / 8; i++) p[i] = (i * 0x9e3779b97f4a7c15ull) ^ seed;
}

// Index of the first word that is wrong, or -1.
static long check(const uint64_t *p, size_t bytes, uint64_t seed) {
    for (size_t i = 0; i < bytes / 8; i++) if (p[i] != ((i * 0x9e3779b97f4a7c15ull) ^ seed)) return (long)i;
    return -1;
}

static long nonzero(const uint64_t *p, size_t bytes) {
    for (size_t i = 0; i < bytes / 8; i++) if (p[i]) return (long)i;
    return -1;
}

// Whether the VMA holding addr is registered with a userfaultfd in missing mode (A may be
// merged with the areas mapped next to it into one VMA).
static int registered(void *addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, um = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strncmp(line, "VmFlags", 7) != 0) { in = start <= (unsigned long)addr && (unsigned long)addr < end; continue; }
        if (in && strncmp(line, "VmFlags:", 8) == 0) { um = strstr(line, " um") != NULL; break; }
    }
    if (f) fclose(f);
    return um;
}

static void *anon(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    return p;
}

int main(int argc, char **argv) {
    size_t big = (argc > 1 ? strtoull(argv[1], NULL, 10) : 128) << 20;
    int expect_lazy = argc > 2 && strcmp(argv[2], "lazy") == 0;
    uint64_t *w = anon(SMALL), *e = anon(SMALL);
    uint64_t *a = anon(big), *b = anon(SMALL), *c = anon(SMALL), *d = anon(SMALL);
    // Where B goes: a range reserved now, so that the move needs no free space later.
    void *bdest = mmap(NULL, SMALL, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bdest == MAP_FAILED) { perror("mmap"); return 2; }
    fill(a, big, 1); fill(b, SMALL, 2); fill(c, SMALL, 3); fill(d, SMALL, 4); fill(e, SMALL, 6); fill(w, SMALL, 7);
    fixture_ready();

    // A stop is a gap of more than 50 ms in this loop, or, for a migration quicker than
    // that, a network namespace that is not the one it started in (each node's in the local
    // cluster, or the application's own, made again on the target).
    char ns0[128] = {0}, ns[128];
    ssize_t n0 = readlink("/proc/self/ns/net", ns0, sizeof ns0 - 1);
    uint64_t last = now_ns(), gap = 0;
    int stopped = 0;
    for (unsigned k = 0; !fixture_go; k++) {
        uint64_t t = now_ns();
        if (t - last > gap) gap = t - last;
        if (t - last > 50000000ull) { stopped = 1; break; }
        last = t;
        if ((k & 63) == 0 && n0 > 0) {
            ssize_t n = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
            if (n > 0 && (n != n0 || memcmp(ns, ns0, (size_t)n) != 0)) { stopped = 1; break; }
        }
    }
    int filling = registered(a);
    printf("acting %s (longest gap %.1f ms), A %s\n", stopped ? "right after a stop" : "at SIGUSR1", gap / 1e6,
           filling ? "still being filled" : "filled already");
    fflush(stdout);
    if (expect_lazy) EXPECT(stopped && filling, "did not act while A was being filled after a stop: the case is not reached");

    // E: a read-only page every MiB (its area split in three around each), and the page
    // after each unmapped.
    const size_t page = 4096, step = 1 << 20;
    int split = 1;
    for (size_t off = step / 2; off + 2 * page <= SMALL; off += step) {
        split &= mprotect((char *)e + off, page, PROT_READ) == 0;
        split &= munmap((char *)e + off + page, page) == 0;
    }
    EXPECT(split, "mprotect/munmap in E: %s", strerror(errno));
    EXPECT(madvise(w, SMALL, MADV_WIPEONFORK) == 0, "madvise(MADV_WIPEONFORK): %s", strerror(errno));
    pid_t child = fork();
    if (child == 0) {
        long x = check(a, big, 1), y = check(b, SMALL, 2), z = nonzero(w, SMALL);
        if (x >= 0) printf("FAIL: the child's A is wrong at word %ld\n", x);
        if (y >= 0) printf("FAIL: the child's B is wrong at word %ld\n", y);
        if (z >= 0) printf("FAIL: the child's W (wiped on fork) holds the parent's bytes at word %ld\n", z);
        fflush(stdout);
        _exit(x >= 0 || y >= 0 || z >= 0);
    }
    EXPECT(child > 0, "fork: %s", strerror(errno));
    uint64_t *moved = mremap(b, SMALL, SMALL, MREMAP_MAYMOVE | MREMAP_FIXED, bdest);
    EXPECT(moved != MAP_FAILED, "mremap: %s", strerror(errno));
    EXPECT(madvise(c, SMALL, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
    EXPECT(munmap(d, SMALL) == 0, "munmap: %s", strerror(errno));
    uint64_t *d2 = mmap(d, SMALL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    EXPECT(d2 == d, "mmap again at D: %s", strerror(errno));

    long x;
    EXPECT((x = check(a, big, 1)) < 0, "A is wrong at word %ld", x);
    if (moved != MAP_FAILED) EXPECT((x = check(moved, SMALL, 2)) < 0, "B, moved, is wrong at word %ld", x);
    EXPECT((x = nonzero(c, SMALL)) < 0, "C, thrown away, holds old bytes at word %ld", x);
    if (d2 == d) EXPECT((x = nonzero(d, SMALL)) < 0, "D, mapped again, holds old bytes at word %ld", x);
    // E, around its holes: every page still mapped holds its bytes.
    long wrong = 0, first = -1;
    for (size_t i = 0; i < SMALL / 8; i++) {
        size_t off = i * 8, in = off % step;
        if (off >= step / 2 && in >= step / 2 + page && in < step / 2 + 2 * page && off + page <= SMALL) continue;  // a hole
        if (e[i] != ((i * 0x9e3779b97f4a7c15ull) ^ 6)) { if (first < 0) first = (long)i; wrong++; }
    }
    EXPECT(wrong == 0, "E, split and holed, is wrong in %ld words (first %ld)", wrong, first);
    EXPECT((x = check(w, SMALL, 7)) < 0, "W (the parent's) is wrong at word %ld", x);
    int st = 0;
    if (child > 0) {
        // The test's SIGUSR1 can come while we wait here when we acted on our own, right
        // after the stop: its handler (no SA_RESTART) interrupts waitpid, EINTR, as it
        // would any program's; waited for again.
        pid_t w;
        while ((w = waitpid(child, &st, 0)) < 0 && errno == EINTR) {}
        EXPECT(w == child, "waitpid: %s", strerror(errno));
        EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's check failed (status 0x%x)", st);
    }
    // Written after: the pages must still be ours to write.
    fill(a, big, 5);
    EXPECT((x = check(a, big, 5)) < 0, "A rewritten is wrong at word %ld", x);
    fixture_wait();
    return fixture_finish();
}
