// Issue 10, "Refused, though the state is ordinary": applications that made their own
// namespaces; here a network namespace. A child unshare(CLONE_NEWNET), then:
//   lo       brought up (SIOCSIFFLAGS IFF_UP): 127.0.0.1 works inside
//   sysctl   net.ipv4.ip_default_ttl 99 and net.ipv4.ip_local_port_range "40000 40100" (per
//            network namespace)
//   sockets  a TCP listener on 127.0.0.1:7777 inside, one connection accepted with "in-ns"
//            queued, and a unix socketpair (sockets belong to the namespace they were made in)
// After restart the child checks: its network namespace is not the root's; lo is up; the two
// sysctls; the listener is on 127.0.0.1:7777 and accepts a new connection whose local port
// comes from 40000-40100; the queued bytes; the root checks that 127.0.0.1:7777 is free in its
// own namespace (nothing listens there: connect is refused) and its own sysctl unchanged.
// Nothing is changed in the root's namespace, even when the child finds itself in it.
#include "fixture.h"
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static void put(const char *path, const char *v) { FILE *f = fopen(path, "w"); if (f) { fputs(v, f); fclose(f); } }
static void get(const char *path, char *out, size_t n) { FILE *f = fopen(path, "r"); out[0] = 0; if (f) { if (!fgets(out, n, f)) out[0] = 0; fclose(f); } out[strcspn(out, "\n")] = 0; }
static void ns_of(pid_t pid, char *out, size_t n) { char p[64]; snprintf(p, sizeof p, "/proc/%d/ns/net", pid); ssize_t r = readlink(p, out, n - 1); out[r > 0 ? r : 0] = 0; }

static int lo_up(int set) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &ifr);
    if (set) { ifr.ifr_flags |= IFF_UP; ioctl(s, SIOCSIFFLAGS, &ifr); ioctl(s, SIOCGIFFLAGS, &ifr); }
    close(s);
    return (ifr.ifr_flags & IFF_UP) != 0;
}

static int dial(int port) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) { close(c); return -1; }
    return c;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    char rootttl[32];
    get("/proc/sys/net/ipv4/ip_default_ttl", rootttl, sizeof rootttl);
    pid_t child = fork();
    if (child == 0) {
        if (unshare(CLONE_NEWNET) < 0) { printf("FAIL: unshare: %s\n", strerror(errno)); _exit(1); }
        lo_up(1);
        put("/proc/sys/net/ipv4/ip_default_ttl", "99");
        put("/proc/sys/net/ipv4/ip_local_port_range", "40000 40100");
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7777), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4) < 0) { printf("FAIL: child: bind 7777: %s\n", strerror(errno)); _exit(1); }
        int c = dial(7777);
        int s = accept(l, NULL, NULL);
        write(c, "in-ns", 5);
        int up[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, up);
        write(up[0], "unix", 4);
        fixture_wait();
        fixture_failures = 0;
        char parent[64], mine[64], v[64];
        ns_of(getppid(), parent, sizeof parent);
        ns_of(getpid(), mine, sizeof mine);
        int own = strcmp(parent, mine) != 0;
        EXPECT(own, "child: in its parent's network namespace (%s)", mine);
        EXPECT(lo_up(0), "child: lo is down");
        get("/proc/sys/net/ipv4/ip_default_ttl", v, sizeof v);
        EXPECT(strcmp(v, "99") == 0, "child: ip_default_ttl %s", v);
        get("/proc/sys/net/ipv4/ip_local_port_range", v, sizeof v);
        EXPECT(strcmp(v, "40000\t40100") == 0, "child: ip_local_port_range '%s'", v);
        char b[8] = {0};
        EXPECT(read(s, b, 5) == 5 && !strcmp(b, "in-ns"), "child: queued bytes '%s'", b);
        memset(b, 0, sizeof b);
        EXPECT(read(up[1], b, 4) == 4 && !strcmp(b, "unix"), "child: socketpair bytes '%s'", b);
        if (own) {
            int c2 = dial(7777);
            int s2 = c2 >= 0 ? accept(l, NULL, NULL) : -1;
            struct sockaddr_in me;
            socklen_t ml = sizeof me;
            if (c2 >= 0) getsockname(c2, (struct sockaddr *)&me, &ml);
            EXPECT(c2 >= 0 && s2 >= 0, "child: no new connection to 127.0.0.1:7777 (errno %d)", errno);
            EXPECT(c2 >= 0 && ntohs(me.sin_port) >= 40000 && ntohs(me.sin_port) <= 40100, "child: new connection from port %d, not in 40000-40100", c2 >= 0 ? ntohs(me.sin_port) : -1);
        }
        printf("child %s\n", fixture_failures ? "FAIL" : "OK");
        _exit(fixture_failures ? 1 : 0);
    }
    usleep(200000);

    fixture_ready();
    fixture_wait();

    int c = dial(7777);
    EXPECT(c < 0, "root: something listens on 127.0.0.1:7777 in the root's namespace");
    if (c >= 0) close(c);
    char v[32];
    get("/proc/sys/net/ipv4/ip_default_ttl", v, sizeof v);
    EXPECT(strcmp(v, rootttl) == 0, "root: ip_default_ttl %s, was %s", v, rootttl);
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    return fixture_finish();
}
