// A TCP connection inside the program with urgent data not read yet (send(2) MSG_OOB, as
// telnet and FTP's ABOR send it): "abc", the urgent byte 'X', then "def". A checkpoint must
// refuse it by name (repair mode cannot queue a byte as urgent again; the engine used to
// lose the urgent byte and "def" silently) and leave the program running. At the first
// SIGUSR1 the program reads the urgent byte (recv MSG_OOB) and prints OOB-READ; then a
// checkpoint succeeds, and after the restart (second SIGUSR1) the ordinary bytes "abcdef"
// arrive whole.
#include "fixture.h"
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 1);
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&a, sizeof a);
    int s = accept(l, NULL, NULL);
    send(c, "abc", 3, 0);
    send(c, "X", 1, MSG_OOB);
    send(c, "def", 3, 0);
    usleep(100000);
    struct pollfd p = { .fd = s, .events = POLLPRI };
    EXPECT(poll(&p, 1, 1000) == 1 && (p.revents & POLLPRI), "setup: no urgent data pending");
    fixture_ready();
    fixture_wait();
    fixture_go = 0;
    char oob = 0;
    EXPECT(recv(s, &oob, 1, MSG_OOB) == 1 && oob == 'X', "the urgent byte: '%c'", oob);
    printf("OOB-READ\n");
    fixture_wait();
    char b[8] = {0};
    int got = 0;
    while (got < 6) {
        ssize_t n = recv(s, b + got, sizeof b - 1 - got, 0);
        if (n <= 0) break;
        got += n;
    }
    EXPECT(got == 6 && !memcmp(b, "abcdef", 6), "the ordinary bytes: '%s' (%d)", b, got);
    write(c, "z", 1);
    EXPECT(recv(s, b, 1, 0) == 1 && b[0] == 'z', "the connection carries no more bytes");
    return fixture_finish();
}
