// Shared by the test programs: each sets up one piece of state, prints READY, waits for
// SIGUSR1 (sent by the test after checkpoint/kill/restart), checks its state and prints
// PASS or FAIL with the reason, then exits 0 or 1.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t fixture_go;
static int fixture_failures;

static void fixture_on_usr1(int sig) { (void)sig; fixture_go = 1; }

// SIGUSR1 sets fixture_go (children of a test program call this; the parent calls
// fixture_ready).
static void fixture_catch_usr1(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fixture_on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
}

static void fixture_ready(void) {
    fixture_catch_usr1();
    printf("READY %d\n", getpid());
    fflush(stdout);
}

// pause() keeps the process inside a blocking syscall, the case that needs the kernel's
// syscall-restart rules at restart.
static void fixture_wait(void) {
    while (!fixture_go) pause();
}

#define EXPECT(cond, ...) do { if (!(cond)) { fixture_failures++; printf("FAIL: " __VA_ARGS__); printf("\n"); fflush(stdout); } } while (0)

static int fixture_finish(void) {
    printf(fixture_failures ? "FAIL (%d)\n" : "PASS\n", fixture_failures);
    fflush(stdout);
    return fixture_failures ? 1 : 0;
}
