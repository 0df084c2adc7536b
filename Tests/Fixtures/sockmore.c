// Socket states servers and clients reach that sockopts.c does not (found by probing the
// engine, December 2026), all in one process:
//   tcpgroup   three TCP listeners sharing one port with SO_REUSEPORT (nginx `reuseport`,
//              a worker per CPU): the restart bound the second and failed; after it all
//              three must listen on the port and take 30 new connections between them
//   udpgroup   three UDP sockets sharing a port the same way, 40 datagrams queued across
//              them: each socket's queue kept, 60 new ones spread over the group, and a new
//              member can still join
//   mcast      a sender with IP_MULTICAST_TTL 7, IP_MULTICAST_LOOP 1 and IP_MULTICAST_IF
//              127.0.0.1; another with IP_MULTICAST_LOOP 0; IPv6 with IPV6_MULTICAST_HOPS 5
//              and IPV6_UNICAST_HOPS 9 (all came back as defaults); a receiver that joined
//              239.1.2.3 on lo (IP_ADD_MEMBERSHIP: it was lost, and the group's datagrams
//              with it) gets the sender's datagram after restart and can leave the group; one
//              that joined 232.1.1.1 from source 127.0.0.1 only (IP_ADD_SOURCE_MEMBERSHIP)
//              has that filter (MCAST_MSFILTER: include mode, one source)
//   recverr    a connected UDP socket with IP_RECVERR and IP_RECVTTL (the queued ICMP error
//              itself is not kept: the error queue cannot be written)
//   peekoff    a unix stream pair peeked 4 bytes in with SO_PEEK_OFF (the next peek must
//              start at byte 4), a unix datagram pair with SO_PEEK_OFF 0 (came back -1)
//   device     a UDP socket bound to device "lo" (SO_BINDTODEVICE) and 127.0.0.1
//   freebind   a UDP socket with IP_FREEBIND bound to 192.0.2.7, an address no interface has
//              (the bind needs the option first, ip(7))
#include "fixture.h"
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int geti(int fd, int lv, int nm) { int v = -1; socklen_t l = sizeof v; if (getsockopt(fd, lv, nm, &v, &l) < 0) return -100; return l == 1 ? *(unsigned char *)&v : v; }
static void seti(int fd, int lv, int nm, int v) { if (setsockopt(fd, lv, nm, &v, sizeof v) < 0) printf("setup: setsockopt %d/%d: %s\n", lv, nm, strerror(errno)); }

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l;

    // tcpgroup
    int tg[3];
    struct sockaddr_in ta = lo;
    for (int i = 0; i < 3; i++) {
        tg[i] = socket(AF_INET, SOCK_STREAM, 0);
        seti(tg[i], SOL_SOCKET, SO_REUSEPORT, 1);
        EXPECT(bind(tg[i], (struct sockaddr *)&ta, sizeof ta) == 0, "setup: tcpgroup: bind %d: %s", i, strerror(errno));
        listen(tg[i], 64);
        if (i == 0) { l = sizeof ta; getsockname(tg[0], (struct sockaddr *)&ta, &l); }
        fcntl(tg[i], F_SETFL, O_NONBLOCK);
    }

    // udpgroup
    int ug[3];
    struct sockaddr_in ua = lo;
    for (int i = 0; i < 3; i++) {
        ug[i] = socket(AF_INET, SOCK_DGRAM, 0);
        seti(ug[i], SOL_SOCKET, SO_REUSEPORT, 1);
        EXPECT(bind(ug[i], (struct sockaddr *)&ua, sizeof ua) == 0, "setup: udpgroup: bind %d: %s", i, strerror(errno));
        if (i == 0) { l = sizeof ua; getsockname(ug[0], (struct sockaddr *)&ua, &l); }
    }
    for (int k = 0; k < 40; k++) {
        // A new sender each time: the group picks a member by the sender's port.
        int t = socket(AF_INET, SOCK_DGRAM, 0);
        sendto(t, "q", 1, 0, (struct sockaddr *)&ua, sizeof ua);
        close(t);
    }

    // mcast
    int ms = socket(AF_INET, SOCK_DGRAM, 0), noloop = socket(AF_INET, SOCK_DGRAM, 0), m6 = socket(AF_INET6, SOCK_DGRAM, 0);
    seti(ms, IPPROTO_IP, IP_MULTICAST_TTL, 7);
    seti(ms, IPPROTO_IP, IP_MULTICAST_LOOP, 1);
    struct in_addr ifa = { htonl(INADDR_LOOPBACK) };
    if (setsockopt(ms, IPPROTO_IP, IP_MULTICAST_IF, &ifa, sizeof ifa) < 0) printf("setup: IP_MULTICAST_IF: %s\n", strerror(errno));
    seti(noloop, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
    seti(m6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 5);
    seti(m6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 9);
    int mr = socket(AF_INET, SOCK_DGRAM, 0);
    seti(mr, SOL_SOCKET, SO_REUSEADDR, 1);
    struct sockaddr_in ma = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
    bind(mr, (struct sockaddr *)&ma, sizeof ma);
    l = sizeof ma;
    getsockname(mr, (struct sockaddr *)&ma, &l);
    struct ip_mreqn join = { .imr_address.s_addr = htonl(INADDR_LOOPBACK), .imr_ifindex = (int)if_nametoindex("lo") };
    inet_pton(AF_INET, "239.1.2.3", &join.imr_multiaddr);
    EXPECT(setsockopt(mr, IPPROTO_IP, IP_ADD_MEMBERSHIP, &join, sizeof join) == 0, "setup: IP_ADD_MEMBERSHIP: %s", strerror(errno));
    int ssm = socket(AF_INET, SOCK_DGRAM, 0);
    struct ip_mreq_source src = { .imr_interface.s_addr = htonl(INADDR_LOOPBACK), .imr_sourceaddr.s_addr = htonl(INADDR_LOOPBACK) };
    inet_pton(AF_INET, "232.1.1.1", &src.imr_multiaddr);
    EXPECT(setsockopt(ssm, IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &src, sizeof src) == 0, "setup: IP_ADD_SOURCE_MEMBERSHIP: %s", strerror(errno));

    // recverr
    int dead = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in da = lo;
    bind(dead, (struct sockaddr *)&da, sizeof da);
    l = sizeof da; getsockname(dead, (struct sockaddr *)&da, &l);
    close(dead);
    int re = socket(AF_INET, SOCK_DGRAM, 0);
    seti(re, IPPROTO_IP, IP_RECVERR, 1);
    seti(re, IPPROTO_IP, IP_RECVTTL, 1);
    connect(re, (struct sockaddr *)&da, sizeof da);

    // peekoff
    int sp[2], dp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    write(sp[0], "0123456789", 10);
    seti(sp[1], SOL_SOCKET, SO_PEEK_OFF, 0);
    char b[64] = {0};
    EXPECT(recv(sp[1], b, 4, MSG_PEEK) == 4, "setup: peek");
    EXPECT(geti(sp[1], SOL_SOCKET, SO_PEEK_OFF) == 4, "setup: SO_PEEK_OFF %d after a 4-byte peek", geti(sp[1], SOL_SOCKET, SO_PEEK_OFF));
    socketpair(AF_UNIX, SOCK_DGRAM, 0, dp);
    send(dp[0], "d1", 2, 0);
    send(dp[0], "d2", 2, 0);
    seti(dp[1], SOL_SOCKET, SO_PEEK_OFF, 0);

    // device, freebind
    int dev = socket(AF_INET, SOCK_DGRAM, 0);
    if (setsockopt(dev, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) < 0) printf("setup: SO_BINDTODEVICE: %s\n", strerror(errno));
    struct sockaddr_in dva = lo;
    EXPECT(bind(dev, (struct sockaddr *)&dva, sizeof dva) == 0, "setup: device: bind: %s", strerror(errno));
    l = sizeof dva; getsockname(dev, (struct sockaddr *)&dva, &l);
    int fb = socket(AF_INET, SOCK_DGRAM, 0);
    seti(fb, IPPROTO_IP, IP_FREEBIND, 1);
    struct sockaddr_in fba = { .sin_family = AF_INET, .sin_port = htons(40777) };
    inet_pton(AF_INET, "192.0.2.7", &fba.sin_addr);
    EXPECT(bind(fb, (struct sockaddr *)&fba, sizeof fba) == 0, "setup: freebind: bind 192.0.2.7: %s", strerror(errno));
    usleep(50000);

    fixture_ready();
    fixture_wait();

    // tcpgroup
    int c[30], got = 0, per[3] = {0};
    for (int k = 0; k < 30; k++) {
        c[k] = socket(AF_INET, SOCK_STREAM, 0);
        EXPECT(connect(c[k], (struct sockaddr *)&ta, sizeof ta) == 0, "tcpgroup: connect %d: %s", k, strerror(errno));
    }
    usleep(50000);
    for (int i = 0; i < 3; i++) { int x; while ((x = accept(tg[i], NULL, NULL)) >= 0) { per[i]++; got++; close(x); } }
    EXPECT(got == 30, "tcpgroup: accepted %d of 30 (%d/%d/%d)", got, per[0], per[1], per[2]);
    for (int k = 0; k < 30; k++) close(c[k]);

    // udpgroup
    int q[3] = {0}, all = 0;
    for (int i = 0; i < 3; i++) { while (recv(ug[i], b, sizeof b, MSG_DONTWAIT) > 0) q[i]++; all += q[i]; }
    EXPECT(all == 40 && q[0] && q[1] && q[2], "udpgroup: %d of the 40 queued datagrams (%d/%d/%d)", all, q[0], q[1], q[2]);
    for (int k = 0; k < 60; k++) {
        int t = socket(AF_INET, SOCK_DGRAM, 0);
        sendto(t, "n", 1, 0, (struct sockaddr *)&ua, sizeof ua);
        close(t);
    }
    usleep(50000);
    int n2[3] = {0};
    all = 0;
    for (int i = 0; i < 3; i++) { while (recv(ug[i], b, sizeof b, MSG_DONTWAIT) > 0) n2[i]++; all += n2[i]; }
    EXPECT(all == 60 && n2[0] && n2[1] && n2[2], "udpgroup: %d of 60 new datagrams (%d/%d/%d): not one group any more", all, n2[0], n2[1], n2[2]);
    int late = socket(AF_INET, SOCK_DGRAM, 0);
    seti(late, SOL_SOCKET, SO_REUSEPORT, 1);
    EXPECT(bind(late, (struct sockaddr *)&ua, sizeof ua) == 0, "udpgroup: a new member cannot join: %s", strerror(errno));

    // mcast
    EXPECT(geti(ms, IPPROTO_IP, IP_MULTICAST_TTL) == 7, "mcast: IP_MULTICAST_TTL %d", geti(ms, IPPROTO_IP, IP_MULTICAST_TTL));
    EXPECT(geti(noloop, IPPROTO_IP, IP_MULTICAST_LOOP) == 0, "mcast: IP_MULTICAST_LOOP %d, was 0", geti(noloop, IPPROTO_IP, IP_MULTICAST_LOOP));
    struct in_addr ga = {0};
    l = sizeof ga;
    getsockopt(ms, IPPROTO_IP, IP_MULTICAST_IF, &ga, &l);
    EXPECT(ga.s_addr == htonl(INADDR_LOOPBACK), "mcast: IP_MULTICAST_IF %s", inet_ntoa(ga));
    EXPECT(geti(m6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS) == 5, "mcast: IPV6_MULTICAST_HOPS %d", geti(m6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS));
    EXPECT(geti(m6, IPPROTO_IPV6, IPV6_UNICAST_HOPS) == 9, "mcast: IPV6_UNICAST_HOPS %d", geti(m6, IPPROTO_IPV6, IPV6_UNICAST_HOPS));
    struct sockaddr_in group = { .sin_family = AF_INET, .sin_port = ma.sin_port, .sin_addr = join.imr_multiaddr };
    EXPECT(sendto(ms, "m2", 2, 0, (struct sockaddr *)&group, sizeof group) == 2, "mcast: sendto the group: %s", strerror(errno));
    struct pollfd mp = { .fd = mr, .events = POLLIN };
    memset(b, 0, sizeof b);
    EXPECT(poll(&mp, 1, 1000) == 1 && recv(mr, b, sizeof b, 0) == 2 && !strcmp(b, "m2"), "mcast: the group's datagram did not arrive (membership lost)");
    EXPECT(setsockopt(mr, IPPROTO_IP, IP_DROP_MEMBERSHIP, &join, sizeof join) == 0, "mcast: IP_DROP_MEMBERSHIP: %s (it was not a member)", strerror(errno));
    // struct group_filter: gf_interface, gf_group at 8, gf_fmode at 136, gf_numsrc at 140,
    // gf_slist at 144 (x86_64).
    unsigned char gf[144 + 128 * 4] = {0};
    *(unsigned *)gf = if_nametoindex("lo");
    struct sockaddr_in *gg = (struct sockaddr_in *)(gf + 8);
    gg->sin_family = AF_INET;
    gg->sin_addr = src.imr_multiaddr;
    *(unsigned *)(gf + 140) = 4;
    socklen_t gl = sizeof gf;
    int gr = getsockopt(ssm, IPPROTO_IP, MCAST_MSFILTER, gf, &gl);
    struct sockaddr_in *s0 = (struct sockaddr_in *)(gf + 144);
    EXPECT(gr == 0 && *(unsigned *)(gf + 136) == MCAST_INCLUDE && *(unsigned *)(gf + 140) == 1 && s0->sin_addr.s_addr == htonl(INADDR_LOOPBACK),
           "mcast: source filter of 232.1.1.1: getsockopt %d (%s), mode %u, %u sources", gr, gr ? strerror(errno) : "", *(unsigned *)(gf + 136), *(unsigned *)(gf + 140));

    // recverr: the option works: a new send to the closed port queues an error again.
    EXPECT(geti(re, IPPROTO_IP, IP_RECVERR) == 1, "recverr: IP_RECVERR %d", geti(re, IPPROTO_IP, IP_RECVERR));
    EXPECT(geti(re, IPPROTO_IP, IP_RECVTTL) == 1, "recverr: IP_RECVTTL %d", geti(re, IPPROTO_IP, IP_RECVTTL));
    while (recv(re, b, sizeof b, MSG_ERRQUEUE | MSG_DONTWAIT) >= 0) {}
    send(re, "again", 5, 0);
    struct pollfd p = { .fd = re, .events = 0 };
    EXPECT(poll(&p, 1, 1000) == 1 && (p.revents & POLLERR), "recverr: no error queued for a send to a closed port");
    EXPECT(recv(re, b, sizeof b, MSG_ERRQUEUE | MSG_DONTWAIT) == 5, "recverr: the error queue holds no copy of the datagram");

    // peekoff
    EXPECT(geti(sp[1], SOL_SOCKET, SO_PEEK_OFF) == 4, "peekoff: stream SO_PEEK_OFF %d, want 4", geti(sp[1], SOL_SOCKET, SO_PEEK_OFF));
    memset(b, 0, sizeof b);
    EXPECT(recv(sp[1], b, 3, MSG_PEEK) == 3 && !memcmp(b, "456", 3), "peekoff: next peek '%s', want 456", b);
    memset(b, 0, sizeof b);
    EXPECT(recv(sp[1], b, 10, 0) == 10 && !memcmp(b, "0123456789", 10), "peekoff: read '%s'", b);
    EXPECT(geti(dp[1], SOL_SOCKET, SO_PEEK_OFF) == 0, "peekoff: datagram SO_PEEK_OFF %d, want 0", geti(dp[1], SOL_SOCKET, SO_PEEK_OFF));

    // device
    char name[IFNAMSIZ] = {0};
    l = sizeof name;
    getsockopt(dev, SOL_SOCKET, SO_BINDTODEVICE, name, &l);
    EXPECT(!strcmp(name, "lo"), "device: SO_BINDTODEVICE '%s'", name);
    struct sockaddr_in dn;
    l = sizeof dn;
    getsockname(dev, (struct sockaddr *)&dn, &l);
    EXPECT(dn.sin_port == dva.sin_port && dn.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "device: bound to %s:%d", inet_ntoa(dn.sin_addr), ntohs(dn.sin_port));
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    sendto(tx, "dv", 2, 0, (struct sockaddr *)&dva, sizeof dva);
    struct pollfd dp2 = { .fd = dev, .events = POLLIN };
    EXPECT(poll(&dp2, 1, 1000) == 1 && recv(dev, b, sizeof b, 0) == 2, "device: no datagram received");

    // freebind
    EXPECT(geti(fb, IPPROTO_IP, IP_FREEBIND) == 1, "freebind: IP_FREEBIND %d", geti(fb, IPPROTO_IP, IP_FREEBIND));
    struct sockaddr_in fn;
    l = sizeof fn;
    getsockname(fb, (struct sockaddr *)&fn, &l);
    EXPECT(fn.sin_port == htons(40777) && fn.sin_addr.s_addr == fba.sin_addr.s_addr, "freebind: bound to %s:%d", inet_ntoa(fn.sin_addr), ntohs(fn.sin_port));
    return fixture_finish();
}
