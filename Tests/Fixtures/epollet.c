// Edge-triggered epoll entries across checkpoint and restart (epoll(7)): one report per
// edge. Five pipes in one epoll set, each with 3 bytes queued, read by nobody:
//   A  EPOLLET, its edge reported before the checkpoint: no report until new data;
//   B  EPOLLET, data written after the last epoll_wait: reported once;
//   C  level-triggered, reported before: reported again (and again);
//   D  EPOLLET|EPOLLONESHOT, reported before (disarmed): never again until re-armed;
//   E  EPOLLET|EPOLLONESHOT, armed, data written after the last wait: reported once.
// After SIGUSR1: one epoll_wait(0) must give exactly B, C, E; a second exactly C; then a new
// write into A gives A once. Run with lifecycle.sh with and without --continue.
#include "fixture.h"
#include <sys/epoll.h>

static int pipes[5][2];

static unsigned collect(int ep) {
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, 0);
    unsigned mask = 0;
    for (int i = 0; i < n; i++) mask |= 1u << ev[i].data.u32;
    return mask;
}

static void names(unsigned mask, char *out) {
    int k = 0;
    for (int i = 0; i < 5; i++) if (mask & (1u << i)) out[k++] = (char)('A' + i);
    out[k] = 0;
}

int main(void) {
    int ep = epoll_create1(0);
    unsigned flags[5] = { EPOLLIN | EPOLLET, EPOLLIN | EPOLLET, EPOLLIN, EPOLLIN | EPOLLET | EPOLLONESHOT, EPOLLIN | EPOLLET | EPOLLONESHOT };
    for (int i = 0; i < 5; i++) {
        if (pipe(pipes[i])) return 4;
        struct epoll_event e = { .events = flags[i], .data.u32 = (unsigned)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, pipes[i][0], &e);
    }
    // A, C and D: written, then reported.
    for (int i = 0; i < 5; i++) if (i == 0 || i == 2 || i == 3) { if (write(pipes[i][1], "abc", 3) != 3) return 4; }
    char got[8];
    unsigned first = collect(ep);
    names(first, got);
    if (first != ((1u << 0) | (1u << 2) | (1u << 3))) { printf("setup: first report %s, expected ACD\n", got); return 4; }
    // B and E: written after the last report.
    if (write(pipes[1][1], "abc", 3) != 3 || write(pipes[4][1], "abc", 3) != 3) return 4;
    fixture_ready();
    fixture_wait();

    unsigned now = collect(ep);
    names(now, got);
    EXPECT(now == ((1u << 1) | (1u << 2) | (1u << 4)), "first epoll_wait after: %s, expected BCE", got);
    now = collect(ep);
    names(now, got);
    EXPECT(now == (1u << 2), "second epoll_wait after: %s, expected C (level-triggered) alone", got);
    if (write(pipes[0][1], "d", 1) != 1) return 4;
    now = collect(ep);
    names(now, got);
    EXPECT(now == ((1u << 0) | (1u << 2)), "after a new write into A: %s, expected AC", got);
    return fixture_finish();
}
