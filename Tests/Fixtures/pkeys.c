// Memory protection keys (pkeys(7), x86 PKU; V8 and other JITs use them): area A has key k1
// (allocated write-disabled), area B key k2, which the main thread's PKRU denies and a worker's
// allows. The areas' keys and the allocation were lost at restart (found by the fourth probing
// round, December 2026): A became writable, and a new pkey_alloc handed out a key in use.
// After restart: each area's key (smaps), each thread's PKRU, the faults (SEGV_PKUERR with the
// key), and pkey_alloc gives a new key. Without protection keys (no pku): SKIP.
#include "fixture.h"
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/mman.h>

static sigjmp_buf jb;
static volatile int segv_code, segv_pkey;
static void on_segv(int s, siginfo_t *si, void *u) {
    (void)s; (void)u;
    segv_code = si->si_code;
    segv_pkey = si->si_pkey;
    siglongjmp(jb, 1);
}

static int smaps_pkey(void *addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512]; int in = 0, v = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, ' ') && line[strlen(line) - 1] == '\n' && strstr(line, "-") == line + strcspn(line, "-")) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi; continue;
        }
        if (in && !strncmp(line, "ProtectionKey:", 14)) { v = atoi(line + 14); break; }
    }
    fclose(f);
    return v;
}

static volatile char *A, *B;
static int k1, k2;
static volatile int wgo, wread = -1, wpkru_k2 = -1;
static void *worker(void *x) {
    (void)x;
    while (!wgo) usleep(10000);
    wpkru_k2 = pkey_get(k2);
    wread = B[5];
    return NULL;
}

// 1 when the access faulted with SEGV_PKUERR for key `k`
static int faults(volatile char *p, int write, int k) {
    segv_code = 0; segv_pkey = -1;
    int r1 = pkey_get(k1), r2 = pkey_get(k2);
    if (sigsetjmp(jb, 1) == 0) {
        if (write) p[0] = 9; else { volatile char c = p[0]; (void)c; }
        return 0;
    }
    pkey_set(k1, r1); pkey_set(k2, r2);   // the handler ran with the default PKRU; no sigreturn
    return segv_code == SEGV_PKUERR && segv_pkey == k ? 1 : -1;
}

int main(void) {
    struct sigaction sa = { 0 }; sa.sa_sigaction = on_segv; sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    k1 = pkey_alloc(0, PKEY_DISABLE_WRITE);
    if (k1 < 0) {
        printf("SKIP: no memory protection keys here (pkey_alloc: %s)\n", strerror(errno));
        fixture_ready(); fixture_wait(); return fixture_finish();
    }
    k2 = pkey_alloc(0, 0);
    A = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    B = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pkey_set(k1, 0); A[0] = 1; B[5] = 42; pkey_set(k1, PKEY_DISABLE_WRITE);
    if (pkey_mprotect((void *)A, 8192, PROT_READ | PROT_WRITE, k1) || pkey_mprotect((void *)B, 8192, PROT_READ | PROT_WRITE, k2)) { printf("pkey_mprotect: %s\n", strerror(errno)); return 2; }
    pthread_t th; pthread_create(&th, NULL, worker, NULL);
    usleep(50000);
    pkey_set(k2, PKEY_DISABLE_ACCESS);   // main thread only
    if (faults(A, 1, k1) != 1 || faults(B, 0, k2) != 1) { printf("setup: no fault\n"); return 2; }
    fixture_ready();
    fixture_wait();

    EXPECT(smaps_pkey((void *)A) == k1, "A ProtectionKey %d want %d", smaps_pkey((void *)A), k1);
    EXPECT(smaps_pkey((void *)B) == k2, "B ProtectionKey %d want %d", smaps_pkey((void *)B), k2);
    EXPECT(pkey_get(k1) == PKEY_DISABLE_WRITE, "main PKRU for k1: %d", pkey_get(k1));
    EXPECT(pkey_get(k2) == PKEY_DISABLE_ACCESS, "main PKRU for k2: %d", pkey_get(k2));
    int r = faults(A, 1, k1);
    EXPECT(r == 1, "write to A (key %d, write-disabled): %s (code %d pkey %d)", k1, r == 0 ? "allowed" : "other fault", segv_code, segv_pkey);
    EXPECT(A[0] == 1, "A content");
    r = faults(B, 0, k2);
    EXPECT(r == 1, "main read of B (key %d, access-disabled in main): %s", k2, r == 0 ? "allowed" : "other fault");
    wgo = 1;
    pthread_join(th, NULL);
    EXPECT(wpkru_k2 == 0 && wread == 42, "worker: PKRU for k2 %d, read %d", wpkru_k2, wread);
    int k3 = pkey_alloc(0, 0);
    EXPECT(k3 != k1 && k3 != k2 && k3 > 0, "pkey_alloc after restart gave %d (k1 %d k2 %d already allocated)", k3, k1, k2);
    EXPECT(pkey_free(k1) == 0, "pkey_free(k1): %s", strerror(errno));
    return fixture_finish();
}
