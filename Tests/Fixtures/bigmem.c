// Benchmark and test load: N MiB of anonymous memory filled with pseudo-random bytes.
// Prints "READY <pid> <checksum>", then on each SIGUSR1 recomputes and prints
// "SUM <checksum>", so a restarted copy can be checked against the original.
// With a second argument, a file: it also holds an flock(2) LOCK_EX and a POSIX write lock
// (fcntl F_SETLK, the whole file) on it, which the test checks from outside.
#include "fixture.h"
#include <stdint.h>
#include <sys/file.h>
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
    if (argc > 2) {
        int fd = open(argv[2], O_RDWR | O_CREAT, 0644);
        struct flock f = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0 || fcntl(fd, F_SETLK, &f) != 0) { printf("FAIL: locks on %s: %s\n", argv[2], strerror(errno)); return 1; }
    }
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
