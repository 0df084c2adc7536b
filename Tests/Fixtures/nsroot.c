// The application's root process makes its own network namespace (unshare(CLONE_NEWNET), as
// `unshare -n prog` or a sandboxed service does), brings lo up and listens on 127.0.0.1. The
// restart used to put it back in ssi's network namespace (found by probing, December 2026):
// a sandboxed server then reachable from the host. After restart it must still be in a
// namespace of its own (not PID 1's), with lo up and nothing else, its listener taking a
// connection.
#include "fixture.h"
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int lo_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq r = {0};
    strcpy(r.ifr_name, "lo");
    int up = ioctl(s, SIOCGIFFLAGS, &r) == 0 && (r.ifr_flags & IFF_UP);
    close(s);
    return up;
}

static int interfaces(void) {
    struct if_nameindex *l = if_nameindex(), *p;
    int n = 0;
    for (p = l; p && p->if_index; p++) n++;
    if (l) if_freenameindex(l);
    return n;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (unshare(CLONE_NEWNET) != 0) { printf("FAIL: setup: unshare(CLONE_NEWNET): %s\n", strerror(errno)); return 4; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq r = {0};
    strcpy(r.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &r);
    r.ifr_flags |= IFF_UP;
    EXPECT(ioctl(s, SIOCSIFFLAGS, &r) == 0, "setup: lo up: %s", strerror(errno));
    close(s);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    EXPECT(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0, "setup: listen: %s", strerror(errno));
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    char mine[64] = {0}, init[64] = {0};
    readlink("/proc/self/ns/net", mine, sizeof mine - 1);
    readlink("/proc/1/ns/net", init, sizeof init - 1);
    EXPECT(strcmp(mine, init) != 0, "setup: not in a namespace of its own");

    fixture_ready();
    fixture_wait();

    memset(mine, 0, sizeof mine);
    readlink("/proc/self/ns/net", mine, sizeof mine - 1);
    EXPECT(strcmp(mine, init) != 0, "back in PID 1's network namespace (%s)", mine);
    EXPECT(lo_up(), "lo is down");
    EXPECT(interfaces() == 1, "%d interfaces, not lo alone", interfaces());
    int c = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect to its listener: %s", strerror(errno));
    int x = accept(l, NULL, NULL);
    EXPECT(x >= 0 && write(c, "k", 1) == 1, "accept: %s", strerror(errno));
    char b = 0;
    EXPECT(read(x, &b, 1) == 1 && b == 'k', "the connection carries nothing");
    return fixture_finish();
}
