// An AVX computation in flight: ymm0-ymm15 hold values while the program spins in a loop
// that never touches them; after restart they must be intact, as must MXCSR and the x87 stack.
#include "fixture.h"
#include <stdint.h>

static volatile int flag;
static void on_usr1(int s) { (void)s; flag = 1; }

int main(void) {
    static uint64_t in[16][4] __attribute__((aligned(32))), out[16][4] __attribute__((aligned(32)));
    for (int r = 0; r < 16; r++) for (int k = 0; k < 4; k++) in[r][k] = 0x0123456789abcdefULL * (r + 1) + k;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    // Round toward zero and flush-to-zero: not the default MXCSR (0x1f80).
    unsigned int mx = 0x1f80 | 0x6000 | 0x8000, mxafter = 0;
    __asm__ volatile("ldmxcsr %0" :: "m"(mx));
    double x87in = 3.25, x87out = 0;
    printf("READY %d\n", getpid());
    fflush(stdout);
    __asm__ volatile(
        "fldl %[x]\n"
        "vmovdqa 0(%[in]), %%ymm0\n vmovdqa 32(%[in]), %%ymm1\n vmovdqa 64(%[in]), %%ymm2\n vmovdqa 96(%[in]), %%ymm3\n"
        "vmovdqa 128(%[in]), %%ymm4\n vmovdqa 160(%[in]), %%ymm5\n vmovdqa 192(%[in]), %%ymm6\n vmovdqa 224(%[in]), %%ymm7\n"
        "vmovdqa 256(%[in]), %%ymm8\n vmovdqa 288(%[in]), %%ymm9\n vmovdqa 320(%[in]), %%ymm10\n vmovdqa 352(%[in]), %%ymm11\n"
        "vmovdqa 384(%[in]), %%ymm12\n vmovdqa 416(%[in]), %%ymm13\n vmovdqa 448(%[in]), %%ymm14\n vmovdqa 480(%[in]), %%ymm15\n"
        "1: pause\n cmpl $0, %[flag]\n je 1b\n"
        "vmovdqa %%ymm0, 0(%[out])\n vmovdqa %%ymm1, 32(%[out])\n vmovdqa %%ymm2, 64(%[out])\n vmovdqa %%ymm3, 96(%[out])\n"
        "vmovdqa %%ymm4, 128(%[out])\n vmovdqa %%ymm5, 160(%[out])\n vmovdqa %%ymm6, 192(%[out])\n vmovdqa %%ymm7, 224(%[out])\n"
        "vmovdqa %%ymm8, 256(%[out])\n vmovdqa %%ymm9, 288(%[out])\n vmovdqa %%ymm10, 320(%[out])\n vmovdqa %%ymm11, 352(%[out])\n"
        "vmovdqa %%ymm12, 384(%[out])\n vmovdqa %%ymm13, 416(%[out])\n vmovdqa %%ymm14, 448(%[out])\n vmovdqa %%ymm15, 480(%[out])\n"
        "fstpl %[xo]\n"
        : [xo] "=m"(x87out)
        : [in] "r"(in), [out] "r"(out), [flag] "m"(flag), [x] "m"(x87in)
        : "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
          "xmm12", "xmm13", "xmm14", "xmm15");
    __asm__ volatile("stmxcsr %0" : "=m"(mxafter));
    for (int r = 0; r < 16; r++) for (int k = 0; k < 4; k++)
        EXPECT(in[r][k] == out[r][k], "ymm%d lane %d: %llx != %llx", r, k, (unsigned long long)out[r][k], (unsigned long long)in[r][k]);
    EXPECT((mxafter & 0xffc0) == (mx & 0xffc0), "MXCSR %x, expected %x", mxafter, mx);
    EXPECT(x87out == 3.25, "x87 st(0) = %f", x87out);
    return fixture_finish();
}
