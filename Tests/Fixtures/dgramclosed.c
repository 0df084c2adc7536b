// Issue 10, "Refused, though the state is ordinary": a unix datagram socket whose queued
// messages' sender has closed.
//   named     a receiver bound to the (absolute) path of "recv.sock"; three senders each sent
//             messages and closed: an unbound one ("a1", "a2"), one bound to "send.sock" ("b1"; its socket
//             file remains), one bound to an abstract name ("c1")
//   pair      a SOCK_DGRAM socketpair whose one end sent "p1", "p2" and was closed
//   seq       a SOCK_SEQPACKET socketpair, the same ("s1", "s2"), then EOF (argument
//             "no-seqpacket" leaves it out, to see the datagram cases alone)
// After restart: the receiver reads the messages in order with their boundaries, recvfrom
// gives each one's sender address (none, "send.sock", "\0abstract-sender"); the pair's
// remaining end reads p1, p2; the seqpacket end reads s1, s2, then 0 (EOF).
#include "fixture.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static char cwd[80];                 // names are absolute: relative ones are unixrelpath.c

static int bound(const char *name, int abstract) {
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    socklen_t l = sizeof a;
    if (abstract) { a.sun_path[0] = 0; strcpy(a.sun_path + 1, name); l = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name); }
    else snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", cwd, name);
    bind(s, (struct sockaddr *)&a, l);
    return s;
}

int main(int argc, char **argv) {
    int seq = !(argc > 1 && strcmp(argv[1], "no-seqpacket") == 0);
    getcwd(cwd, sizeof cwd);
    unlink("recv.sock");
    unlink("send.sock");
    int r = bound("recv.sock", 0);
    struct sockaddr_un to = { .sun_family = AF_UNIX };
    snprintf(to.sun_path, sizeof to.sun_path, "%s/recv.sock", cwd);
    int a = socket(AF_UNIX, SOCK_DGRAM, 0);
    int b = bound("send.sock", 0);
    int c = bound("abstract-sender", 1);
    sendto(a, "a1", 2, 0, (struct sockaddr *)&to, sizeof to);
    sendto(b, "b1", 2, 0, (struct sockaddr *)&to, sizeof to);
    sendto(a, "a2", 2, 0, (struct sockaddr *)&to, sizeof to);
    sendto(c, "c1", 2, 0, (struct sockaddr *)&to, sizeof to);
    close(a);
    close(b);
    close(c);
    int p[2], q[2];
    socketpair(AF_UNIX, SOCK_DGRAM, 0, p);
    send(p[1], "p1", 2, 0);
    send(p[1], "p2", 2, 0);
    close(p[1]);
    if (seq) {
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q);
        send(q[1], "s1", 2, 0);
        send(q[1], "s2", 2, 0);
        close(q[1]);
    }

    fixture_ready();
    fixture_wait();

    const char *want[4] = { "a1", "b1", "a2", "c1" };
    char sendpath[100];
    snprintf(sendpath, sizeof sendpath, "%s/send.sock", cwd);
    const char *from[4] = { "", sendpath, "", "@abstract-sender" };
    for (int i = 0; i < 4; i++) {
        char buf[16] = {0};
        struct sockaddr_un fa;
        socklen_t fl = sizeof fa;
        memset(&fa, 0, sizeof fa);
        ssize_t n = recvfrom(r, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&fa, &fl);
        char name[110] = {0};
        if (fl > offsetof(struct sockaddr_un, sun_path)) {
            size_t len = fl - offsetof(struct sockaddr_un, sun_path);
            if (fa.sun_path[0] == 0) { name[0] = '@'; memcpy(name + 1, fa.sun_path + 1, len - 1); }
            else snprintf(name, sizeof name, "%s", fa.sun_path);
        }
        EXPECT(n == 2 && strcmp(buf, want[i]) == 0, "named: message %d: %zd '%s', expected '%s'", i, n, buf, want[i]);
        EXPECT(strcmp(name, from[i]) == 0, "named: message %d: sender '%s', expected '%s'", i, name, from[i]);
    }
    char buf[16];
    EXPECT(recv(r, buf, sizeof buf, MSG_DONTWAIT) < 0 && errno == EAGAIN, "named: more messages than sent");
    for (int i = 1; i <= 2; i++) {
        memset(buf, 0, sizeof buf);
        ssize_t n = recv(p[0], buf, sizeof buf, MSG_DONTWAIT);
        char w[4];
        snprintf(w, sizeof w, "p%d", i);
        EXPECT(n == 2 && strcmp(buf, w) == 0, "pair: %zd '%s', expected '%s'", n, buf, w);
    }
    for (int i = 1; seq && i <= 2; i++) {
        memset(buf, 0, sizeof buf);
        ssize_t n = recv(q[0], buf, sizeof buf, MSG_DONTWAIT);
        char w[4];
        snprintf(w, sizeof w, "s%d", i);
        EXPECT(n == 2 && strcmp(buf, w) == 0, "seq: %zd '%s', expected '%s'", n, buf, w);
    }
    EXPECT(!seq || recv(q[0], buf, sizeof buf, MSG_DONTWAIT) == 0, "seq: no EOF after the messages");
    return fixture_finish();
}
