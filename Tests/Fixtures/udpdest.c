// UDP datagrams queued on a receiver bound to 0.0.0.0 (a DNS or NTP server answers from the
// address it was asked on): "to5" sent to 127.0.0.5 by a sender with IP_TTL 7 and IP_TOS
// 0x20, "to1" sent to 127.0.0.1 with the defaults. The receiver asks for IP_PKTINFO,
// IP_RECVORIGDSTADDR, IP_RECVTTL and IP_RECVTOS. Found by the third probing round (December
// 7 2026): they came back addressed to 127.0.0.1 with TTL 64 and TOS 0. After the restart
// each datagram's destination (pktinfo, original destination), TTL and TOS are as sent. A
// second receiver that asked for none of them still asks for none (the checkpoint asks
// while it reads the queue, and puts its settings back).
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/socket.h>
static void seti(int fd, int lv, int nm, int v) { setsockopt(fd, lv, nm, &v, sizeof v); }
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int R = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET }; bind(R, (void*)&a, sizeof a); socklen_t l = sizeof a; getsockname(R, (void*)&a, &l);
    seti(R, IPPROTO_IP, IP_PKTINFO, 1); seti(R, IPPROTO_IP, IP_RECVORIGDSTADDR, 1); seti(R, IPPROTO_IP, IP_RECVTTL, 1); seti(R, IPPROTO_IP, IP_RECVTOS, 1);
    int S = socket(AF_INET, SOCK_DGRAM, 0); seti(S, IPPROTO_IP, IP_TTL, 7); seti(S, IPPROTO_IP, IP_TOS, 0x20);
    struct sockaddr_in t = a; inet_pton(AF_INET, "127.0.0.5", &t.sin_addr); sendto(S, "to5", 3, 0, (void*)&t, sizeof t);
    int Q = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in qa = { .sin_family = AF_INET };
    bind(Q, (void*)&qa, sizeof qa); l = sizeof qa; getsockname(Q, (void*)&qa, &l);
    inet_pton(AF_INET, "127.0.0.5", &qa.sin_addr); sendto(S, "q", 1, 0, (void*)&qa, sizeof qa);
    int S2 = socket(AF_INET, SOCK_DGRAM, 0);
    inet_pton(AF_INET, "127.0.0.1", &t.sin_addr); sendto(S2, "to1", 3, 0, (void*)&t, sizeof t);
    fixture_ready(); fixture_wait();
    const char *want[2] = { "to5", "to1" }, *wdst[2] = { "127.0.0.5", "127.0.0.1" }; int wttl[2] = { 7, 64 }, wtos[2] = { 0x20, 0 };
    for (int k = 0; k < 2; k++) {
        char b[16] = {0}, cb[256]; struct sockaddr_in from; struct iovec iov = { b, 15 };
        struct msghdr m = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof cb };
        ssize_t n = recvmsg(R, &m, MSG_DONTWAIT); EXPECT(n == 3 && !strcmp(b, want[k]), "datagram %d: '%s'", k, b);
        char pk[32] = "?", od[32] = "?"; int ttl = -1, tos = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != IPPROTO_IP) continue;
            if (c->cmsg_type == IP_PKTINFO) { struct in_pktinfo pi; memcpy(&pi, CMSG_DATA(c), sizeof pi); inet_ntop(AF_INET, &pi.ipi_addr, pk, sizeof pk); }
            if (c->cmsg_type == IP_ORIGDSTADDR) { struct sockaddr_in o; memcpy(&o, CMSG_DATA(c), sizeof o); inet_ntop(AF_INET, &o.sin_addr, od, sizeof od); }
            if (c->cmsg_type == IP_TTL) memcpy(&ttl, CMSG_DATA(c), 4);
            if (c->cmsg_type == IP_TOS) tos = *(unsigned char *)CMSG_DATA(c);
        }
        EXPECT(!strcmp(pk, wdst[k]), "datagram %s: IP_PKTINFO destination %s, want %s", want[k], pk, wdst[k]);
        EXPECT(!strcmp(od, wdst[k]), "datagram %s: IP_ORIGDSTADDR %s, want %s", want[k], od, wdst[k]);
        EXPECT(ttl == wttl[k], "datagram %s: TTL %d, want %d", want[k], ttl, wttl[k]);
        EXPECT(tos == wtos[k], "datagram %s: TOS %#x, want %#x", want[k], tos, wtos[k]);
    }
    int v = -1; socklen_t vl = sizeof v;
    getsockopt(Q, IPPROTO_IP, IP_PKTINFO, &v, &vl);
    EXPECT(v == 0, "the second receiver's IP_PKTINFO is %d, it had not asked for it", v);
    vl = sizeof v; getsockopt(Q, IPPROTO_IP, IP_RECVTTL, &v, &vl);
    EXPECT(v == 0, "the second receiver's IP_RECVTTL is %d, it had not asked for it", v);
    char qb[4] = {0};
    EXPECT(recv(Q, qb, sizeof qb, MSG_DONTWAIT) == 1 && qb[0] == 'q', "the second receiver's datagram");
    return fixture_finish();
}
