// Messages queued to sockets with SO_PASSCRED carry their sender's credentials
// (SCM_CREDENTIALS, unix(7)): journald, D-Bus and privileged helpers read who sent each one.
// A restart sent every queued message again from ssi, so each read as sent by ssi (its PID,
// uid 0), and a stream's bytes from two senders read as one piece.
//
// P binds a datagram socket with SO_PASSCRED and keeps the receiving end of a stream pair
// with SO_PASSCRED. Child C1 (root) and child C2 (uid 3333, gid 3334) each send a datagram
// and write to the stream; P sends a datagram too. Nothing is read before the checkpoint;
// after the restart P reads every message and checks its bytes and its SCM_CREDENTIALS, and
// that the stream's read stops where the sender changes.
#include "fixture.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

static struct sockaddr_un name = { .sun_family = AF_UNIX };
static socklen_t namelen;

static void sender(int stream, const char *dgram, const char *bytes, int done) {
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (sendto(s, dgram, strlen(dgram), 0, (struct sockaddr *)&name, namelen) < 0) { perror("sendto"); _exit(4); }
    if (stream >= 0 && write(stream, bytes, strlen(bytes)) < 0) _exit(4);
    if (write(done, "x", 1) != 1) _exit(4);
}

static int recv_creds(int fd, char *buf, size_t len, struct ucred *cred) {
    struct iovec iov = { .iov_base = buf, .iov_len = len - 1 };
    union { struct cmsghdr align; char b[CMSG_SPACE(sizeof(struct ucred))]; } u;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b };
    memset(cred, 0, sizeof *cred);
    ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
    if (n < 0) return -1;
    buf[n] = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) memcpy(cred, CMSG_DATA(c), sizeof *cred);
    return (int)n;
}

static void expect_msg(int fd, const char *what, const char *want, pid_t pid, uid_t uid, gid_t gid) {
    char buf[64]; struct ucred c;
    int n = recv_creds(fd, buf, sizeof buf, &c);
    EXPECT(n == (int)strlen(want) && strcmp(buf, want) == 0, "%s: read '%s' (%d), want '%s'", what, n < 0 ? "" : buf, n, want);
    EXPECT(c.pid == pid && c.uid == uid && c.gid == gid, "%s '%s': SCM_CREDENTIALS pid %d uid %u gid %u, want pid %d uid %u gid %u",
           what, want, c.pid, c.uid, c.gid, pid, uid, gid);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    namelen = offsetof(struct sockaddr_un, sun_path) + 1 + snprintf(name.sun_path + 1, sizeof name.sun_path - 1, "ssi-scmcreds-%d", getpid());
    int one = 1;
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (bind(d, (struct sockaddr *)&name, namelen) || setsockopt(d, SOL_SOCKET, SO_PASSCRED, &one, sizeof one)) return 4;
    int sp[2]; if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) return 4;
    if (setsockopt(sp[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one)) return 4;
    int done[2]; if (pipe(done)) return 4;
    pid_t c1 = fork();
    if (c1 == 0) {
        close(sp[0]); close(d); close(done[0]);
        sender(sp[1], "from-c1", "aa", done[1]);
        fixture_catch_usr1(); fixture_wait(); _exit(0);
    }
    char x;
    if (read(done[0], &x, 1) != 1) return 4;          // C1's stream bytes first
    pid_t c2 = fork();
    if (c2 == 0) {
        close(sp[0]); close(d); close(done[0]);
        if (syscall(SYS_setresgid, 3334, 3334, 3334) || syscall(SYS_setresuid, 3333, 3333, 3333)) _exit(4);
        sender(sp[1], "from-c2", "bbb", done[1]);
        fixture_catch_usr1(); fixture_wait(); _exit(0);
    }
    if (read(done[0], &x, 1) != 1) return 4;
    sender(-1, "from-p", "", done[1]);
    if (read(done[0], &x, 1) != 1) return 4;
    fixture_ready();
    fixture_wait();
    expect_msg(d, "datagram", "from-c1", c1, 0, 0);
    expect_msg(d, "datagram", "from-c2", c2, 3333, 3334);
    expect_msg(d, "datagram", "from-p", getpid(), 0, 0);
    expect_msg(sp[0], "stream", "aa", c1, 0, 0);
    expect_msg(sp[0], "stream", "bbb", c2, 3333, 3334);
    kill(c1, SIGUSR1); kill(c2, SIGUSR1);
    int st;
    EXPECT(waitpid(c1, &st, 0) == c1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "C1 (status 0x%x)", st);
    EXPECT(waitpid(c2, &st, 0) == c2 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "C2 (status 0x%x)", st);
    return fixture_finish();
}
