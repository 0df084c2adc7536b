// Signal owners and signals set without O_ASYNC (found by the third probing round, December 7
// 2026; only fds with O_ASYNC kept them before):
//   - a TCP connection inside the application whose accepted end has an owner for SIGURG
//     (F_SETOWN alone: fcntl(2), urgent data signals the owner without O_ASYNC; ftpd and
//     telnetd handle out-of-band data so): after the restart F_GETOWN is the process and
//     urgent data sent by the peer raises SIGURG;
//   - a pipe end with F_SETSIG and F_SETOWN set before O_ASYNC is turned on: after the
//     restart both are kept, and once O_ASYNC is on the signal queued is the one chosen,
//     with si_fd.
#include "fixture.h"
#include <netinet/in.h>
#include <sys/socket.h>

static volatile sig_atomic_t urg, got = -1;
static void on_urg(int s) { (void)s; urg = 1; }
static void on_rt(int s, siginfo_t *si, void *c) { (void)s; (void)c; got = si->si_fd; }

int main(void) {
    signal(SIGURG, on_urg);
    struct sigaction sa = { .sa_flags = SA_SIGINFO | SA_RESTART, .sa_sigaction = on_rt };
    sigaction(SIGRTMIN + 3, &sa, NULL);
    signal(SIGIO, SIG_IGN);

    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &al)) { perror("listen"); return 4; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 4; }
    int s = accept(l, NULL, NULL);
    if (s < 0 || fcntl(s, F_SETOWN, getpid())) { perror("accept"); return 4; }

    int p[2];
    if (pipe(p) || fcntl(p[0], F_SETSIG, SIGRTMIN + 3) || fcntl(p[0], F_SETOWN, getpid())) { perror("pipe"); return 4; }

    fixture_ready();
    fixture_wait();

    EXPECT(fcntl(s, F_GETOWN) == getpid(), "TCP: F_GETOWN %d, want %d", fcntl(s, F_GETOWN), getpid());
    EXPECT(send(c, "!", 1, MSG_OOB) == 1, "TCP: send OOB: %s", strerror(errno));
    for (int i = 0; i < 100 && !urg; i++) usleep(10000);
    EXPECT(urg, "TCP: no SIGURG after urgent data");

    EXPECT(fcntl(p[0], F_GETSIG) == SIGRTMIN + 3, "pipe: F_GETSIG %d, want %d", fcntl(p[0], F_GETSIG), SIGRTMIN + 3);
    EXPECT(fcntl(p[0], F_GETOWN) == getpid(), "pipe: F_GETOWN %d, want %d", fcntl(p[0], F_GETOWN), getpid());
    fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK);
    EXPECT(write(p[1], "x", 1) == 1, "pipe: write");
    for (int i = 0; i < 100 && got == -1; i++) usleep(10000);
    EXPECT(got == p[0], "pipe: no SIGRTMIN+3 for fd %d once O_ASYNC is on (si_fd %d)", p[0], (int)got);
    return fixture_finish();
}
