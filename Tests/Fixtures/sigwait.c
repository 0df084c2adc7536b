// A program that waits with no timeout, as event loops do, and whose signal handlers wake
// it through an eventfd (as Ruby's do): `ppoll` (a temporary signal mask: its signals stay
// unblocked while a checkpoint holds it) or `poll` (timeout -1). Prints READY, then one
// "woke r=R got=G" line each time the wait returns; G counts SIGUSR2 handler runs.
// Used by ScenarioTests (fourth probing round, December 2026): a SIGUSR2 sent while the
// checkpoint held a thread in ppoll was lost (Ruby's system() hung on its lost SIGCHLD), and
// a poll(-1) resumed after an earlier checkpoint returned EINTR after a restart.
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static int efd;
static volatile sig_atomic_t got;
static void on_usr2(int s) { (void)s; uint64_t one = 1; got++; if (write(efd, &one, 8) < 0) _exit(3); }

int main(int argc, char **argv) {
    int use_poll = argc > 1 && !strcmp(argv[1], "poll");
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction sa = { .sa_handler = on_usr2 };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, 0);
    setvbuf(stdout, 0, _IONBF, 0);
    printf("READY\n");
    for (;;) {
        struct pollfd p = { efd, POLLIN, 0 };
        int r = use_poll ? poll(&p, 1, -1) : ppoll(&p, 1, NULL, NULL);
        uint64_t v = 0;
        if (read(efd, &v, 8) < 0) v = 0;
        printf("woke r=%d got=%d\n", r, (int)got);
    }
}
