// Half-closed TCP connections, found by the third probing round (December 7 2026): refused
// before ("TCP socket in state CLOSE_WAIT"), which a busy server's connections reach every
// time a client closes first (redis's BGSAVE child held such a copy). Arguments, one state
// each (FidelityTests runs both):
//   closewait  a connection whose peer sent 3 bytes and closed (its program is gone, the
//              kernel closes its end): CLOSE_WAIT; after the restart the 3 bytes, then end of
//              file, then a write is answered with a reset (EPIPE or ECONNRESET), as before;
//   finwait2   a pair inside the application, one end shut down for writing after 3 bytes
//              (FIN_WAIT2), the other in CLOSE_WAIT: after the restart the states, the
//              bytes and end of file on one side, and the other direction still carries
//              data; a write on the shut end fails with EPIPE.
#include "fixture.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int state(int fd) {
    struct tcp_info i;
    socklen_t l = sizeof i;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &i, &l) == 0 ? i.tcpi_state : -1;
}

static void pair(int *client, int *server) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    int L = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(L, (void *)&a, sizeof a) || listen(L, 8) || getsockname(L, (void *)&a, &l)) { perror("listen"); exit(4); }
    *client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*client, (void *)&a, sizeof a)) { perror("connect"); exit(4); }
    *server = accept(L, NULL, NULL);
    close(L);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    const char *m = argc > 1 ? argv[1] : "closewait";
    int A = -1, B = -1;
    char b[64];
    pair(&A, &B);
    if (!strcmp(m, "closewait")) {
        send(B, "abc", 3, 0);
        close(B);
    } else {
        send(A, "xyz", 3, 0);
        shutdown(A, SHUT_WR);
    }
    usleep(100000);
    if (!strcmp(m, "closewait") ? state(A) != TCP_CLOSE_WAIT : state(A) != TCP_FIN_WAIT2) { printf("setup: state %d\n", state(A)); return 4; }
    fixture_ready();
    fixture_wait();
    if (!strcmp(m, "closewait")) {
        EXPECT(state(A) == TCP_CLOSE_WAIT, "closewait: state %d, want CLOSE_WAIT (%d)", state(A), TCP_CLOSE_WAIT);
        ssize_t n = recv(A, b, sizeof b, MSG_DONTWAIT);
        EXPECT(n == 3 && !memcmp(b, "abc", 3), "closewait: read %zd bytes, want 'abc'", n);
        n = recv(A, b, sizeof b, MSG_DONTWAIT);
        EXPECT(n == 0, "closewait: end of file: read gave %zd (%s)", n, n < 0 ? strerror(errno) : "");
        // The peer's end is closed: a write is answered with a reset.
        send(A, "late", 4, MSG_NOSIGNAL);
        usleep(100000);
        n = send(A, "late", 4, MSG_NOSIGNAL);
        EXPECT(n < 0 && (errno == EPIPE || errno == ECONNRESET), "closewait: a write after the peer's close gave %zd (%s), want EPIPE or ECONNRESET", n, n < 0 ? strerror(errno) : "");
    } else {
        EXPECT(state(A) == TCP_FIN_WAIT2, "finwait2: state %d, want FIN_WAIT2 (%d)", state(A), TCP_FIN_WAIT2);
        EXPECT(state(B) == TCP_CLOSE_WAIT, "finwait2: the peer's state %d, want CLOSE_WAIT (%d)", state(B), TCP_CLOSE_WAIT);
        ssize_t n = recv(B, b, sizeof b, MSG_DONTWAIT);
        EXPECT(n == 3 && !memcmp(b, "xyz", 3), "finwait2: the peer read %zd bytes, want 'xyz'", n);
        n = recv(B, b, sizeof b, MSG_DONTWAIT);
        EXPECT(n == 0, "finwait2: the peer's end of file: read gave %zd", n);
        EXPECT(send(B, "back", 4, 0) == 4, "finwait2: the peer's write back");
        struct pollfd p = { A, POLLIN, 0 };
        EXPECT(poll(&p, 1, 2000) == 1 && recv(A, b, sizeof b, 0) == 4 && !memcmp(b, "back", 4), "finwait2: the data written back");
        EXPECT(send(A, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "finwait2: a write after SHUT_WR did not fail with EPIPE");
    }
    return fixture_finish();
}
