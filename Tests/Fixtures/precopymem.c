// Memory that changes while a pre-copy checkpoint (ssi checkpoint --precopy, and every
// migration of a large application) copies it: the rounds track written pages with
// userfaultfd write-protection and PAGEMAP_SCAN, and the final, frozen round takes the rest
// from the copies already made. Two states that path once got wrong:
//   - F, a MAP_PRIVATE mapping of a file, whose pages a thread keeps writing (each becomes
//     the process's own copy) and dropping with MADV_DONTNEED (each must read the file's
//     bytes again): a dropped page was not reported written, and its old private copy came
//     back;
//   - G, an anonymous area with guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13):
//     some installed before, one more by the thread during the rounds; the guards were
//     lost, or the checkpoint failed reading a guard (EIO).
// Meanwhile the thread writes H (48 MiB) at about 30 MB/s, so that the rounds repeat. The
// thread stops at the first gap of over 50 ms in its own loop (the checkpoint's stop), or
// when its network namespace changed (a migration to another node of the local cluster,
// quicker than that): the state it recorded for each page is then the state the restored
// process must have. Run as a cluster application too (migrated: the same path).
//
//   precopymem
#include "fixture.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define PAGE 4096ul
#define FPAGES 2048ul            // F: 8 MiB
#define GPAGES 8192ul            // G: 32 MiB
#define HBYTES (48ul << 20)       // with G, over pre-copy's automatic threshold (64 MiB)

static char *f, *g, *h;
// Per page of F: 0 the file's bytes, 1 written by us (its first word: the value below),
// 2 changing (not checked).
static volatile unsigned char fstate[FPAGES];
static volatile uint64_t fvalue[FPAGES];
// G's guard installed by the thread during the rounds: its page, or -1.
static volatile long late_guard = -1;
static int guards_supported;
static volatile int stop_thread, thread_stopped;
static volatile unsigned long iterations;
static volatile uint64_t stop_gap;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t file_word(size_t page) { return 0xf11e000000000000ull | page; }

static void *worker(void *arg) {
    (void)arg;
    char ns0[128] = {0}, ns[128];
    ssize_t n0 = readlink("/proc/self/ns/net", ns0, sizeof ns0 - 1);
    uint64_t last = now_ns(), x = 0x9e3779b97f4a7c15ull;
    size_t hoff = 0;
    for (unsigned long k = 1; !stop_thread; k++) {
        uint64_t t = now_ns();
        if (t - last > 50000000ull) { stop_gap = t - last; break; }   // the checkpoint stopped us: keep the state
        last = t;
        ssize_t n = n0 > 0 ? readlink("/proc/self/ns/net", ns, sizeof ns - 1) : -1;
        if (n > 0 && (n != n0 || memcmp(ns, ns0, (size_t)n) != 0)) { stop_gap = 1; break; }   // moved
        iterations = k;
        // F: pages written or dropped, each one's state recorded around the change.
        for (int i = 0; i < 16; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t p = x % FPAGES;
        fstate[p] = 2;
        __sync_synchronize();
        if (x & 1) {
            uint64_t v = x | 1;
            *(volatile uint64_t *)(f + p * PAGE) = v;
            fvalue[p] = v;
            __sync_synchronize();
            fstate[p] = 1;
        } else {
            madvise(f + p * PAGE, PAGE, MADV_DONTNEED);
            __sync_synchronize();
            fstate[p] = 0;
        }
        }
        // G: one more guard, once, a while after the start (during the rounds).
        if (k == 50 && guards_supported) {
            long q = GPAGES / 2 + 7;
            late_guard = -2;
            __sync_synchronize();
            if (madvise(g + q * PAGE, PAGE, MADV_GUARD_INSTALL) == 0) late_guard = q;
        }
        // H: 64 KiB every 2 ms or so, about 30 MB/s.
        memset(h + hoff, (int)(k & 0xff), 64 << 10);
        hoff = (hoff + (64 << 10)) % HBYTES;
        usleep(2000);
    }
    thread_stopped = 1;
    return NULL;
}

// Whether the page at p is a guard region's marker (/proc/self/pagemap bit 58, 6.15).
static int is_guard(void *p) {
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    uint64_t e = 0;
    if (fd >= 0) { pread(fd, &e, 8, (off_t)((uintptr_t)p / PAGE * 8)); close(fd); }
    return (int)((e >> 58) & 1);
}

int main(void) {
    // The file, in the working directory (the test's), removed at the end: each page's
    // first word names it. Mapped, its fd closed.
    char path[64];
    snprintf(path, sizeof path, "precopymem-%d.data", getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) { perror("open"); return 2; }
    static uint64_t buf[PAGE / 8];
    for (size_t p = 0; p < FPAGES; p++) {
        memset(buf, 0x5a, sizeof buf);
        buf[0] = file_word(p);
        if (pwrite(fd, buf, PAGE, (off_t)(p * PAGE)) != (ssize_t)PAGE) { perror("pwrite"); return 2; }
    }
    f = mmap(NULL, FPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    g = mmap(NULL, GPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    h = mmap(NULL, HBYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f == MAP_FAILED || g == MAP_FAILED || h == MAP_FAILED) { perror("mmap"); return 2; }
    close(fd);
    // Half of F the process's own from the start; G and H filled.
    for (size_t p = 0; p < FPAGES; p++) {
        if (p % 2) { uint64_t v = 0xabc0000000000000ull | p; *(uint64_t *)(f + p * PAGE) = v; fvalue[p] = v; fstate[p] = 1; }
        else fstate[p] = 0;
    }
    for (size_t p = 0; p < GPAGES; p++) memset(g + p * PAGE, (int)(p % 251) + 1, PAGE);
    memset(h, 1, HBYTES);
    // Guards before: three single pages and a run of four.
    static const long early[] = {5, 1000, 4096, 6000, 6001, 6002, 6003};
    guards_supported = madvise(g + 5 * PAGE, PAGE, MADV_GUARD_INSTALL) == 0;
    if (guards_supported) {
        for (size_t i = 1; i < sizeof early / sizeof *early; i++) EXPECT(madvise(g + early[i] * PAGE, PAGE, MADV_GUARD_INSTALL) == 0, "guard at page %ld: %s", early[i], strerror(errno));
        // The scan category of guards and pagemap's bit came later (6.15): without them the
        // restart cannot know of any guard; not this test's concern.
        if (!is_guard(g + 5 * PAGE)) guards_supported = 0;
    }
    if (!guards_supported) printf("note: no guard regions here (MADV_GUARD_INSTALL or pagemap bit 58 missing): G not checked\n");
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) { perror("pthread_create"); return 2; }
    fixture_ready();
    fixture_wait();
    stop_thread = 1;
    pthread_join(t, NULL);

    long wrong = 0, first = -1, unsure = 0;
    for (size_t p = 0; p < FPAGES; p++) {
        uint64_t w = *(volatile uint64_t *)(f + p * PAGE);
        if (fstate[p] == 2) { unsure++; continue; }
        uint64_t want = fstate[p] ? fvalue[p] : file_word(p);
        if (w != want) { if (first < 0) first = (long)p; wrong++; }
    }
    EXPECT(wrong == 0, "F (MAP_PRIVATE file): %ld pages wrong (first %ld: %s)", wrong, first,
           first >= 0 && fstate[first] == 0 ? "dropped, should read the file" : "written, should hold its value");
    EXPECT(unsure <= 1, "F: %ld pages left changing", unsure);
    if (guards_supported) {
        for (size_t i = 0; i < sizeof early / sizeof *early; i++) EXPECT(is_guard(g + early[i] * PAGE), "G: the guard at page %ld is gone", early[i]);
        if (late_guard >= 0) EXPECT(is_guard(g + late_guard * PAGE), "G: the guard installed during the rounds (page %ld) is gone", late_guard);
        long gw = 0, gfirst = -1;
        for (size_t p = 0; p < GPAGES; p++) {
            int guarded = (long)p == late_guard || (long)p == 5 || (long)p == 1000 || (long)p == 4096 || (p >= 6000 && p <= 6003);
            if (guarded || ((long)p == GPAGES / 2 + 7 && late_guard == -2)) continue;
            const unsigned char *q = (const unsigned char *)g + p * PAGE;
            if (q[0] != (unsigned char)((p % 251) + 1) || q[PAGE - 1] != (unsigned char)((p % 251) + 1)) { if (gfirst < 0) gfirst = (long)p; gw++; }
        }
        EXPECT(gw == 0, "G: %ld pages wrong (first %ld)", gw, gfirst);
    }
    printf("thread stopped after %lu turns, %s (a gap of %.1f ms)\n", iterations, stop_gap ? "by a stop" : "at SIGUSR1", stop_gap / 1e6);
    unlink(path);
    return fixture_finish();
}
