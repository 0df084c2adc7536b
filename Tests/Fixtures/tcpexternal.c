// Issue 10, "Refused, though the state is ordinary": a TCP connection to a peer OUTSIDE the
// application, to be saved and rebuilt with TCP_REPAIR (CRIU's --tcp-established) so that the
// peer notices nothing when the restart comes soon enough.
// HARNESS: run the peer tcppeer.c as a plain process first (not under ssi), pass its port as
// argv[1]; checkpoint and restart with the option that allows established connections to
// the outside; once the application has been sent SIGUSR1, create the file "go" in the
// peer's directory; the run passes only if the application prints PASS and the peer prints
// "PEER PASS". With lifecycle.sh:
//   lifecycle.sh --peer tcppeer.c --ck-arg --tcp-established --rs-arg --tcp-established tcpexternal.c @PORT
// State at checkpoint (application side): connected to 127.0.0.1:port, TCP_NODELAY and
// SO_KEEPALIVE set, O_NONBLOCK; 3000 bytes from the peer in the receive queue, unread; the
// send queue full (the peer is not reading, its window closed): N bytes of pattern B not yet
// acknowledged. After restart: same local and peer addresses, TCP_INFO state ESTABLISHED,
// the 3000 bytes of A in order, options kept; the application sends "#N\n", reads the peer's
// "ACK\n" (which the peer sends only after receiving all N bytes of B intact), closes.
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int geti(int s, int lv, int o) { int v = -1; socklen_t l = sizeof v; getsockopt(s, lv, o, &v, &l); return v; }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) { printf("FAIL: usage: tcpexternal PORT (the port of tcppeer)\n"); return 1; }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(atoi(argv[1])) };
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { printf("FAIL: connect to the peer: %s\n", strerror(errno)); return 1; }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    write(s, "HELLO\n", 6);
    int avail = 0;
    for (int i = 0; i < 500 && avail < 3000; i++) { ioctl(s, FIONREAD, &avail); usleep(10000); }
    fcntl(s, F_SETFL, O_NONBLOCK);
    long n = 0;
    char B[4096];
    for (;;) {
        for (int i = 0; i < (int)sizeof B; i++) B[i] = 'a' + (n + i) % 26;
        ssize_t w = write(s, B, sizeof B);
        if (w <= 0) { usleep(100000); w = write(s, B, sizeof B); if (w <= 0) break; }
        n += w;
    }
    int outq = 0;
    ioctl(s, TIOCOUTQ, &outq);
    struct sockaddr_in me, peer;
    socklen_t l = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &l);
    l = sizeof peer;
    getpeername(s, (struct sockaddr *)&peer, &l);
    printf("sent %ld bytes of B, %d still in the send queue; %d bytes of A waiting\n", n, outq, avail);

    fixture_ready();
    fixture_wait();

    struct sockaddr_in me2, peer2;
    l = sizeof me2;
    getsockname(s, (struct sockaddr *)&me2, &l);
    l = sizeof peer2;
    getpeername(s, (struct sockaddr *)&peer2, &l);
    EXPECT(memcmp(&me, &me2, sizeof me) == 0 && memcmp(&peer, &peer2, sizeof peer) == 0, "addresses changed: local port %d peer port %d, were %d %d", ntohs(me2.sin_port), ntohs(peer2.sin_port), ntohs(me.sin_port), ntohs(peer.sin_port));
    struct tcp_info ti;
    l = sizeof ti;
    memset(&ti, 0, sizeof ti);
    getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &l);
    EXPECT(ti.tcpi_state == TCP_ESTABLISHED, "TCP state %d, expected ESTABLISHED", ti.tcpi_state);
    EXPECT(geti(s, IPPROTO_TCP, TCP_NODELAY) == 1 && geti(s, SOL_SOCKET, SO_KEEPALIVE) == 1, "options lost");
    EXPECT(fcntl(s, F_GETFL) & O_NONBLOCK, "O_NONBLOCK lost");
    int q = -1;
    ioctl(s, FIONREAD, &q);
    EXPECT(q == 3000, "%d bytes of A waiting, expected 3000", q);
    char A[3000];
    int got = 0, bad = 0;
    struct pollfd p = { .fd = s, .events = POLLIN };
    while (got < 3000 && poll(&p, 1, 2000) == 1) { ssize_t r = read(s, A + got, 3000 - got); if (r <= 0) break; got += r; }
    for (int i = 0; i < got; i++) if ((unsigned char)A[i] != ((i * 7 + 3) & 0xff)) bad++;
    EXPECT(got == 3000 && bad == 0, "A: read %d bytes, %d wrong", got, bad);
    char end[32];
    int len = snprintf(end, sizeof end, "#%ld\n", n), off = 0;
    p.events = POLLOUT;
    while (off < len && poll(&p, 1, 30000) == 1) { ssize_t w = write(s, end + off, len - off); if (w > 0) off += w; else if (errno != EAGAIN) break; }
    EXPECT(off == len, "could not send the count (errno %d)", errno);
    char ack[8] = {0};
    got = 0;
    p.events = POLLIN;
    while (got < 4 && poll(&p, 1, 30000) == 1) { ssize_t r = read(s, ack + got, 4 - got); if (r <= 0) break; got += r; }
    EXPECT(got == 4 && strcmp(ack, "ACK\n") == 0, "no ACK from the peer (read %d '%s', errno %d)", got, ack, errno);
    close(s);
    return fixture_finish();
}
