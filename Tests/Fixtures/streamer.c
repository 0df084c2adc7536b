// streamer sink PORT: accepts connections one after the other; reads each until end of
// stream, then answers "BYTES GAP_MS\n": how many bytes it read and the longest time between
// two reads (CLOCK_MONOTONIC), i.e. the longest stall the receiver saw.
// streamer source HOST PORT SECONDS: writes 64 KiB blocks as fast as TCP takes them for
// SECONDS, closes its side, waits for the sink's answer and prints
//   PASS bytes=N mbit_s=R sink_max_gap_ms=G
// or FAIL and why (a reset, a short count: a byte lost). Used by ssi-bench streams.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: streamer sink PORT | streamer source HOST PORT SECONDS\n"); return 2; }
    static char buf[65536];
    if (strcmp(argv[1], "sink") == 0) {
        int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_ANY) };
        if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 16)) { perror("streamer: bind/listen"); return 1; }
        for (;;) {
            int c = accept(ls, NULL, NULL);
            if (c < 0) { if (errno == EINTR) continue; perror("accept"); return 1; }
            unsigned long long total = 0;
            double last = 0, gap = 0;
            for (;;) {
                ssize_t n = read(c, buf, sizeof buf);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                double t = now();
                if (last > 0 && t - last > gap) gap = t - last;
                // Each long gap on the log, with its end on CLOCK_MONOTONIC (in ms, modulo
                // 10^6 ms, as the daemons' SSI_PROFILE lines print their "at"): lines up with
                // a move's steps.
                if (last > 0 && t - last > 0.02) {
                    double ms = t * 1000;
                    fprintf(stderr, "streamer: gap %.1f ms ending at %.3f\n", (t - last) * 1000, ms - 1e6 * (double)(long long)(ms / 1e6));
                }
                last = t;
                total += n;
            }
            char line[64];
            int n = snprintf(line, sizeof line, "%llu %.1f\n", total, gap * 1000);
            (void)!write(c, line, n);
            close(c);
        }
    }
    if (argc < 5) { fprintf(stderr, "usage: streamer source HOST PORT SECONDS\n"); return 2; }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { printf("FAIL connect: %s\n", strerror(errno)); return 1; }
    memset(buf, 'x', sizeof buf);
    double seconds = atof(argv[4]), t0 = now();
    unsigned long long sent = 0;
    while (now() - t0 < seconds) {
        ssize_t n = write(s, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { printf("FAIL write after %llu bytes: %s\n", sent, strerror(errno)); return 1; }
        sent += n;
    }
    shutdown(s, SHUT_WR);
    char line[64] = {0};
    ssize_t got = 0, n;
    while ((n = read(s, line + got, sizeof line - 1 - got)) > 0) got += n;
    double secs = now() - t0;
    unsigned long long recvd = 0; double gap = 0;
    if (sscanf(line, "%llu %lf", &recvd, &gap) != 2) { printf("FAIL no answer from the sink (%s)\n", n < 0 ? strerror(errno) : "end of stream"); return 1; }
    if (recvd != sent) { printf("FAIL sent %llu bytes, the sink read %llu\n", sent, recvd); return 1; }
    printf("PASS bytes=%llu mbit_s=%.0f sink_max_gap_ms=%.1f\n", sent, sent * 8 / secs / 1e6, gap);
    return 0;
}
