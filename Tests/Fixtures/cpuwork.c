/* cpuwork: a CPU-bound job of fixed work, for `ssi-bench balance`.
 *
 *   cpuwork --calibrate        prints how many work units one CPU-second holds
 *   cpuwork UNITS              does UNITS units of work, then prints "DONE UNITS CPU" (the
 *                              CPU-seconds the work took) and exits 0
 *
 * The progress lives in the process's memory, so a job that is migrated (checkpointed,
 * restored elsewhere) goes on where it was: the work is the same wherever it runs, and
 * only the CPU it gets there changes how long it takes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define UNIT 100000UL  /* loop iterations in one unit */

static volatile unsigned long sink;

static void unit(void) {
    unsigned long x = sink;
    for (unsigned long i = 0; i < UNIT; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* The CPU time the work took, wherever it ran: a restored process is a new task whose CPU
 * clock starts again near 0 (clock_gettime(2): CLOCK_PROCESS_CPUTIME_ID measures this
 * process), so the time is summed in memory, which a migration keeps, one step at a time,
 * and a step where the clock went back counts from its new start. */
static double spent, last = -1;

static void account(void) {
    double now = cpu_seconds();
    if (last >= 0) spent += now >= last ? now - last : now;
    last = now;
}

int main(int argc, char **argv) {
    if (argc == 2 && argv[1][0] == '-') {
        double t0 = cpu_seconds();
        unsigned long n = 0;
        while (cpu_seconds() - t0 < 0.5) { unit(); n++; }
        printf("%lu\n", (unsigned long)(n / (cpu_seconds() - t0)));
        return 0;
    }
    if (argc != 2) { fprintf(stderr, "usage: cpuwork --calibrate | cpuwork UNITS\n"); return 2; }
    volatile unsigned long done = 0;
    unsigned long units = strtoul(argv[1], NULL, 10);
    account();
    while (done < units) { unit(); done++; account(); }
    printf("DONE %lu %.4f\n", units, spent);
    return 0;
}
