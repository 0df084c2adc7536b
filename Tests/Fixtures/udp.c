// Issue 10, "Refused, though the state is ordinary": UDP sockets (bound, connected, shut
// down, IPv4 and IPv6, with queued datagrams). All on the loopback, inside the application:
//   r4      IPv4 bound to 127.0.0.1:port, 3 datagrams queued (from s4 and c4), one of them
//           empty (0 bytes), SO_RCVBUF set, IP_PKTINFO on (cmsg), SO_TIMESTAMP off
//   s4      IPv4 unconnected, bound to an ephemeral port, SO_BROADCAST 1
//   c4      IPv4 connected to r4 (getpeername), IP_TOS 0x08
//   sd4     IPv4 connected, then shutdown(SHUT_RD): poll gives POLLIN|POLLRDHUP, recv 0
//   sw4     IPv4 connected, then shutdown(SHUT_WR): send fails with EPIPE
//   r6      IPv6 bound to [::1]:port with IPV6_V6ONLY 1, 2 datagrams queued from c6
//   c6      IPv6 connected to r6
//   any6    IPv6 bound to [::]:port with IPV6_V6ONLY 0 (takes IPv4 too), 1 queued datagram
//           from s4 (its source a v4-mapped address)
// After restart: each socket's name, peer and options; r4 reads its 3 datagrams in order
// with their lengths, sources (s4's and c4's addresses) and IP_PKTINFO; r6 its 2; any6 its
// one with a ::ffff:127.0.0.1 source; then new datagrams flow everywhere (c4 -> r4, r4 ->
// c4's address, c6 <-> r6), and a connected socket still ignores datagrams from others.
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sys/socket.h>

static int udp(int fam, const char *addr, int port, int v6only) {
    int s = socket(fam, SOCK_DGRAM, 0);
    if (fam == AF_INET6 && v6only >= 0) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    if (!addr) return s;
    if (fam == AF_INET) { struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) }; inet_pton(AF_INET, addr, &a.sin_addr); bind(s, (struct sockaddr *)&a, sizeof a); }
    else { struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) }; inet_pton(AF_INET6, addr, &a.sin6_addr); bind(s, (struct sockaddr *)&a, sizeof a); }
    return s;
}

static struct sockaddr_storage name(int s, int peer) {
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    if (peer) getpeername(s, (struct sockaddr *)&a, &l); else getsockname(s, (struct sockaddr *)&a, &l);
    return a;
}

static int same(struct sockaddr_storage *a, struct sockaddr_storage *b) { return memcmp(a, b, sizeof *a) == 0; }

static int geti(int s, int lv, int o) { int v = -1; socklen_t l = sizeof v; getsockopt(s, lv, o, &v, &l); return v; }

static void connect_to(int s, int t) { struct sockaddr_storage a = name(t, 0); connect(s, (struct sockaddr *)&a, a.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)); }

static void sendto_s(int s, int t, const char *m, size_t n) { struct sockaddr_storage a = name(t, 0); sendto(s, m, n, 0, (struct sockaddr *)&a, a.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)); }

// Receives one datagram; its source in *from, IP_PKTINFO's destination in *dst if given.
static ssize_t rcv(int s, char *buf, size_t n, struct sockaddr_storage *from, struct in_addr *dst) {
    char cbuf[256];
    struct iovec iov = { buf, n };
    struct msghdr m = { .msg_name = from, .msg_namelen = sizeof *from, .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    memset(from, 0, sizeof *from);
    ssize_t r = recvmsg(s, &m, MSG_DONTWAIT);
    if (dst) { dst->s_addr = 0; for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); r >= 0 && c; c = CMSG_NXTHDR(&m, c)) if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) *dst = ((struct in_pktinfo *)CMSG_DATA(c))->ipi_addr; }
    return r;
}

int main(void) {
    int r4 = udp(AF_INET, "127.0.0.1", 0, -1);
    int one = 1, rcvbuf = 100000;
    setsockopt(r4, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    setsockopt(r4, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int s4 = udp(AF_INET, "127.0.0.1", 0, -1);
    setsockopt(s4, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    int c4 = udp(AF_INET, "127.0.0.1", 0, -1);
    int tos = 0x08;
    setsockopt(c4, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    connect_to(c4, r4);
    int sd4 = udp(AF_INET, "127.0.0.1", 0, -1);
    connect_to(sd4, r4);
    shutdown(sd4, SHUT_RD);
    int sw4 = udp(AF_INET, "127.0.0.1", 0, -1);
    connect_to(sw4, r4);
    shutdown(sw4, SHUT_WR);
    int r6 = udp(AF_INET6, "::1", 0, 1);
    int c6 = udp(AF_INET6, "::1", 0, 1);
    connect_to(c6, r6);
    int any6 = udp(AF_INET6, "::", 0, 0);
    sendto_s(s4, r4, "first", 5);
    send(c4, "", 0, 0);
    sendto_s(s4, r4, "third", 5);
    send(c6, "six-1", 5, 0);
    send(c6, "six-2", 5, 0);
    struct sockaddr_in toany = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = ((struct sockaddr_in6 *)&(struct sockaddr_storage){0})->sin6_port };
    struct sockaddr_storage anyname = name(any6, 0);
    toany.sin_port = ((struct sockaddr_in6 *)&anyname)->sin6_port;
    sendto(s4, "mapped", 6, 0, (struct sockaddr *)&toany, sizeof toany);
    usleep(20000);
    int socks[8] = { r4, s4, c4, sd4, sw4, r6, c6, any6 };
    const char *names[8] = { "r4", "s4", "c4", "sd4", "sw4", "r6", "c6", "any6" };
    struct sockaddr_storage nb[8], pb[8];
    for (int i = 0; i < 8; i++) { nb[i] = name(socks[i], 0); pb[i] = name(socks[i], 1); }
    int rcvbufBefore = geti(r4, SOL_SOCKET, SO_RCVBUF);

    fixture_ready();
    fixture_wait();

    for (int i = 0; i < 8; i++) {
        struct sockaddr_storage n = name(socks[i], 0), p = name(socks[i], 1);
        EXPECT(same(&n, &nb[i]), "%s: getsockname differs (or the socket is gone)", names[i]);
        EXPECT(same(&p, &pb[i]), "%s: getpeername differs", names[i]);
        EXPECT(geti(socks[i], SOL_SOCKET, SO_TYPE) == SOCK_DGRAM, "%s: not a datagram socket", names[i]);
    }
    EXPECT(geti(r4, SOL_SOCKET, SO_RCVBUF) == rcvbufBefore, "r4: SO_RCVBUF %d, was %d", geti(r4, SOL_SOCKET, SO_RCVBUF), rcvbufBefore);
    EXPECT(geti(r4, IPPROTO_IP, IP_PKTINFO) == 1, "r4: IP_PKTINFO lost");
    EXPECT(geti(s4, SOL_SOCKET, SO_BROADCAST) == 1, "s4: SO_BROADCAST lost");
    EXPECT(geti(c4, IPPROTO_IP, IP_TOS) == 0x08, "c4: IP_TOS %#x", geti(c4, IPPROTO_IP, IP_TOS));
    EXPECT(geti(r6, IPPROTO_IPV6, IPV6_V6ONLY) == 1 && geti(any6, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "IPV6_V6ONLY: r6 %d any6 %d", geti(r6, IPPROTO_IPV6, IPV6_V6ONLY), geti(any6, IPPROTO_IPV6, IPV6_V6ONLY));

    const char *want4[3] = { "first", "", "third" };
    int src4[3] = { 1, 2, 1 };                                  // index in socks of the sender
    for (int i = 0; i < 3; i++) {
        char buf[32] = {0};
        struct sockaddr_storage from;
        struct in_addr dst;
        ssize_t n = rcv(r4, buf, sizeof buf, &from, &dst);
        EXPECT(n == (ssize_t)strlen(want4[i]) && strcmp(buf, want4[i]) == 0, "r4: datagram %d: %zd '%s', expected '%s'", i, n, buf, want4[i]);
        EXPECT(n >= 0 && same(&from, &nb[src4[i]]), "r4: datagram %d: source is not %s's address", i, names[src4[i]]);
        EXPECT(n >= 0 && dst.s_addr == htonl(INADDR_LOOPBACK), "r4: datagram %d: IP_PKTINFO destination %s", i, inet_ntoa(dst));
    }
    char buf[32];
    struct sockaddr_storage from;
    EXPECT(rcv(r4, buf, sizeof buf, &from, NULL) < 0 && errno == EAGAIN, "r4: more datagrams than sent");
    for (int i = 1; i <= 2; i++) {
        memset(buf, 0, sizeof buf);
        ssize_t n = rcv(r6, buf, sizeof buf, &from, NULL);
        char w[8];
        snprintf(w, sizeof w, "six-%d", i);
        EXPECT(n == 5 && strcmp(buf, w) == 0 && same(&from, &nb[6]), "r6: %zd '%s', expected '%s' from c6", n, buf, w);
    }
    memset(buf, 0, sizeof buf);
    ssize_t n = rcv(any6, buf, sizeof buf, &from, NULL);
    struct sockaddr_in6 *f6 = (struct sockaddr_in6 *)&from;
    EXPECT(n == 6 && strcmp(buf, "mapped") == 0 && from.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&f6->sin6_addr), "any6: %zd '%s' (family %d)", n, buf, from.ss_family);
    // shutdown state
    struct pollfd pf = { .fd = sd4, .events = POLLIN | POLLRDHUP };
    poll(&pf, 1, 0);
    EXPECT((pf.revents & POLLRDHUP) && (pf.revents & POLLIN), "sd4: poll revents %#x, expected POLLIN|POLLRDHUP (SHUT_RD)", pf.revents);
    n = (pf.revents & POLLIN) ? recv(sd4, buf, sizeof buf, 0) : -1;    // blocking: returns 0 at once after SHUT_RD
    EXPECT(n == 0, "sd4: recv after SHUT_RD gave %zd (errno %d), expected 0", n, errno);
    n = send(sw4, "x", 1, MSG_NOSIGNAL);
    EXPECT(n < 0 && errno == EPIPE, "sw4: send after SHUT_WR gave %zd (errno %d), expected EPIPE", n, errno);
    // traffic after restart
    EXPECT(send(c4, "new", 3, 0) == 3 && rcv(r4, buf, sizeof buf, &from, NULL) == 3 && same(&from, &nb[2]), "c4 -> r4 after restart");
    sendto(r4, "back", 4, 0, (struct sockaddr *)&nb[2], sizeof(struct sockaddr_in));
    usleep(10000);
    EXPECT(recv(c4, buf, sizeof buf, MSG_DONTWAIT) == 4, "r4 -> c4 after restart");
    sendto(s4, "stranger", 8, 0, (struct sockaddr *)&nb[2], sizeof(struct sockaddr_in));
    usleep(10000);
    EXPECT(recv(c4, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "c4 (connected) received a datagram from another address");
    EXPECT(send(c6, "x", 1, 0) == 1 && rcv(r6, buf, sizeof buf, &from, NULL) == 1, "c6 -> r6 after restart");
    return fixture_finish();
}
