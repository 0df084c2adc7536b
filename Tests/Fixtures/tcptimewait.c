// Issue 10, "Refused, though the state is ordinary": a closed TCP socket whose port is still
// taken (TIME_WAIT) fails restart with "Address already in use". Needs nothing special from
// the harness but a restart within TIME_WAIT's 60 s.
//   listener  a TCP listener on 127.0.0.1:port, without SO_REUSEADDR (as many programs do)
//   closed    a client connected to it and accepted; the server side closed first (the active
//             close), then the client: the server's end of that connection is now in TIME_WAIT
//             on the listener's port (owned by no process, held by the kernel)
//   a second listener on [::1]:port6 with SO_REUSEADDR 1 and the same story
// After restart: both listeners listen on their ports again (getsockname), SO_REUSEADDR as it
// was (0 and 1: a restart may need it for its bind, but must not leave it set), and accept a
// new connection each.
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int geti(int s, int lv, int o) { int v = -1; socklen_t l = sizeof v; getsockopt(s, lv, o, &v, &l); return v; }

// A listener of family fam on the loopback, then one connection opened and closed by the
// server first: its port is left with a TIME_WAIT socket.
static int listener_with_timewait(int fam, int reuse, struct sockaddr_storage *name) {
    int l = socket(fam, SOCK_STREAM, 0);
    if (reuse) setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    socklen_t al;
    if (fam == AF_INET) { struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }; bind(l, (struct sockaddr *)&a, sizeof a); }
    else { struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT }; bind(l, (struct sockaddr *)&a, sizeof a); }
    listen(l, 8);
    // Zeroed first: getsockname fills only the family's length, and the check after restart
    // compares the whole sockaddr_storage with one read into a zeroed buffer.
    memset(name, 0, sizeof *name);
    al = sizeof *name;
    getsockname(l, (struct sockaddr *)name, &al);
    int c = socket(fam, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)name, al);
    int s = accept(l, NULL, NULL);
    write(c, "hi", 2);
    char b[4];
    read(s, b, 2);
    close(s);                                                  // server closes first: TIME_WAIT on its side
    read(c, b, sizeof b);                                      // EOF
    close(c);
    return l;
}

static int port_of(struct sockaddr_storage *a) { return ntohs(a->ss_family == AF_INET ? ((struct sockaddr_in *)a)->sin_port : ((struct sockaddr_in6 *)a)->sin6_port); }

static int timewait_on(int port) {
    // /proc/net/tcp{,6}: state 06 is TIME_WAIT; local address "IP:PORT" in hex.
    const char *files[2] = { "/proc/net/tcp", "/proc/net/tcp6" };
    int n = 0;
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        char line[512], local[64];
        unsigned st;
        while (f && fgets(line, sizeof line, f)) {
            if (sscanf(line, "%*d: %63s %*s %x", local, &st) == 2 && st == 6) {
                char *colon = strrchr(local, ':');
                if (colon && (int)strtol(colon + 1, NULL, 16) == port) n++;
            }
        }
        if (f) fclose(f);
    }
    return n;
}

int main(void) {
    struct sockaddr_storage n4, n6;
    int l4 = listener_with_timewait(AF_INET, 0, &n4);
    int l6 = listener_with_timewait(AF_INET6, 1, &n6);
    usleep(50000);
    printf("ports %d and %d; TIME_WAIT sockets on them: %d and %d\n", port_of(&n4), port_of(&n6), timewait_on(port_of(&n4)), timewait_on(port_of(&n6)));
    EXPECT(timewait_on(port_of(&n4)) >= 1, "setup: no TIME_WAIT on the IPv4 listener's port");

    fixture_ready();
    fixture_wait();

    int ls[2] = { l4, l6 };
    struct sockaddr_storage *ns[2] = { &n4, &n6 };
    for (int i = 0; i < 2; i++) {
        struct sockaddr_storage a;
        socklen_t al = sizeof a;
        memset(&a, 0, sizeof a);
        getsockname(ls[i], (struct sockaddr *)&a, &al);
        EXPECT(memcmp(&a, ns[i], sizeof a) == 0, "listener %d: not bound to port %d any more (getsockname port %d)", i, port_of(ns[i]), port_of(&a));
        EXPECT(geti(ls[i], SOL_SOCKET, SO_ACCEPTCONN) == 1, "listener %d: not listening", i);
        EXPECT(geti(ls[i], SOL_SOCKET, SO_REUSEADDR) == i, "listener %d: SO_REUSEADDR %d, was %d", i, geti(ls[i], SOL_SOCKET, SO_REUSEADDR), i);
        int c = socket(ns[i]->ss_family, SOCK_STREAM, 0);
        int ok = connect(c, (struct sockaddr *)ns[i], ns[i]->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) == 0;
        int s = ok ? accept(ls[i], NULL, NULL) : -1;
        char b[4] = {0};
        EXPECT(s >= 0 && write(c, "new", 3) == 3 && read(s, b, 3) == 3, "listener %d: a new connection failed", i);
        close(c);
        if (s >= 0) close(s);
    }
    return fixture_finish();
}
