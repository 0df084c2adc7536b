// lineclient HOST PORT SECONDS [WINDOW]: one TCP connection to a line-echo server; sends
// numbered lines ("1\n", "2\n", ...), at most WINDOW (default 1) unanswered at a time, and
// checks that every answer is the next number, in order, for SECONDS. SECONDS may be
// "until:PATH": until PATH exists (at most 300 s), for a test whose steps take a time it
// cannot know in advance (a node cut off comes back in 1-10 s). Prints
//   PASS lines=N rps=R p50_us=A p99_us=B max_gap_ms=G
// where max_gap_ms is the longest time without an answer (CLOCK_MONOTONIC), or FAIL and why.
// A reset, an end of stream, a wrong or missing number is a FAIL: the connection must
// survive whatever happens to the server (its migration).
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *stop_file;
static double seconds, checked;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
// Whether to go on sending: the time is not up, and the stop file (looked for every 50 ms,
// not per line) is not there.
static int going(double t0) {
    double t = now();
    if (t - t0 >= seconds) return 0;
    if (stop_file && t - checked >= 0.05) {
        checked = t;
        if (access(stop_file, F_OK) == 0) { seconds = t - t0; return 0; }
    }
    return 1;
}
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: lineclient HOST PORT SECONDS [WINDOW]\n"); return 2; }
    // A write to a reset connection is a FAIL to print, not a silent death by SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    if (strncmp(argv[3], "until:", 6) == 0) { stop_file = argv[3] + 6; seconds = 300; } else seconds = atof(argv[3]);
    int window = argc > 4 ? atoi(argv[4]) : 1, one = 1;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { printf("FAIL connect: %s\n", strerror(errno)); return 1; }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t cap = 1 << 20, nlat = 0;
    double *lat = malloc(cap * sizeof *lat), *sent = calloc(window + 1, sizeof *sent);
    long next_send = 1, next_want = 1;
    double t0 = now(), last = t0, maxgap = 0;
    char in[65536]; size_t have = 0;
    while (going(t0) || next_want < next_send) {
        while (next_send - next_want < window && going(t0)) {
            char line[32]; int n = snprintf(line, sizeof line, "%ld\n", next_send);
            if (write(s, line, n) != n) { printf("FAIL write at line %ld: %s\n", next_send, strerror(errno)); return 1; }
            sent[next_send % (window + 1)] = now();
            next_send++;
        }
        ssize_t r = read(s, in + have, sizeof in - have - 1);
        if (r <= 0) { printf("FAIL %s at line %ld\n", r == 0 ? "end of stream" : strerror(errno), next_want); return 1; }
        have += r;
        char *p = in, *nl;
        while ((nl = memchr(p, '\n', in + have - p))) {
            *nl = 0;
            long got = atol(p);
            if (got != next_want) { printf("FAIL expected %ld, got '%s'\n", next_want, p); return 1; }
            double t = now();
            if (t - last > maxgap) maxgap = t - last;
            last = t;
            if (nlat < cap) lat[nlat++] = t - sent[got % (window + 1)];
            next_want++;
            p = nl + 1;
        }
        have = in + have - p;
        memmove(in, p, have);
    }
    double el = now() - t0;
    qsort(lat, nlat, sizeof *lat, cmp);
    printf("PASS lines=%ld rps=%.0f p50_us=%.0f p99_us=%.0f max_gap_ms=%.1f\n", next_want - 1, (next_want - 1) / el,
           nlat ? lat[nlat / 2] * 1e6 : 0, nlat ? lat[nlat * 99 / 100] * 1e6 : 0, maxgap * 1e3);
    return 0;
}
