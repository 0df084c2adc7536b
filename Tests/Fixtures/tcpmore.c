// TCP states, one per argument (none: all but synsent):
//  mapped   dual-stack listener on [::]:p (IPV6_V6ONLY 0), an IPv4 client connected to
//           127.0.0.1:p, accepted as ::ffff:127.0.0.1; "c2s"/"s2c" queued each way
//  shutrd   a connected pair, one end shutdown(SHUT_RD) (ESTABLISHED, nothing sent): recv 0
//  big      a connected pair, both sides wrote until EAGAIN (MBs each way), nothing read;
//           after restart every byte read back in order (a counter pattern)
//  linger0  a connected pair, A has SO_LINGER {1,0}: after restart close(A) resets B (ECONNRESET)
//  synsent  non-blocking connect to 192.0.2.77:9 (on eth0's subnet, no such host): SYN_SENT
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
static int has(int argc, char **argv, const char *m) { for (int i = 1; i < argc; i++) if (!strcmp(argv[i], m)) return 1; return argc == 1 && strcmp(m, "synsent"); }
static short rev(int fd) { struct pollfd p = { fd, POLLIN|POLLOUT|POLLRDHUP, 0 }; poll(&p, 1, 0); return p.revents; }
static void pair(int *c, int *s) {
    int L = socket(AF_INET, SOCK_STREAM, 0); struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(L, (void*)&a, sizeof a); listen(L, 1); socklen_t l = sizeof a; getsockname(L, (void*)&a, &l);
    *c = socket(AF_INET, SOCK_STREAM, 0); connect(*c, (void*)&a, sizeof a); *s = accept(L, NULL, NULL); close(L);
}
static unsigned char pat(long i, int side) { return (unsigned char)((i * 7 + (i >> 9) + side * 13) & 0xff); }
static long fill(int fd, int side) {
    static unsigned char b[65536]; long total = 0; fcntl(fd, F_SETFL, O_NONBLOCK);
    for (;;) { for (int i = 0; i < (int)sizeof b; i++) b[i] = pat(total + i, side);
        ssize_t n = send(fd, b, sizeof b, MSG_NOSIGNAL); if (n <= 0) { usleep(20000); n = send(fd, b, sizeof b, MSG_NOSIGNAL); if (n <= 0) break; } total += n; }
    return total;
}
static long drain(int fd, int side, long want) {
    static unsigned char b[65536]; long got = 0; fcntl(fd, F_SETFL, 0);
    while (got < want) { struct pollfd p = { fd, POLLIN, 0 }; if (poll(&p, 1, 2000) != 1) break;
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT); if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) if (b[i] != pat(got + i, side)) { printf("FAIL: big: byte %ld differs\n", got + i); return -got; }
        got += n; }
    return got;
}
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    int ML = -1, MC = -1, MS = -1, RC = -1, RS = -1, BC = -1, BS = -1, LC = -1, LS = -1, SS = -1;
    short r0 = 0, r1 = 0; long bc = 0, bs = 0;
    struct sockaddr_in6 mn0, mp0; socklen_t l;
    if (has(argc, argv, "mapped")) {
        ML = socket(AF_INET6, SOCK_STREAM, 0); int zero = 0; setsockopt(ML, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = in6addr_any };
        EXPECT(bind(ML, (void*)&a6, sizeof a6) == 0 && listen(ML, 4) == 0, "setup mapped listen");
        l = sizeof a6; getsockname(ML, (void*)&a6, &l);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = a6.sin6_port };
        MC = socket(AF_INET, SOCK_STREAM, 0); EXPECT(connect(MC, (void*)&a, sizeof a) == 0, "setup mapped connect");
        MS = accept(ML, NULL, NULL);
        send(MC, "c2s", 3, 0); send(MS, "s2c", 3, 0); usleep(50000);
        l = sizeof mn0; getsockname(MS, (void*)&mn0, &l); l = sizeof mp0; getpeername(MS, (void*)&mp0, &l);
    }
    if (has(argc, argv, "shutrd")) { pair(&RC, &RS); shutdown(RS, SHUT_RD); r0 = rev(RC); r1 = rev(RS); }
    if (has(argc, argv, "big")) { pair(&BC, &BS); bc = fill(BC, 0); bs = fill(BS, 1); printf("big: %ld and %ld bytes queued\n", bc, bs); }
    if (has(argc, argv, "linger0")) { pair(&LC, &LS); struct linger lg = { 1, 0 }; setsockopt(LC, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); }
    if (has(argc, argv, "synsent")) {
        SS = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(9) }; inet_pton(AF_INET, "192.0.2.77", &a.sin_addr);
        int r = connect(SS, (void*)&a, sizeof a); EXPECT(r < 0 && errno == EINPROGRESS, "setup synsent %s", strerror(errno));
    }
    fixture_ready(); fixture_wait();
    char b[64]; ssize_t n;
    if (MS >= 0) {
        struct sockaddr_in6 x; l = sizeof x; getsockname(MS, (void*)&x, &l);
        EXPECT(x.sin6_family == AF_INET6 && !memcmp(&x, &mn0, sizeof x), "mapped: accepted name changed");
        l = sizeof x; getpeername(MS, (void*)&x, &l); EXPECT(!memcmp(&x, &mp0, sizeof x), "mapped: accepted peer changed");
        n = recv(MS, b, sizeof b, MSG_DONTWAIT); EXPECT(n == 3 && !memcmp(b, "c2s", 3), "mapped: server got %zd", n);
        n = recv(MC, b, sizeof b, MSG_DONTWAIT); EXPECT(n == 3 && !memcmp(b, "s2c", 3), "mapped: client got %zd", n);
        send(MC, "more", 4, 0); struct pollfd p = { MS, POLLIN, 0 }; EXPECT(poll(&p, 1, 2000) == 1 && recv(MS, b, sizeof b, 0) == 4, "mapped: link");
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = mn0.sin6_port };
        int c = socket(AF_INET, SOCK_STREAM, 0); EXPECT(connect(c, (void*)&a, sizeof a) == 0, "mapped: listener takes IPv4");
        int v = -1; l = sizeof v; getsockopt(ML, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l); EXPECT(v == 0, "mapped: V6ONLY %d", v);
    }
    if (RC >= 0) {
        short a0 = rev(RC), a1 = rev(RS);
        EXPECT(a0 == r0 && a1 == r1, "shutrd: revents %#x %#x were %#x %#x", a0, a1, r0, r1);
        n = recv(RS, b, sizeof b, MSG_DONTWAIT); EXPECT(n == 0, "shutrd: recv on the shut end %zd (%s), want 0", n, n < 0 ? strerror(errno) : "");
        n = send(RS, "ok", 2, 0); struct pollfd p = { RC, POLLIN, 0 }; EXPECT(n == 2 && poll(&p, 1, 2000) == 1 && recv(RC, b, sizeof b, 0) == 2, "shutrd: other way");
    }
    if (BC >= 0) {
        long g1 = drain(BS, 0, bc), g2 = drain(BC, 1, bs);
        EXPECT(g1 == bc && g2 == bs, "big: read %ld of %ld and %ld of %ld", g1, bc, g2, bs);
    }
    if (LC >= 0) {
        struct linger lg; l = sizeof lg; getsockopt(LC, SOL_SOCKET, SO_LINGER, &lg, &l); EXPECT(lg.l_onoff == 1 && lg.l_linger == 0, "linger0: %d %d", lg.l_onoff, lg.l_linger);
        close(LC); struct pollfd p = { LS, POLLIN, 0 }; poll(&p, 1, 2000);
        n = recv(LS, b, sizeof b, MSG_DONTWAIT); EXPECT(n < 0 && errno == ECONNRESET, "linger0: peer got %zd (%s), want ECONNRESET", n, n < 0 ? strerror(errno) : "");
    }
    if (SS >= 0) {
        struct tcp_info ti; l = sizeof ti; getsockopt(SS, IPPROTO_TCP, TCP_INFO, &ti, &l); EXPECT(ti.tcpi_state == TCP_SYN_SENT, "synsent: state %d", ti.tcpi_state);
        struct sockaddr_in x; l = sizeof x; EXPECT(getpeername(SS, (void*)&x, &l) < 0 || 1, "x");
    }
    return fixture_finish();
}
