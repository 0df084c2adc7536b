// Issue 10, "Refused, though the state is ordinary": packet sockets (packet(7)), which DHCP
// clients, arping and LLDP agents keep open.
//   P   SOCK_RAW, protocol ETH_P_ALL, bound to lo, PACKET_AUXDATA on, a promiscuous
//       membership on lo (PACKET_ADD_MEMBERSHIP PACKET_MR_PROMISC), a classic BPF filter
//       that takes every frame whole, locked (SO_LOCK_FILTER)
//   Q   SOCK_DGRAM, protocol ETH_P_ARP, not bound
// After restart: P is bound to lo (by its index on this machine) with ETH_P_ALL, AUXDATA is
// on, its filter is there, lo is promiscuous (its membership), and a UDP datagram sent over
// lo reaches P as a frame; Q keeps its type and protocol.
#include "fixture.h"
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

// lo's promiscuity count (IFLA_PROMISCUITY), asked over rtnetlink in the process's own
// network namespace: the count that memberships raise. (SIOCGIFFLAGS shows only the
// promiscuity set by hand, and /sys the namespace of whoever mounted it.)
static int lo_promiscuity(void) {
    int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    struct { struct nlmsghdr h; struct ifinfomsg i; } req = {
        .h = { .nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = 1 },
        .i = { .ifi_family = AF_UNSPEC, .ifi_index = (int)if_nametoindex("lo") },
    };
    char buf[8192];
    int count = -1;
    if (send(s, &req, sizeof req, 0) == sizeof req) {
        ssize_t n = recv(s, buf, sizeof buf, 0);
        struct nlmsghdr *h = (struct nlmsghdr *)buf;
        if (n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == RTM_NEWLINK) {
            struct ifinfomsg *ifi = NLMSG_DATA(h);
            int len = (int)IFLA_PAYLOAD(h);
            for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len))
                if (a->rta_type == IFLA_PROMISCUITY) count = (int)*(unsigned *)RTA_DATA(a);
        }
    }
    close(s);
    return count;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int lo = (int)if_nametoindex("lo");
    int P = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (P < 0) { printf("FAIL: socket(AF_PACKET): %s\n", strerror(errno)); return 1; }
    struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = lo };
    if (bind(P, (struct sockaddr *)&ll, sizeof ll)) printf("bind: %s\n", strerror(errno));
    int one = 1;
    if (setsockopt(P, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one)) printf("PACKET_AUXDATA: %s\n", strerror(errno));
    struct packet_mreq mr = { .mr_ifindex = lo, .mr_type = PACKET_MR_PROMISC };
    if (setsockopt(P, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr)) printf("PACKET_ADD_MEMBERSHIP: %s\n", strerror(errno));
    struct sock_filter prog[2] = { { BPF_LD | BPF_W | BPF_LEN, 0, 0, 0 }, { BPF_RET | BPF_A, 0, 0, 0 } };
    struct sock_fprog fprog = { 2, prog };
    if (setsockopt(P, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog) || setsockopt(P, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one))
        printf("SO_ATTACH_FILTER: %s\n", strerror(errno));
    int Q = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ARP));

    fixture_ready();
    fixture_wait();

    struct sockaddr_ll got = { 0 };
    socklen_t len = sizeof got;
    EXPECT(getsockname(P, (struct sockaddr *)&got, &len) == 0 && got.sll_ifindex == (int)if_nametoindex("lo") && got.sll_protocol == htons(ETH_P_ALL),
           "P bound to interface %d protocol %#x, want lo (%u) and ETH_P_ALL", got.sll_ifindex, ntohs(got.sll_protocol), if_nametoindex("lo"));
    int v = 0; len = sizeof v;
    EXPECT(getsockopt(P, SOL_PACKET, PACKET_AUXDATA, &v, &len) == 0 && v == 1, "PACKET_AUXDATA %d, want 1", v);
    struct sock_filter back[4]; socklen_t count = 4;
    EXPECT(getsockopt(P, SOL_SOCKET, SO_GET_FILTER, back, &count) == 0 && count == 2, "filter: %u instructions", count);
    v = 0; len = sizeof v;
    EXPECT(getsockopt(P, SOL_SOCKET, SO_LOCK_FILTER, &v, &len) == 0 && v == 1, "SO_LOCK_FILTER %d, want 1", v);
    EXPECT(lo_promiscuity() >= 1, "lo's promiscuity is %d: the membership was lost", lo_promiscuity());
    // A frame over lo reaches P.
    char drain[65536];
    while (recv(P, drain, sizeof drain, MSG_DONTWAIT) > 0) {}
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    (void)sendto(u, "frame", 5, 0, (struct sockaddr *)&to, sizeof to);
    struct pollfd pf = { .fd = P, .events = POLLIN };
    EXPECT(poll(&pf, 1, 2000) == 1 && recv(P, drain, sizeof drain, 0) > 0, "no frame on P after a datagram over lo");
    int type = 0; len = sizeof type;
    getsockopt(Q, SOL_SOCKET, SO_TYPE, &type, &len);
    struct sockaddr_ll q = { 0 }; len = sizeof q;
    getsockname(Q, (struct sockaddr *)&q, &len);    // (SO_PROTOCOL reads 0 on packet sockets)
    EXPECT(type == SOCK_DGRAM && q.sll_protocol == htons(ETH_P_ARP) && q.sll_ifindex == 0,
           "Q type %d protocol %#x interface %d, want SOCK_DGRAM, ETH_P_ARP, none", type, ntohs(q.sll_protocol), q.sll_ifindex);
    close(P);
    return fixture_finish();
}
