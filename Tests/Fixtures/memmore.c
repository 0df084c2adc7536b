// Address-space states found by probing (December 2026), each lost or refused by a restart:
//   - guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13): the checkpoint failed reading
//     them ("Input/output error"); they must still raise SIGSEGV, the pages around them kept;
//   - a sealed area (mseal(2), 6.10): mprotect, munmap, MADV_DONTNEED and MAP_FIXED over it
//     must still fail with EPERM;
//   - a MAP_NORESERVE area larger than the machine's memory (AddressSanitizer's shadow): the
//     restart failed with ENOMEM; VmFlags "nr" kept;
//   - a MAP_DROPPABLE area (6.11, glibc's getrandom state): still droppable ("dp");
//   - membarrier(2) registrations (liburcu, .NET): the expedited commands must still work;
//   - mlockall(MCL_FUTURE | MCL_ONFAULT) in the parent, mlockall(MCL_FUTURE) in a child: a
//     mapping made after the restart is locked ("lo", with "lf" for MCL_ONFAULT);
//   - an area only read (every page the kernel's shared zero page): it came back as that
//     much resident memory.
// A feature the kernel lacks is skipped with a line saying so.
#define _GNU_SOURCE
#include "fixture.h"
#include <linux/membarrier.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define PG 4096UL
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif
#define GET_REGISTRATIONS (1 << 9)

// The VmFlags line of the area holding `addr`.
static void vmflags(void *addr, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char c;
        if (sscanf(line, "%lx-%lx%c", &s, &e, &c) == 3 && c == ' ') { in = (unsigned long)addr >= s && (unsigned long)addr < e; continue; }
        if (in && !strncmp(line, "VmFlags:", 8)) { snprintf(out, n, "%s", line + 9); out[strcspn(out, "\n")] = 0; break; }
    }
    if (f) fclose(f);
}

static int has_flag(const char *flags, const char *f) {
    char w[8];
    snprintf(w, sizeof w, "%s ", f);
    return strstr(flags, w) != NULL;
}

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f)) if (!strncmp(line, key, strlen(key))) { v = strtol(line + strlen(key), NULL, 10); break; }
    if (f) fclose(f);
    return v;
}

static sigjmp_buf jb;
static volatile int faultsig;
static void on_fault(int s) { faultsig = s; siglongjmp(jb, 1); }

// 0 when reading `p` works (its byte in *val), else the signal it raised.
static int probe_read(volatile char *p, char *val) {
    struct sigaction sa = {0}, o1, o2;
    sa.sa_handler = on_fault;
    sigaction(SIGSEGV, &sa, &o1);
    sigaction(SIGBUS, &sa, &o2);
    faultsig = 0;
    if (sigsetjmp(jb, 1) == 0) { char v = *p; if (val) *val = v; }
    sigaction(SIGSEGV, &o1, NULL);
    sigaction(SIGBUS, &o2, NULL);
    return faultsig;
}

static long mb(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

int main(void) {
    char *guard = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(guard, 'g', 8 * PG);
    int hasGuard = madvise(guard + 2 * PG, 2 * PG, MADV_GUARD_INSTALL) == 0;
    if (!hasGuard) printf("SKIP guard regions: MADV_GUARD_INSTALL: %s\n", strerror(errno));

    char *sealed = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(sealed, 's', 4 * PG);
    mprotect(sealed, 4 * PG, PROT_READ);
    int hasSeal = syscall(462 /* mseal */, sealed, 4 * PG, 0) == 0;
    if (!hasSeal) printf("SKIP mseal: %s\n", strerror(errno));

    unsigned long big = 64UL << 30;
    char *nr = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (nr == MAP_FAILED) { printf("MAP_NORESERVE of 64 GiB: %s\n", strerror(errno)); return 4; }
    nr[0] = 'n'; nr[big / 2] = 'o'; nr[big - 1] = 'r';
    char nrBefore[256];
    vmflags(nr, nrBefore, sizeof nrBefore);

    char *drop = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
    char dropBefore[256] = "";
    if (drop == MAP_FAILED) printf("SKIP MAP_DROPPABLE: %s\n", strerror(errno));
    else { memset(drop, 'd', 4 * PG); vmflags(drop, dropBefore, sizeof dropBefore); }

    long regs = -1;
    if (mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) || mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
        || mb(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)) printf("SKIP membarrier: %s\n", strerror(errno));
    else if ((regs = mb(GET_REGISTRATIONS)) < 0) printf("SKIP membarrier: GET_REGISTRATIONS: %s\n", strerror(errno));

    size_t zeroSize = 256UL << 20;
    volatile char *zero = mmap(NULL, zeroSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise((void *)zero, zeroSize, MADV_NOHUGEPAGE);
    long sum = 0;
    for (size_t i = 0; i < zeroSize; i += PG) sum += zero[i];
    zero[0] = 1;

    // Last: mappings made from now on are locked (with MCL_ONFAULT, as they are touched).
    if (mlockall(MCL_FUTURE | MCL_ONFAULT)) { printf("mlockall: %s\n", strerror(errno)); return 4; }
    char lockBefore[256];
    char *p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    vmflags(p, lockBefore, sizeof lockBefore);
    munmap(p, PG);

    int toChild[2], fromChild[2];
    if (pipe(toChild) || pipe(fromChild)) return 4;
    pid_t child = fork();
    if (child == 0) {
        // MCL_FUTURE alone: new mappings locked and faulted in at once.
        munlockall();
        char c = mlockall(MCL_FUTURE) == 0 ? 'y' : 'n';
        if (write(fromChild[1], &c, 1) != 1) _exit(2);
        while (read(toChild[0], &c, 1) != 1) {}
        char f[256];
        char *q = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        vmflags(q, f, sizeof f);
        c = has_flag(f, "lo") && !has_flag(f, "lf") ? 'y' : 'n';
        if (c != 'y') printf("FAIL: child: a new mapping's VmFlags '%s', want lo without lf (MCL_FUTURE)\n", f);
        fflush(stdout);
        if (write(fromChild[1], &c, 1) != 1) _exit(2);
        _exit(0);
    }
    char c;
    if (read(fromChild[0], &c, 1) != 1 || c != 'y') { printf("child's mlockall failed\n"); return 4; }
    long rss = status_kb("RssAnon:");

    fixture_ready();
    fixture_wait();

    if (hasGuard) {
        for (int i = 0; i < 8; i++) {
            char v = 0;
            int s = probe_read(guard + i * PG, &v);
            if (i == 2 || i == 3) EXPECT(s == SIGSEGV, "guard region: page %d is no longer a guard (signal %d)", i, s);
            else EXPECT(s == 0 && v == 'g', "guard region: page %d: signal %d, byte %d", i, s, v);
        }
    }
    if (hasSeal) {
        char f[256];
        vmflags(sealed, f, sizeof f);
        EXPECT(has_flag(f, "sl"), "mseal: VmFlags '%s' without sl", f);
        errno = 0;
        EXPECT(mprotect(sealed, 4 * PG, PROT_READ | PROT_WRITE) == -1 && errno == EPERM, "mseal: mprotect allowed (errno %d)", errno);
        errno = 0;
        EXPECT(madvise(sealed, PG, MADV_DONTNEED) == -1 && errno == EPERM, "mseal: MADV_DONTNEED allowed (errno %d)", errno);
        errno = 0;
        EXPECT(munmap(sealed + PG, PG) == -1 && errno == EPERM, "mseal: munmap allowed (errno %d)", errno);
        for (int i = 0; i < 4; i++) EXPECT(sealed[i * PG] == 's', "mseal: page %d content", i);
    }
    char f[256];
    vmflags(nr, f, sizeof f);
    EXPECT(!strcmp(f, nrBefore), "MAP_NORESERVE: VmFlags '%s', were '%s'", f, nrBefore);
    EXPECT(nr[0] == 'n' && nr[big / 2] == 'o' && nr[big - 1] == 'r' && nr[big / 4] == 0, "MAP_NORESERVE: content");
    if (drop != MAP_FAILED) {
        vmflags(drop, f, sizeof f);
        EXPECT(!strcmp(f, dropBefore), "MAP_DROPPABLE: VmFlags '%s', were '%s'", f, dropBefore);
        EXPECT(drop[0] == 'd' || drop[0] == 0, "MAP_DROPPABLE: content %d", drop[0]);
    }
    if (regs >= 0) {
        long now = mb(GET_REGISTRATIONS);
        EXPECT(now == regs, "membarrier: registrations %#lx, were %#lx", now, regs);
        errno = 0;
        EXPECT(mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0, "membarrier PRIVATE_EXPEDITED: %s", strerror(errno));
        errno = 0;
        EXPECT(mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE) == 0, "membarrier PRIVATE_EXPEDITED_SYNC_CORE: %s", strerror(errno));
    }
    long now = status_kb("RssAnon:");
    EXPECT(now < rss + 64 * 1024, "zero pages: RssAnon %ld kB, was %ld kB (the pages only read came back as real memory)", now, rss);
    EXPECT(zero[0] == 1 && zero[5 * PG] == 0 && sum == 0, "zero pages: content");

    p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    vmflags(p, f, sizeof f);
    EXPECT(!strcmp(f, lockBefore) && has_flag(f, "lf"), "mlockall(MCL_FUTURE|MCL_ONFAULT): a new mapping's VmFlags '%s', were '%s'", f, lockBefore);

    c = 'g';
    if (write(toChild[1], &c, 1) != 1 || read(fromChild[0], &c, 1) != 1 || c != 'y') EXPECT(0, "child's mlockall(MCL_FUTURE) check");
    int st;
    waitpid(child, &st, 0);
    return fixture_finish();
}
