// Signal state survives: handlers with flags and masks, an ignored signal, the blocked mask,
// pending signals with their siginfo (a standard one and two queued real-time ones, in
// order), and the alternate signal stack (a handler runs on it after restart).
#include "fixture.h"

static char altstack[65536];
static volatile int got_usr2_value = -1, usr2_on_altstack = 0, rt_count = 0, rt_values[4];

static void on_usr2(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)ctx;
    char here;
    got_usr2_value = si->si_value.sival_int;
    usr2_on_altstack = &here >= altstack && &here < altstack + sizeof altstack;
}
static void on_rt(int sig, siginfo_t *si, void *ctx) { (void)sig; (void)ctx; if (rt_count < 4) rt_values[rt_count++] = si->si_value.sival_int; }
static void on_alrm(int sig) { (void)sig; }

int main(void) {
    struct sigaction sa, before[3];
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaction(SIGUSR2, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_NODEFER | SA_RESETHAND;
    sigaction(SIGALRM, &sa, NULL);
    signal(SIGHUP, SIG_IGN);
    sigaction(SIGUSR2, NULL, &before[0]);
    sigaction(SIGRTMIN + 1, NULL, &before[1]);
    sigaction(SIGALRM, NULL, &before[2]);
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
    sigaltstack(&ss, NULL);

    sigset_t block, oldmask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGRTMIN + 1);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &oldmask);
    union sigval v;
    v.sival_int = 42; sigqueue(getpid(), SIGUSR2, v);
    v.sival_int = 7; sigqueue(getpid(), SIGRTMIN + 1, v);
    v.sival_int = 8; sigqueue(getpid(), SIGRTMIN + 1, v);

    fixture_ready();
    fixture_wait();

    struct sigaction after;
    int sigs[3] = { SIGUSR2, SIGRTMIN + 1, SIGALRM };
    for (int i = 0; i < 3; i++) {
        sigaction(sigs[i], NULL, &after);
        EXPECT(after.sa_sigaction == before[i].sa_sigaction, "signal %d handler %p != %p", sigs[i], (void *)after.sa_sigaction, (void *)before[i].sa_sigaction);
        EXPECT(after.sa_flags == before[i].sa_flags, "signal %d flags %x != %x", sigs[i], after.sa_flags, before[i].sa_flags);
        EXPECT(memcmp(&after.sa_mask, &before[i].sa_mask, 8) == 0, "signal %d mask differs", sigs[i]);
    }
    sigaction(SIGHUP, NULL, &after);
    EXPECT(after.sa_handler == SIG_IGN, "SIGHUP no longer ignored");
    sigaction(SIGINT, NULL, &after);
    EXPECT(after.sa_handler == SIG_DFL, "SIGINT not default");
    sigset_t now, pend;
    sigprocmask(SIG_BLOCK, NULL, &now);
    EXPECT(sigismember(&now, SIGUSR2) && sigismember(&now, SIGTERM) && sigismember(&now, SIGRTMIN + 1) && !sigismember(&now, SIGUSR1), "blocked mask changed");
    sigpending(&pend);
    EXPECT(sigismember(&pend, SIGUSR2) && sigismember(&pend, SIGRTMIN + 1), "pending signals lost");
    stack_t cur;
    sigaltstack(NULL, &cur);
    EXPECT(cur.ss_sp == altstack && cur.ss_size == sizeof altstack, "sigaltstack %p/%zu", cur.ss_sp, cur.ss_size);
    sigprocmask(SIG_SETMASK, &oldmask, NULL);
    EXPECT(got_usr2_value == 42, "SIGUSR2 siginfo value %d, expected 42", got_usr2_value);
    EXPECT(usr2_on_altstack, "SIGUSR2 handler did not run on the alternate stack");
    EXPECT(rt_count == 2 && rt_values[0] == 7 && rt_values[1] == 8, "real-time signals: %d delivered (%d, %d)", rt_count, rt_values[0], rt_values[1]);
    return fixture_finish();
}
