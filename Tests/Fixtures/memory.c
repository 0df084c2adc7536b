// Memory of every kind survives checkpoint/kill/restart: private and shared anonymous,
// heap (brk and malloc), stack, a private file mapping with modified pages, read-only,
// PROT_NONE and guard regions, and a large region never touched (which must stay unsaved).
#include "fixture.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096
static unsigned char pat(size_t i, int salt) { return (unsigned char)(i * 31 + salt); }

static const char *perms_of(void *addr, char out[5]) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && (unsigned long)addr >= s && (unsigned long)addr < e) { strcpy(out, p); break; }
    }
    if (f) fclose(f);
    return out;
}

int main(void) {
    size_t n = 64 * PG;
    unsigned char *pa = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < n / 2; i++) pa[i] = pat(i, 1);          // second half untouched
    unsigned char *sa = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < n; i++) sa[i] = pat(i, 2);
    unsigned char *heap = malloc(1 << 20);
    for (size_t i = 0; i < (1 << 20); i++) heap[i] = pat(i, 3);
    void *brk0 = sbrk(0);
    unsigned char *brkmem = sbrk(3 * PG);
    for (size_t i = 0; i < 3 * PG; i++) brkmem[i] = pat(i, 4);
    void *brk1 = sbrk(0);
    volatile unsigned char stack[32768];
    for (size_t i = 0; i < sizeof stack; i++) stack[i] = pat(i, 5);

    FILE *df = fopen("mapped.dat", "w");
    for (int p = 0; p < 8; p++) for (int i = 0; i < PG; i++) fputc('A' + p, df);
    fclose(df);
    int fd = open("mapped.dat", O_RDONLY);
    unsigned char *fm = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    volatile unsigned char sink = fm[0] + fm[5 * PG];          // present but unmodified pages
    (void)sink;
    memset(fm + 2 * PG, 'Z', PG);                              // a modified (COW) page

    unsigned char *ro = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < 4 * PG; i++) ro[i] = pat(i, 6);
    mprotect(ro, 4 * PG, PROT_READ);
    unsigned char *none = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < 2 * PG; i++) none[i] = pat(i, 7);
    mprotect(none, 2 * PG, PROT_NONE);
    unsigned char *guard = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(guard, 1, 3 * PG);
    mprotect(guard + PG, PG, PROT_NONE);
    unsigned char *big = mmap(NULL, 256 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    big[100 * PG] = 0x5a;                                      // one page of 65536 touched

    fixture_ready();
    fixture_wait();

    for (size_t i = 0; i < n / 2; i++) if (pa[i] != pat(i, 1)) { EXPECT(0, "private anon byte %zu", i); break; }
    for (size_t i = n / 2; i < n; i++) if (pa[i] != 0) { EXPECT(0, "untouched private anon byte %zu not zero", i); break; }
    for (size_t i = 0; i < n; i++) if (sa[i] != pat(i, 2)) { EXPECT(0, "shared anon byte %zu", i); break; }
    for (size_t i = 0; i < (1 << 20); i++) if (heap[i] != pat(i, 3)) { EXPECT(0, "malloc heap byte %zu", i); break; }
    for (size_t i = 0; i < 3 * PG; i++) if (brkmem[i] != pat(i, 4)) { EXPECT(0, "brk byte %zu", i); break; }
    EXPECT(sbrk(0) == brk1, "brk moved: %p, expected %p (start %p)", sbrk(0), brk1, brk0);
    void *more = sbrk(PG);                                      // the heap still grows
    EXPECT(more == brk1, "sbrk after restart returned %p, expected %p", more, brk1);
    for (size_t i = 0; i < sizeof stack; i++) if (stack[i] != pat(i, 5)) { EXPECT(0, "stack byte %zu", i); break; }
    for (int p = 0; p < 8; p++) {
        unsigned char want = p == 2 ? 'Z' : 'A' + p;
        EXPECT(fm[p * PG] == want && fm[p * PG + PG - 1] == want, "file mapping page %d: %c, expected %c", p, fm[p * PG], want);
    }
    char pr[5];
    EXPECT(strcmp(perms_of(fm, pr), "rw-p") == 0, "file mapping perms %s", pr);
    EXPECT(strcmp(perms_of(ro, pr), "r--p") == 0, "read-only region perms %s", pr);
    for (size_t i = 0; i < 4 * PG; i++) if (ro[i] != pat(i, 6)) { EXPECT(0, "read-only byte %zu", i); break; }
    EXPECT(strcmp(perms_of(none, pr), "---p") == 0, "PROT_NONE region perms %s", pr);
    mprotect(none, 2 * PG, PROT_READ);
    for (size_t i = 0; i < 2 * PG; i++) if (none[i] != pat(i, 7)) { EXPECT(0, "PROT_NONE region byte %zu", i); break; }
    EXPECT(strcmp(perms_of(guard + PG, pr), "---p") == 0, "guard page perms %s", pr);
    EXPECT(guard[0] == 1 && guard[2 * PG] == 1, "guard neighbours");
    EXPECT(big[100 * PG] == 0x5a && big[0] == 0 && big[(256 << 20) - 1] == 0, "sparse region");
    // Shared anonymous memory is still shared with a child.
    pid_t c = fork();
    if (c == 0) { sa[0] = 0xee; _exit(0); }
    waitpid(c, NULL, 0);
    EXPECT(sa[0] == 0xee, "MAP_SHARED region no longer shared after restart");
    return fixture_finish();
}
