// Per-process state the engine lost (found by probing, December 2026), set the way programs
// and service managers set it:
//   mdwe      prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN) last, as systemd's
//             MemoryDenyWriteExecute= does on recent versions: after restart PR_GET_MDWE
//             still says so and a new writable+executable mapping is still refused (it was
//             allowed: a security setting silently dropped); a child forked after it has it too
//   merge     prctl(PR_SET_MEMORY_MERGE, 1) (KSM for the whole process; skipped with a note
//             on a kernel without KSM)
//   filter    /proc/self/coredump_filter 0x3b (core(5)), in the parent and a child
//   onfault   an 8-page area locked with mlock2(MLOCK_ONFAULT): VmFlags "lo lf", and its
//             untouched pages still not resident (a plain mlock faults them all in)
#include "fixture.h"
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

static void filter(char *out, size_t n) {
    int fd = open("/proc/self/coredump_filter", O_RDONLY);
    ssize_t r = read(fd, out, n - 1);
    out[r > 0 ? r : 0] = 0;
    if (r > 0 && out[r - 1] == '\n') out[r - 1] = 0;
    close(fd);
}

// The VmFlags line of the area starting at `start`.
static void vmflags(void *start, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    out[0] = 0;
    unsigned long s = (unsigned long)start;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) { in = a == s; continue; }
        if (in && !strncmp(line, "VmFlags:", 8)) { snprintf(out, n, "%s", line + 8); break; }
    }
    fclose(f);
}

// Pages of [p, p + len) resident now.
static int resident(char *p, size_t len) {
    unsigned char v[64];
    if (mincore(p, len, v)) return -1;
    int n = 0;
    for (size_t i = 0; i < len / 4096; i++) n += v[i] & 1;
    return n;
}

static int check_mdwe(const char *who) {
    int before = fixture_failures;
    EXPECT(prctl(PR_GET_MDWE, 0, 0, 0, 0) == PR_MDWE_REFUSE_EXEC_GAIN, "%s: PR_GET_MDWE %d", who, prctl(PR_GET_MDWE, 0, 0, 0, 0));
    void *x = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(x == MAP_FAILED, "%s: a new writable and executable mapping is allowed again", who);
    char f[32];
    filter(f, sizeof f);
    EXPECT(!strcmp(f, "0000003b"), "%s: coredump_filter %s, was 0000003b", who, f);
    return fixture_failures == before;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t pg = 4096;
    char *of = mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT(syscall(SYS_mlock2, of, 8 * pg, MLOCK_ONFAULT) == 0, "setup: mlock2: %s", strerror(errno));
    of[0] = 1;
    of[3 * pg] = 3;
    char flags[256];
    vmflags(of, flags, sizeof flags);
    EXPECT(strstr(flags, " lo") && strstr(flags, " lf"), "setup: VmFlags%s", flags);
    int merge = prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0;
    if (!merge) printf("note: PR_SET_MEMORY_MERGE: %s (no KSM in this kernel): not checked\n", strerror(errno));
    int fd = open("/proc/self/coredump_filter", O_WRONLY);
    EXPECT(fd >= 0 && write(fd, "0x3b", 4) == 4, "setup: coredump_filter: %s", strerror(errno));
    close(fd);
    EXPECT(prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0, "setup: PR_SET_MDWE: %s", strerror(errno));
    int go[2];
    pipe(go);
    pid_t child = fork();
    if (child == 0) {
        char b;
        read(go[0], &b, 1);
        _exit(check_mdwe("child") ? 0 : 1);
    }
    EXPECT(resident(of, 8 * pg) == 2, "setup: %d pages resident, not 2", resident(of, 8 * pg));

    fixture_ready();
    fixture_wait();

    check_mdwe("parent");
    if (merge) EXPECT(prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == 1, "PR_GET_MEMORY_MERGE %d", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0));
    vmflags(of, flags, sizeof flags);
    EXPECT(strstr(flags, " lo") && strstr(flags, " lf"), "onfault: VmFlags%s", flags);
    EXPECT(resident(of, 8 * pg) == 2, "onfault: %d of 8 pages resident: locked in, not on fault", resident(of, 8 * pg));
    EXPECT(of[0] == 1 && of[3 * pg] == 3 && of[5 * pg] == 0, "onfault: content");
    write(go[1], "g", 1);
    int st = 0;
    EXPECT(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's checks failed (status %#x)", st);
    return fixture_finish();
}
