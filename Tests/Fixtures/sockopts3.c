// Socket states found by the third probing round (December 7 2026):
//   - a SOCK_SEQPACKET unix socket made and not connected (the checkpoint failed: "peek a
//     socket: Transport endpoint is not connected"), and one bound but not listening yet;
//     both must work as before after the restart (connect, listen, a message);
//   - options that came back at their defaults: IP_UNICAST_IF, IP_RECVFRAGSIZE,
//     IPV6_UNICAST_IF, IPV6_FLOWINFO_SEND, TCP_TX_DELAY, SO_TXTIME (clock and flags).
#include "fixture.h"
#include <linux/net_tstamp.h>
#include <net/if.h>
#include <stddef.h>
#include <time.h>
#ifndef CLOCK_TAI
#define CLOCK_TAI 11
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

static int geti(int s, int level, int name) {
    int v = -1;
    socklen_t l = sizeof v;
    getsockopt(s, level, name, &v, &l);
    return v;
}

int main(void) {
    int one = 1;
    int unconnected = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    setsockopt(unconnected, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    int bound = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ssi-sockopts3-%d", getpid());
    socklen_t al = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1);
    if (bind(bound, (void *)&a, al)) { perror("bind"); return 4; }

    int lo = (int)if_nametoindex("lo");
    int u4 = socket(AF_INET, SOCK_DGRAM, 0), u6 = socket(AF_INET6, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
    int nlo = (int)htonl(lo), delay = 5000;
    struct sock_txtime txt = { .clockid = CLOCK_TAI, .flags = SOF_TXTIME_REPORT_ERRORS };
    if (setsockopt(u4, IPPROTO_IP, 50 /* IP_UNICAST_IF */, &nlo, sizeof nlo) || setsockopt(u4, IPPROTO_IP, 25 /* IP_RECVFRAGSIZE */, &one, sizeof one)
        || setsockopt(u6, IPPROTO_IPV6, 76 /* IPV6_UNICAST_IF */, &nlo, sizeof nlo) || setsockopt(u6, IPPROTO_IPV6, 33 /* IPV6_FLOWINFO_SEND */, &one, sizeof one)
        || setsockopt(t, IPPROTO_TCP, 37 /* TCP_TX_DELAY */, &delay, sizeof delay) || setsockopt(u4, SOL_SOCKET, SO_TXTIME, &txt, sizeof txt)) {
        perror("setsockopt");
        return 4;
    }

    fixture_ready();
    fixture_wait();

    EXPECT(geti(unconnected, SOL_SOCKET, SO_TYPE) == SOCK_SEQPACKET, "unconnected: type %d", geti(unconnected, SOL_SOCKET, SO_TYPE));
    EXPECT(geti(unconnected, SOL_SOCKET, SO_PASSCRED) == 1, "unconnected: SO_PASSCRED %d", geti(unconnected, SOL_SOCKET, SO_PASSCRED));
    EXPECT(listen(bound, 2) == 0, "bound: listen: %s", strerror(errno));
    EXPECT(connect(unconnected, (void *)&a, al) == 0, "unconnected: connect to the bound one: %s", strerror(errno));
    int acc = accept(bound, NULL, NULL);
    char b[8];
    EXPECT(acc >= 0 && send(unconnected, "m", 1, 0) == 1 && recv(acc, b, sizeof b, 0) == 1, "seqpacket: a message after the restart");

    EXPECT(geti(u4, IPPROTO_IP, 50) == nlo, "IP_UNICAST_IF %d, want %d", geti(u4, IPPROTO_IP, 50), nlo);
    EXPECT(geti(u4, IPPROTO_IP, 25) == 1, "IP_RECVFRAGSIZE %d", geti(u4, IPPROTO_IP, 25));
    EXPECT(geti(u6, IPPROTO_IPV6, 76) == nlo, "IPV6_UNICAST_IF %d, want %d", geti(u6, IPPROTO_IPV6, 76), nlo);
    EXPECT(geti(u6, IPPROTO_IPV6, 33) == 1, "IPV6_FLOWINFO_SEND %d", geti(u6, IPPROTO_IPV6, 33));
    EXPECT(geti(t, IPPROTO_TCP, 37) == delay, "TCP_TX_DELAY %d", geti(t, IPPROTO_TCP, 37));
    struct sock_txtime got = { 0 };
    socklen_t gl = sizeof got;
    getsockopt(u4, SOL_SOCKET, SO_TXTIME, &got, &gl);
    EXPECT(got.clockid == CLOCK_TAI && got.flags == SOF_TXTIME_REPORT_ERRORS, "SO_TXTIME clock %d flags %u", got.clockid, got.flags);
    return fixture_finish();
}
