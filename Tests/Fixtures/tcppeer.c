// The peer OUTSIDE the application for tcpexternal.c (not a fixture: lifecycle.sh --peer runs
// it as a plain process before the application starts). It listens on 127.0.0.1 with a small
// receive buffer, prints "PORT n", accepts one connection and then:
//   reads "HELLO\n"; sends 3000 bytes of pattern A ((i*7+3) & 0xff) that the application does
//   not read before its checkpoint; waits for the file "go" in its cwd (created by the harness
//   once the application was restarted and told to go on), reading nothing meanwhile so that
//   the application's send queue stays full across the checkpoint; then reads pattern B
//   ('a' + i % 26) up to '#', then a decimal count and '\n' that must equal the bytes of B it
//   got; sends "ACK\n"; reads EOF (the application closes).
// It prints "PEER PASS", or "PEER FAIL: why" (a reset, a wrong byte, a short count: anything
// a peer would notice).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void fail(const char *why) { printf("PEER FAIL: %s (errno %d %s)\n", why, errno, strerror(errno)); fflush(stdout); exit(1); }

static int readn(int s, char *b, int n) { int got = 0; while (got < n) { ssize_t r = read(s, b + got, n - got); if (r <= 0) return r < 0 ? -1 : got; got += r; } return got; }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 1);
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    printf("PORT %d\n", ntohs(a.sin_port));
    alarm(300);
    int s = accept(l, NULL, NULL);
    if (s < 0) fail("accept");
    char b[64];
    if (readn(s, b, 6) != 6 || memcmp(b, "HELLO\n", 6) != 0) fail("no HELLO");
    char A[3000];
    for (int i = 0; i < 3000; i++) A[i] = (i * 7 + 3) & 0xff;
    if (write(s, A, sizeof A) != (ssize_t)sizeof A) fail("send A");
    printf("peer: sent A, waiting for go\n");
    struct stat st;
    while (stat("go", &st) != 0) usleep(50000);
    printf("peer: go\n");
    long n = 0;
    for (;;) {
        char c;
        ssize_t r = read(s, &c, 1);
        if (r == 0) fail("EOF in the middle of B");
        if (r < 0) fail("read B (connection reset?)");
        if (c == '#') break;
        if (c != 'a' + n % 26) { printf("PEER FAIL: byte %ld of B is %d, expected %d\n", n, c, 'a' + (int)(n % 26)); exit(1); }
        n++;
    }
    char num[32] = {0};
    for (int i = 0; i < 31; i++) { if (read(s, num + i, 1) != 1) fail("read count"); if (num[i] == '\n') { num[i] = 0; break; } }
    if (atol(num) != n) { printf("PEER FAIL: got %ld bytes of B, the application sent %s\n", n, num); exit(1); }
    if (write(s, "ACK\n", 4) != 4) fail("send ACK");
    ssize_t r = read(s, b, sizeof b);
    if (r != 0) fail("expected EOF after ACK");
    printf("peer: %ld bytes of B in order\nPEER PASS\n", n);
    return 0;
}
