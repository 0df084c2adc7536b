// Issue 10, "Restored wrong", memory: madvise flags are lost; PR_SET_THP_DISABLE is lost.
// Anonymous private areas of 4 MiB (2 MiB aligned), each with content, each given one advice
// (madvise(2)); after restart each area's VmFlags in /proc/self/smaps must hold the same
// flags as before (the whole VmFlags line is compared), and the advice must still act:
//   dontfork   MADV_DONTFORK (dc): a child forked after restart does not have it
//   dontdump   MADV_DONTDUMP (dd)
//   wipe       MADV_WIPEONFORK (wf): a child forked after restart reads zeros there, the
//              parent keeps its content
//   huge       MADV_HUGEPAGE (hg)
//   nohuge     MADV_NOHUGEPAGE (nh)
//   random     MADV_RANDOM (rr)
//   seq        MADV_SEQUENTIAL (sr)
//   locked     mlock (lo): still locked (VmLck in /proc/self/status counts it)
//   mergeable  MADV_MERGEABLE (mg)
//   dofork     MADV_DONTFORK then MADV_DOFORK: no flag, and a child has it
//   split      one area, MADV_DONTFORK on its middle 1 MiB only: three VMAs as before
// and for the process: prctl(PR_SET_THP_DISABLE, 1): PR_GET_THP_DISABLE gives 1 after
// restart ("THP_enabled: 0" in /proc/self/status), also in a child forked after restart.
#include "fixture.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define AREA (4UL << 20)
enum { DONTFORK, DONTDUMP, WIPE, HUGE, NOHUGE, RANDOM, SEQ, LOCKED, MERGEABLE, DOFORK, SPLIT, NA };
static const char *names[NA] = { "dontfork", "dontdump", "wipe", "huge", "nohuge", "random", "seq", "locked", "mergeable", "dofork", "split" };
static char *areas[NA];
static char flags_before[NA + 2][256], flags_after[NA + 2][256];

// The VmFlags line of the VMA that starts at addr (or "" if none does).
static void vmflags(void *addr, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, ' ') == line + strcspn(line, " ") && line[strcspn(line, "-")] == '-' && strncmp(line, "VmFlags", 7) != 0) {
            in = start == (unsigned long)addr;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) { snprintf(out, n, "%s", line + 9); out[strcspn(out, "\n")] = 0; break; }
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
    while (f && fgets(line, sizeof line, f)) if (strncmp(line, key, strlen(key)) == 0) { v = strtol(line + strlen(key), NULL, 10); break; }
    if (f) fclose(f);
    return v;
}

static int all(char *p, size_t n, char c) { for (size_t i = 0; i < n; i += 4096) if (p[i] != c) return 0; return 1; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    for (int i = 0; i < NA; i++) {
        // 2 MiB aligned, with an unmapped gap on both sides so that no two areas merge.
        char *raw = mmap(NULL, AREA + (4UL << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        char *a = (char *)(((uintptr_t)raw + (2UL << 20)) & ~((2UL << 20) - 1));
        munmap(raw, a - raw);
        munmap(a + AREA, raw + AREA + (4UL << 20) - (a + AREA));
        a = mmap(a, AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        memset(a, 'a' + i, AREA);
        areas[i] = a;
    }
    madvise(areas[DONTFORK], AREA, MADV_DONTFORK);
    madvise(areas[DONTDUMP], AREA, MADV_DONTDUMP);
    madvise(areas[WIPE], AREA, MADV_WIPEONFORK);
    madvise(areas[HUGE], AREA, MADV_HUGEPAGE);
    madvise(areas[NOHUGE], AREA, MADV_NOHUGEPAGE);
    madvise(areas[RANDOM], AREA, MADV_RANDOM);
    madvise(areas[SEQ], AREA, MADV_SEQUENTIAL);
    int locked = mlock(areas[LOCKED], AREA) == 0;
    int mergeable = madvise(areas[MERGEABLE], AREA, MADV_MERGEABLE) == 0;
    madvise(areas[DOFORK], AREA, MADV_DONTFORK);
    madvise(areas[DOFORK], AREA, MADV_DOFORK);
    madvise(areas[SPLIT] + (1UL << 20), 1UL << 20, MADV_DONTFORK);
    for (int i = 0; i < NA; i++) vmflags(areas[i], flags_before[i], sizeof flags_before[i]);
    vmflags(areas[SPLIT] + (1UL << 20), flags_before[NA], sizeof flags_before[NA]);
    vmflags(areas[SPLIT] + (2UL << 20), flags_before[NA + 1], sizeof flags_before[NA + 1]);
    for (int i = 0; i < NA; i++) printf("%-9s %p %s\n", names[i], (void *)areas[i], flags_before[i]);
    printf("split middle: %s\nmlock %s, MADV_MERGEABLE %s, THP disabled %d\n", flags_before[NA], locked ? "ok" : "refused", mergeable ? "ok" : "refused", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
    long vmlck = status_kb("VmLck:");
    EXPECT(has_flag(flags_before[DONTFORK], "dc") && has_flag(flags_before[WIPE], "wf") && has_flag(flags_before[NA], "dc"), "setup: VmFlags do not show the advice");

    fixture_ready();
    fixture_wait();

    for (int i = 0; i < NA; i++) {
        vmflags(areas[i], flags_after[i], sizeof flags_after[i]);
        EXPECT(strcmp(flags_before[i], flags_after[i]) == 0, "%s: VmFlags '%s', were '%s'", names[i], flags_after[i], flags_before[i]);
        EXPECT(all(areas[i], AREA, 'a' + i), "%s: content lost", names[i]);
    }
    vmflags(areas[SPLIT] + (1UL << 20), flags_after[NA], sizeof flags_after[NA]);
    vmflags(areas[SPLIT] + (2UL << 20), flags_after[NA + 1], sizeof flags_after[NA + 1]);
    EXPECT(strcmp(flags_before[NA], flags_after[NA]) == 0 && strcmp(flags_before[NA + 1], flags_after[NA + 1]) == 0,
           "split: middle '%s' / tail '%s', were '%s' / '%s'", flags_after[NA], flags_after[NA + 1], flags_before[NA], flags_before[NA + 1]);
    EXPECT(status_kb("VmLck:") == vmlck, "VmLck %ld kB, was %ld", status_kb("VmLck:"), vmlck);
    EXPECT(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "PR_SET_THP_DISABLE lost");
    EXPECT(status_kb("THP_enabled:") == 0, "THP_enabled: %ld in /proc/self/status", status_kb("THP_enabled:"));

    // Behaviour in a child forked now.
    pid_t c = fork();
    if (c == 0) {
        int bad = 0;
        unsigned char v;
        if (mincore(areas[DONTFORK], 4096, &v) == 0 || errno != ENOMEM) { printf("FAIL: child: the MADV_DONTFORK area is mapped in the child\n"); bad++; }
        if (mincore(areas[SPLIT] + (1UL << 20), 4096, &v) == 0 || errno != ENOMEM) { printf("FAIL: child: the MADV_DONTFORK middle of 'split' is mapped\n"); bad++; }
        if (!all(areas[SPLIT], 1UL << 20, 'a' + SPLIT)) { printf("FAIL: child: 'split' head lost\n"); bad++; }
        if (!all(areas[WIPE], AREA, 0)) { printf("FAIL: child: the MADV_WIPEONFORK area is not zero in the child\n"); bad++; }
        if (!all(areas[DOFORK], AREA, 'a' + DOFORK)) { printf("FAIL: child: the MADV_DOFORK area is missing in the child\n"); bad++; }
        if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1) { printf("FAIL: child: THP not disabled\n"); bad++; }
        _exit(bad);
    }
    int st = 0;
    waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child forked after restart: %d problems (above), status %#x", WEXITSTATUS(st), st);
    return fixture_finish();
}
