// udpping server PORT: answers every datagram with the same bytes (UDP, every address).
// udpping client HOST PORT SECONDS: sends a numbered datagram every millisecond for SECONDS
// and counts the answers; prints
//   PASS sent=N answered=M max_gap_ms=G
// (G: the longest time without an answer, CLOCK_MONOTONIC), or FAIL and why: fewer than
// half answered, none in the last half second, or an answer that is not one of ours. A
// datagram may be lost while a peer moves (UDP promises nothing); the socket, its address
// and port must survive the move. Used by the streams tests (application addresses).
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: udpping server PORT | udpping client HOST PORT SECONDS\n"); return 2; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (strcmp(argv[1], "server") == 0) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_ANY) };
        if (bind(s, (struct sockaddr *)&a, sizeof a)) { perror("udpping: bind"); return 1; }
        char buf[2048];
        for (;;) {
            struct sockaddr_in from; socklen_t fl = sizeof from;
            ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
            if (n < 0) { if (errno == EINTR) continue; perror("recvfrom"); return 1; }
            sendto(s, buf, n, 0, (struct sockaddr *)&from, fl);
        }
    }
    if (argc < 5) { fprintf(stderr, "usage: udpping client HOST PORT SECONDS\n"); return 2; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { printf("FAIL connect: %s\n", strerror(errno)); return 1; }
    double seconds = atof(argv[4]), t0 = now(), last = t0, maxgap = 0, next = t0;
    long sent = 0, answered = 0;
    while (now() - t0 < seconds + 0.2) {
        if (now() >= next && now() - t0 < seconds) {
            char msg[32]; int n = snprintf(msg, sizeof msg, "udpping %ld", ++sent);
            send(s, msg, n, 0);   // ECONNREFUSED from an earlier ICMP is not fatal here
            next += 0.001;
        }
        struct pollfd p = { .fd = s, .events = POLLIN };
        if (poll(&p, 1, 1) > 0) {
            char buf[64]; ssize_t n = recv(s, buf, sizeof buf - 1, 0);
            if (n <= 0) continue;
            buf[n] = 0;
            long k = 0;
            if (sscanf(buf, "udpping %ld", &k) != 1 || k < 1 || k > sent) { printf("FAIL answer not ours: %s\n", buf); return 1; }
            answered++;
            double t = now();
            if (t - last > maxgap) maxgap = t - last;
            last = t;
        }
    }
    if (answered * 2 < sent) { printf("FAIL sent=%ld answered=%ld\n", sent, answered); return 1; }
    if (now() - last > 0.5 + 0.2) { printf("FAIL no answer in the last half second (sent=%ld answered=%ld)\n", sent, answered); return 1; }
    printf("PASS sent=%ld answered=%ld max_gap_ms=%.1f\n", sent, answered, maxgap * 1000);
    return 0;
}
