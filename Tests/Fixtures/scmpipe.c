// Issue 10, "Refused, though the state is ordinary": a unix socket with an fd in flight whose
// file is a pipe (SCM_RIGHTS of a pipe end), as programs pass pipes to helpers.
//   p1   the read end of a pipe holding "pipe data", sent with SCM_RIGHTS (with the bytes
//        "msg1") and closed by the sender; the sender keeps the write end
//   p2   the write end (O_NONBLOCK) of a second pipe, sent in the same message as p1 is not:
//        in a second message "msg2" with the write end of a pipe whose read end we keep
//   both the two ends of a third pipe sent together in one message "msg3", and closed here: the
//        pipe exists only in flight
// After restart the receiver gets msg1 with an fd that reads "pipe data" and then whatever we
// write to the kept write end; msg2 with an fd that writes into our kept read end, O_NONBLOCK
// kept; msg3 with two fds that are the two ends of one pipe (a byte written to one comes out
// of the other).
#include "fixture.h"
#include <sys/socket.h>

static int send_fds(int s, const char *msg, int *fds, int n) {
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = { (void *)msg, strlen(msg) };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    return sendmsg(s, &m, 0);
}

static int recv_fds(int s, char *msg, size_t ml, int *fds) {
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = { msg, ml };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    ssize_t r = recvmsg(s, &m, MSG_DONTWAIT);
    if (r < 0) return -1;
    msg[r] = 0;
    int n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_type == SCM_RIGHTS) { n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); memcpy(fds, CMSG_DATA(c), n * sizeof(int)); }
    return n;
}

int main(void) {
    int sp[2];
    socketpair(AF_UNIX, SOCK_DGRAM, 0, sp);
    int p1[2], p2[2], p3[2];
    pipe(p1);
    pipe2(p2, 0);
    pipe(p3);
    fcntl(p2[1], F_SETFL, O_NONBLOCK);
    write(p1[1], "pipe data", 9);
    send_fds(sp[0], "msg1", &p1[0], 1);
    close(p1[0]);
    send_fds(sp[0], "msg2", &p2[1], 1);
    close(p2[1]);
    send_fds(sp[0], "msg3", p3, 2);
    close(p3[0]);
    close(p3[1]);

    fixture_ready();
    fixture_wait();

    char msg[16];
    int fds[4] = { -1, -1, -1, -1 };
    int n = recv_fds(sp[1], msg, sizeof msg - 1, fds);
    EXPECT(n == 1 && strcmp(msg, "msg1") == 0, "msg1: %d fds, '%s'", n, n >= 0 ? msg : "");
    char b[16] = {0};
    EXPECT(n == 1 && read(fds[0], b, 9) == 9 && strcmp(b, "pipe data") == 0, "p1: read '%s'", b);
    write(p1[1], "more", 4);
    memset(b, 0, sizeof b);
    EXPECT(n == 1 && read(fds[0], b, 4) == 4 && strcmp(b, "more") == 0, "p1: not the pipe of the kept write end ('%s')", b);
    n = recv_fds(sp[1], msg, sizeof msg - 1, fds);
    EXPECT(n == 1 && strcmp(msg, "msg2") == 0, "msg2: %d fds", n);
    EXPECT(n == 1 && (fcntl(fds[0], F_GETFL) & (O_NONBLOCK | O_ACCMODE)) == (O_NONBLOCK | O_WRONLY), "p2: flags %o", n == 1 ? fcntl(fds[0], F_GETFL) : -1);
    memset(b, 0, sizeof b);
    EXPECT(n == 1 && write(fds[0], "back", 4) == 4 && read(p2[0], b, 4) == 4 && strcmp(b, "back") == 0, "p2: not the pipe of the kept read end ('%s')", b);
    n = recv_fds(sp[1], msg, sizeof msg - 1, fds);
    EXPECT(n == 2 && strcmp(msg, "msg3") == 0, "msg3: %d fds", n);
    memset(b, 0, sizeof b);
    EXPECT(n == 2 && write(fds[1], "x", 1) == 1 && read(fds[0], b, 1) == 1 && b[0] == 'x', "p3: its two ends are not one pipe");
    return fixture_finish();
}
