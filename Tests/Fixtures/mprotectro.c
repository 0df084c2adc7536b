// Issue 10, "Restored wrong", memory: a file mapping whose file was opened read-only but
// mapped with other protections cannot be mprotect-ed after restart (EACCES). The kernel
// decides from the open mode of the file the mapping was made from (VM_MAYWRITE/VM_MAYEXEC):
//   privro    data.bin opened O_RDONLY, mmap MAP_PRIVATE PROT_READ, fd closed: mprotect
//             PROT_READ|PROT_WRITE must succeed after restart, and a write there stays private
//             (the file is unchanged)
//   privnone  the same mapped PROT_NONE: mprotect PROT_READ works, content is the file's
//   privcow   O_RDONLY, MAP_PRIVATE PROT_READ|PROT_WRITE, one page written before the
//             checkpoint (its copy-on-write content kept), then mprotect PROT_READ, then after
//             restart PROT_READ|PROT_WRITE again
//   privexec  O_RDONLY, MAP_PRIVATE PROT_READ, mprotect PROT_READ|PROT_EXEC after restart
//   sharedro  O_RDONLY, MAP_SHARED PROT_READ: mprotect PROT_WRITE must still FAIL with EACCES
//             (a restart that reopened the file read-write would wrongly allow it)
//   sharedrw  O_RDWR, MAP_SHARED PROT_READ: mprotect PROT_READ|PROT_WRITE works and writes
//             reach the file
// VmFlags of each (the "may" flags mr mw me) must be as before.
#include "fixture.h"
#include <sys/mman.h>

#define SZ (4 * 4096)
enum { PRIVRO, PRIVNONE, PRIVCOW, PRIVEXEC, SHAREDRO, SHAREDRW, N };
static const char *names[N] = { "privro", "privnone", "privcow", "privexec", "sharedro", "sharedrw" };

static void vmflags(void *addr, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (strncmp(line, "VmFlags:", 8) == 0) { if (in) { snprintf(out, n, "%s", line + 9); out[strcspn(out, "\n")] = 0; break; } continue; }
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && line[strcspn(line, " ") - 1] != ':') in = start == (unsigned long)addr;
    }
    if (f) fclose(f);
}

static char *map(const char *file, int oflags, int prot, int flags) {
    int fd = open(file, oflags);
    char *p = mmap(NULL, SZ, prot, flags, fd, 0);
    close(fd);
    return p;
}

int main(void) {
    int fd = open("data.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < SZ; i++) { char c = 'a' + i % 26; write(fd, &c, 1); }
    close(fd);
    fd = open("data2.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < SZ; i++) { char c = 'a' + i % 26; write(fd, &c, 1); }
    close(fd);
    char *m[N];
    m[PRIVRO] = map("data.bin", O_RDONLY, PROT_READ, MAP_PRIVATE);
    m[PRIVNONE] = map("data.bin", O_RDONLY, PROT_NONE, MAP_PRIVATE);
    m[PRIVCOW] = map("data.bin", O_RDONLY, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    m[PRIVCOW][4096] = 'C';
    mprotect(m[PRIVCOW], SZ, PROT_READ);
    m[PRIVEXEC] = map("data.bin", O_RDONLY, PROT_READ, MAP_PRIVATE);
    m[SHAREDRO] = map("data.bin", O_RDONLY, PROT_READ, MAP_SHARED);
    m[SHAREDRW] = map("data2.bin", O_RDWR, PROT_READ, MAP_SHARED);
    char before[N][256], after[N][256];
    for (int i = 0; i < N; i++) vmflags(m[i], before[i], sizeof before[i]);
    for (int i = 0; i < N; i++) printf("%-9s %s\n", names[i], before[i]);

    fixture_ready();
    fixture_wait();

    for (int i = 0; i < N; i++) {
        vmflags(m[i], after[i], sizeof after[i]);
        EXPECT(strcmp(before[i], after[i]) == 0, "%s: VmFlags '%s', were '%s'", names[i], after[i], before[i]);
    }
    EXPECT(mprotect(m[PRIVRO], SZ, PROT_READ | PROT_WRITE) == 0, "privro: mprotect(PROT_READ|PROT_WRITE): %s", strerror(errno));
    if (mprotect(m[PRIVRO], SZ, PROT_READ | PROT_WRITE) == 0) {
        m[PRIVRO][10] = 'W';
        EXPECT(m[PRIVRO][10] == 'W' && m[PRIVRO][11] == 'a' + 11 % 26, "privro: content");
    }
    EXPECT(mprotect(m[PRIVNONE], SZ, PROT_READ) == 0, "privnone: mprotect(PROT_READ): %s", strerror(errno));
    if (mprotect(m[PRIVNONE], SZ, PROT_READ) == 0) EXPECT(m[PRIVNONE][SZ - 1] == 'a' + (SZ - 1) % 26, "privnone: content");
    EXPECT(m[PRIVCOW][4096] == 'C' && m[PRIVCOW][4097] == 'a' + 4097 % 26, "privcow: copy-on-write page lost");
    EXPECT(mprotect(m[PRIVCOW], SZ, PROT_READ | PROT_WRITE) == 0, "privcow: mprotect(PROT_READ|PROT_WRITE): %s", strerror(errno));
    EXPECT(mprotect(m[PRIVEXEC], SZ, PROT_READ | PROT_EXEC) == 0, "privexec: mprotect(PROT_READ|PROT_EXEC): %s", strerror(errno));
    EXPECT(mprotect(m[SHAREDRO], SZ, PROT_READ | PROT_WRITE) < 0 && errno == EACCES, "sharedro: mprotect(PROT_WRITE) on a read-only shared mapping was allowed");
    EXPECT(mprotect(m[SHAREDRW], SZ, PROT_READ | PROT_WRITE) == 0, "sharedrw: mprotect(PROT_READ|PROT_WRITE): %s", strerror(errno));
    if (mprotect(m[SHAREDRW], SZ, PROT_READ | PROT_WRITE) == 0) {
        m[SHAREDRW][5] = 'S';
        msync(m[SHAREDRW], SZ, MS_SYNC);
        char c = 0;
        fd = open("data2.bin", O_RDONLY);
        pread(fd, &c, 1, 5);
        EXPECT(c == 'S', "sharedrw: the write did not reach the file");
    }
    char c = 0;
    fd = open("data.bin", O_RDONLY);
    pread(fd, &c, 1, 10);
    EXPECT(c == 'a' + 10, "data.bin changed by a private mapping");
    return fixture_finish();
}
