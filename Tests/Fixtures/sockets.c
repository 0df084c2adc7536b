// A small server and its client inside one application, with every kind of socket state the
// engine rebuilds: a named unix listener with one accepted connection (bytes queued both
// ways) and two connections still waiting to be accepted; a named datagram socket holding
// four messages from a named sender, an unnamed one and a connected one; an abstract
// seqpacket connection with two records queued; a TCP listener with an accepted connection
// carrying 256 KiB one way and a few bytes the other; a second, idle TCP listener.
// After restart each side checks its names, its queues and that every socket still works.
#include "fixture.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <stddef.h>

#define BIG (256 * 1024)

static struct sockaddr_un unix_addr(const char *dir, const char *name, socklen_t *len) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (dir) snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, name);
    else snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "%s", name);   // abstract
    *len = dir ? sizeof a : (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    return a;
}

static int expect_read(int fd, const char *want, const char *what) {
    char buf[64] = {0};
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    int ok = n == (ssize_t)strlen(want) && memcmp(buf, want, n) == 0;
    EXPECT(ok, "%s: read '%s' (%zd), want '%s'", what, buf, n, want);
    return ok;
}

static int pattern_ok(const unsigned char *b, size_t off, size_t n) {
    for (size_t i = 0; i < n; i++) if (b[i] != (unsigned char)((off + i) * 7 + 3)) return 0;
    return 1;
}

int main(void) {
    char dir[256];
    if (!getcwd(dir, sizeof dir)) return 2;
    char abstract[64];
    snprintf(abstract, sizeof abstract, "ssi-sockets-%d", getpid());
    socklen_t len;

    // Unix stream listener; backlog 4.
    int lst = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un la = unix_addr(dir, "srv.sock", &len);
    unlink(la.sun_path);
    if (bind(lst, (struct sockaddr *)&la, len) || listen(lst, 4)) { perror("unix listen"); return 2; }
    chmod(la.sun_path, 0660);
    // Datagram socket with a name.
    int dg = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un da = unix_addr(dir, "dg.sock", &len);
    unlink(da.sun_path);
    if (bind(dg, (struct sockaddr *)&da, len)) { perror("bind dg"); return 2; }
    // Abstract seqpacket listener.
    int sqlst = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    socklen_t sqlen;
    struct sockaddr_un sa = unix_addr(NULL, abstract, &sqlen);
    if (bind(sqlst, (struct sockaddr *)&sa, sqlen) || listen(sqlst, 2)) { perror("seqpacket listen"); return 2; }
    // TCP listener on a free loopback port, and an idle one.
    int tl = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(tl, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in ta = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t talen = sizeof ta;
    if (bind(tl, (struct sockaddr *)&ta, sizeof ta) || listen(tl, 8) || getsockname(tl, (struct sockaddr *)&ta, &talen)) { perror("tcp listen"); return 2; }
    int idle = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 ia = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    socklen_t ialen = sizeof ia;
    if (bind(idle, (struct sockaddr *)&ia, sizeof ia) || listen(idle, 3) || getsockname(idle, (struct sockaddr *)&ia, &ialen)) { perror("tcp6 listen"); return 2; }

    // A connection whose other end was closed after writing: the bytes, then end of file.
    int orphan[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, orphan);
    write(orphan[1], "bye", 3);
    close(orphan[1]);

    // File descriptors in flight (SCM_RIGHTS): a file open at offset 5 and one end of a
    // socketpair that no process holds any more, sent with "files".
    int carrier[2], inner[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, carrier);
    socketpair(AF_UNIX, SOCK_STREAM, 0, inner);
    char fpath[300];
    snprintf(fpath, sizeof fpath, "%s/inflight.txt", dir);
    int ff = open(fpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    write(ff, "0123456789", 10);
    lseek(ff, 5, SEEK_SET);
    {
        int pass[2] = { ff, inner[0] };
        char cbuf[CMSG_SPACE(sizeof pass)];
        memset(cbuf, 0, sizeof cbuf);
        struct iovec iov = { .iov_base = "files", .iov_len = 5 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof pass);
        memcpy(CMSG_DATA(cm), pass, sizeof pass);
        if (sendmsg(carrier[1], &m, 0) != 5) { perror("sendmsg SCM_RIGHTS"); return 2; }
        close(ff);
        close(inner[0]);
        write(inner[1], "via-inflight", 12);
    }

    int ready[2];
    pipe(ready);
    pid_t c = fork();
    if (c == 0) {
        fixture_catch_usr1();
        int conn = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(conn, (struct sockaddr *)&la, sizeof la)) { perror("connect"); _exit(2); }
        write(conn, "c2s", 3);
        int p1 = socket(AF_UNIX, SOCK_STREAM, 0), p2 = socket(AF_UNIX, SOCK_STREAM, 0);
        connect(p1, (struct sockaddr *)&la, sizeof la);
        connect(p2, (struct sockaddr *)&la, sizeof la);
        int named = socket(AF_UNIX, SOCK_DGRAM, 0);
        struct sockaddr_un ca = unix_addr(dir, "cdg.sock", &len);
        unlink(ca.sun_path);
        bind(named, (struct sockaddr *)&ca, len);
        sendto(named, "one", 3, 0, (struct sockaddr *)&da, sizeof da);
        sendto(named, "two!", 4, 0, (struct sockaddr *)&da, sizeof da);
        int anon = socket(AF_UNIX, SOCK_DGRAM, 0);
        sendto(anon, "three", 5, 0, (struct sockaddr *)&da, sizeof da);
        close(anon);
        int cd = socket(AF_UNIX, SOCK_DGRAM, 0);
        connect(cd, (struct sockaddr *)&da, sizeof da);
        send(cd, "four", 4, 0);
        int sq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
        if (connect(sq, (struct sockaddr *)&sa, sqlen)) { perror("seqpacket connect"); _exit(2); }
        send(sq, "rec1", 4, 0);
        send(sq, "rec22", 5, 0);
        int tc = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(tc, (struct sockaddr *)&ta, sizeof ta)) { perror("tcp connect"); _exit(2); }
        int nb = 1;
        setsockopt(tc, IPPROTO_TCP, TCP_NODELAY, &nb, sizeof nb);
        static unsigned char big[BIG];
        for (size_t i = 0; i < BIG; i++) big[i] = (unsigned char)(i * 7 + 3);
        write(ready[1], "r", 1);
        // More than the socket buffers hold at once: part of it waits in this process's
        // send queue, part in the server's receive queue; the rest is written after restart.
        size_t sent = 0;
        fcntl(tc, F_SETFL, O_NONBLOCK);
        while (sent < BIG && !fixture_go) {
            ssize_t n = send(tc, big + sent, BIG - sent, 0);
            if (n > 0) sent += n; else if (errno == EAGAIN) usleep(1000); else break;
        }
        fixture_wait();
        fcntl(tc, F_SETFL, 0);
        while (sent < BIG) { ssize_t n = send(tc, big + sent, BIG - sent, 0); if (n <= 0) break; sent += n; }
        int ok = 1;
        char buf[64] = {0};
        ok &= recv(conn, buf, sizeof buf, MSG_DONTWAIT) == 3 && memcmp(buf, "s2c", 3) == 0;
        if (!ok) printf("FAIL: child unix read '%s'\n", buf);
        struct sockaddr_un peer;
        socklen_t plen = sizeof peer;
        getpeername(conn, (struct sockaddr *)&peer, &plen);
        if (strcmp(peer.sun_path, la.sun_path) != 0) { ok = 0; printf("FAIL: child peer name '%s'\n", peer.sun_path); }
        memset(buf, 0, sizeof buf);
        ssize_t n = recv(tc, buf, sizeof buf, 0);
        if (n != 7 || memcmp(buf, "tcp-s2c", 7) != 0) { ok = 0; printf("FAIL: child tcp read '%s' (%zd)\n", buf, n); }
        write(p1, "pending-ok", 10);
        write(conn, ok ? "child-ok" : "child-KO", 8);
        fflush(stdout);
        usleep(300000);
        _exit(ok && sent == BIG ? 0 : 1);
    }
    char r;
    read(ready[0], &r, 1);
    int srv = accept(lst, NULL, NULL);
    write(srv, "s2c", 3);
    int sqs = accept(sqlst, NULL, NULL);
    int ts = accept(tl, NULL, NULL);
    write(ts, "tcp-s2c", 7);
    usleep(300000);
    fixture_ready();
    fixture_wait();

    // Unix stream: the queued bytes, our name (the listener's), two connections pending.
    expect_read(srv, "c2s", "unix accepted connection");
    struct sockaddr_un me;
    socklen_t mlen = sizeof me;
    getsockname(srv, (struct sockaddr *)&me, &mlen);
    EXPECT(strcmp(me.sun_path, la.sun_path) == 0, "accepted socket's name '%s'", me.sun_path);
    struct stat st;
    EXPECT(stat(la.sun_path, &st) == 0 && (st.st_mode & 0777) == 0660, "listener file mode %o", st.st_mode & 0777);
    fcntl(lst, F_SETFL, O_NONBLOCK);
    int a1 = accept(lst, NULL, NULL), a2 = accept(lst, NULL, NULL), a3 = accept(lst, NULL, NULL);
    EXPECT(a1 >= 0 && a2 >= 0 && a3 < 0 && errno == EAGAIN, "pending connections: %d %d %d", a1, a2, a3);
    expect_read(orphan[0], "bye", "connection closed by its peer");
    char eof[4];
    EXPECT(recv(orphan[0], eof, sizeof eof, MSG_DONTWAIT) == 0, "no end of file after the peer closed");
    {
        char data[16] = {0}, cbuf[CMSG_SPACE(2 * sizeof(int))];
        struct iovec iov = { .iov_base = data, .iov_len = sizeof data - 1 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
        ssize_t n = recvmsg(carrier[0], &m, MSG_DONTWAIT);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        int got[2] = {-1, -1};
        if (cm && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len == CMSG_LEN(2 * sizeof(int))) memcpy(got, CMSG_DATA(cm), sizeof got);
        EXPECT(n == 5 && strcmp(data, "files") == 0 && got[0] >= 0 && got[1] >= 0, "message with fds in flight: '%s' (%zd), fds %d %d", data, n, got[0], got[1]);
        if (got[0] >= 0) {
            char rest[8] = {0};
            EXPECT(read(got[0], rest, sizeof rest - 1) == 5 && strcmp(rest, "56789") == 0, "file in flight read '%s' from its offset", rest);
        }
        if (got[1] >= 0) expect_read(got[1], "via-inflight", "socket in flight");
    }
    // Datagrams in order, with their senders.
    const char *want[] = {"one", "two!", "three", "four"};
    for (int i = 0; i < 4; i++) {
        char buf[64] = {0};
        struct sockaddr_un from;
        socklen_t flen = sizeof from;
        memset(&from, 0, sizeof from);
        ssize_t n = recvfrom(dg, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
        EXPECT(n == (ssize_t)strlen(want[i]) && strcmp(buf, want[i]) == 0, "datagram %d: '%s' (%zd)", i, buf, n);
        if (i < 2) EXPECT(flen > sizeof(sa_family_t) && strstr(from.sun_path, "cdg.sock"), "datagram %d sender '%s'", i, from.sun_path);
    }
    char extra[8];
    EXPECT(recv(dg, extra, sizeof extra, MSG_DONTWAIT) < 0, "a fifth datagram");
    // Seqpacket records keep their boundaries.
    expect_read(sqs, "rec1", "seqpacket record 1");
    expect_read(sqs, "rec22", "seqpacket record 2");
    // TCP: 256 KiB in order, none lost or doubled.
    static unsigned char got[BIG];
    size_t have = 0;
    while (have < BIG) {
        ssize_t n = recv(ts, got + have, BIG - have, 0);
        if (n <= 0) break;
        have += n;
    }
    EXPECT(have == BIG && pattern_ok(got, 0, BIG), "tcp: %zu of %d bytes, pattern %s", have, BIG, pattern_ok(got, 0, have) ? "ok" : "WRONG");
    // Listeners still listen.
    fcntl(tl, F_SETFL, O_NONBLOCK);
    EXPECT(accept(tl, NULL, NULL) < 0 && errno == EAGAIN, "tcp listener had a pending connection");
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    EXPECT(connect(probe, (struct sockaddr *)&ia, sizeof ia) == 0 && accept(idle, NULL, NULL) >= 0, "idle tcp6 listener does not accept");
    kill(c, SIGUSR1);
    char buf[16] = {0};
    fcntl(srv, F_SETFL, 0);
    ssize_t n = read(srv, buf, 8);
    EXPECT(n == 8 && memcmp(buf, "child-ok", 8) == 0, "child says '%s'", buf);
    memset(buf, 0, sizeof buf);
    fcntl(a1, F_SETFL, 0);
    n = read(a1, buf, 10);
    EXPECT(n == 10 && memcmp(buf, "pending-ok", 10) == 0, "first pending connection says '%s'", buf);
    int status = 0;
    waitpid(c, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %x", status);
    unlink(la.sun_path); unlink(da.sun_path);
    return fixture_finish();
}
