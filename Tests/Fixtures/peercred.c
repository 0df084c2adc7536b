// Who a socket belongs to and who its peer is (December 2026): a restart made every socket
// in ssi, as root, so SO_PEERCRED of every unix connection named ssi (pid, uid 0) and every
// socket was owned by root. Servers check SO_PEERCRED (D-Bus, Postgres peer authentication,
// privileged helpers); SO_REUSEPORT lets only sockets of one owner share a port.
//
// The root P makes a stream pair (its peer credentials: P, root). Child A drops to uid 4321
// gid 1234, makes a seqpacket pair (A, 4321), listens on an abstract unix name (its
// listener's credentials: A) and binds a TCP listener with SO_REUSEPORT (owner 4321). P
// connects to A's listener (P's end reads A; A's accepted end reads P), then child B, uid
// 2222, connects too (A's second accepted end reads B). Every process notes what it reads
// before the checkpoint, compares after the restart: SO_PEERCRED of each unix socket, the
// owner of each socket (fstat), and A binds a second SO_REUSEPORT socket to its port (refused
// with EADDRINUSE when the first one's owner is root). Each connection still carries a byte.
#include "fixture.h"
#include <netinet/in.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

struct seen { int fd; const char *what; struct ucred cred; uid_t owner; gid_t group; int unix_stream; };
static struct seen seen[8];
static int nseen;

static void note(int fd, const char *what, int unix_stream) {
    struct seen *s = &seen[nseen++];
    s->fd = fd; s->what = what; s->unix_stream = unix_stream;
    socklen_t len = sizeof s->cred;
    if (unix_stream && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &s->cred, &len) != 0) { perror("SO_PEERCRED"); exit(4); }
    struct stat st; fstat(fd, &st); s->owner = st.st_uid; s->group = st.st_gid;
}

static int check(const char *who) {
    int bad = 0;
    for (int i = 0; i < nseen; i++) {
        struct seen *s = &seen[i];
        struct stat st; fstat(s->fd, &st);
        if (st.st_uid != s->owner || st.st_gid != s->group) {
            printf("FAIL: %s %s: owner %u:%u, was %u:%u\n", who, s->what, st.st_uid, st.st_gid, s->owner, s->group); bad++;
        }
        if (!s->unix_stream) continue;
        struct ucred c; socklen_t len = sizeof c;
        getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &c, &len);
        if (c.pid != s->cred.pid || c.uid != s->cred.uid || c.gid != s->cred.gid) {
            printf("FAIL: %s %s: SO_PEERCRED pid %d uid %u gid %u, was pid %d uid %u gid %u\n", who, s->what,
                   c.pid, c.uid, c.gid, s->cred.pid, s->cred.uid, s->cred.gid); bad++;
        }
    }
    fflush(stdout);
    return bad;
}

static int ping(int fd, const char *who, const char *what) {
    char b = 'x';
    if (write(fd, &b, 1) != 1) { printf("FAIL: %s %s: write: %s\n", who, what, strerror(errno)); return 1; }
    return 0;
}

static int drain(int fd, const char *who, const char *what) {
    char b = 0;
    if (read(fd, &b, 1) != 1 || b != 'x') { printf("FAIL: %s %s: read '%c': %s\n", who, what, b, strerror(errno)); return 1; }
    return 0;
}

static void as(uid_t uid, gid_t gid) {
    // Raw calls: this process alone (it has one thread anyway).
    if (syscall(SYS_setresgid, gid, gid, gid) || syscall(SYS_setresuid, uid, uid, uid)) { perror("setresuid"); exit(4); }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_un name = { .sun_family = AF_UNIX };
    int namelen = offsetof(struct sockaddr_un, sun_path) + 1 + snprintf(name.sun_path + 1, sizeof name.sun_path - 1, "ssi-peercred-%d", getpid());
    int sp[2]; if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) return 4;
    int toA[2], fromA[2]; if (pipe(toA) || pipe(fromA)) return 4;
    pid_t a = fork();
    if (a == 0) {
        close(toA[1]); close(fromA[0]); close(sp[0]);
        as(4321, 1234);
        int pp[2]; if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pp)) _exit(4);
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(l, (struct sockaddr *)&name, namelen) || listen(l, 8)) _exit(4);
        int t = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(t, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t inlen = sizeof in;
        if (bind(t, (struct sockaddr *)&in, sizeof in) || listen(t, 4) || getsockname(t, (struct sockaddr *)&in, &inlen)) _exit(4);
        if (write(fromA[1], "L", 1) != 1) _exit(4);                  // listening: P and B may connect
        int fromP = accept(l, NULL, NULL), fromB = accept(l, NULL, NULL);
        if (fromP < 0 || fromB < 0) _exit(4);
        note(sp[1], "stream pair end (made by P)", 1);
        note(pp[0], "seqpacket pair end (made by A)", 1);
        note(l, "listener", 1);
        note(fromP, "end accepted from P", 1);
        note(fromB, "end accepted from B", 1);
        note(t, "TCP listener", 0);
        if (write(fromA[1], "N", 1) != 1) _exit(4);
        fixture_catch_usr1();
        fixture_wait();
        int bad = check("A");
        bad += drain(sp[1], "A", "stream pair") + ping(pp[0], "A", "seqpacket") + drain(pp[1], "A", "seqpacket");
        bad += drain(fromP, "A", "from P") + drain(fromB, "A", "from B");
        int t2 = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(t2, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind(t2, (struct sockaddr *)&in, sizeof in) != 0) {
            printf("FAIL: A: a second SO_REUSEPORT socket of uid 4321 cannot bind port %d: %s\n", ntohs(in.sin_port), strerror(errno)); bad++;
        }
        _exit(bad ? 1 : 0);
    }
    close(fromA[1]); close(toA[0]);
    char c;
    if (read(fromA[0], &c, 1) != 1) return 4;
    int toAfromP = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(toAfromP, (struct sockaddr *)&name, namelen)) { perror("connect"); return 4; }
    int fromB[2]; if (pipe(fromB)) return 4;
    pid_t b = fork();
    if (b == 0) {
        close(sp[0]); close(sp[1]); close(toAfromP); close(fromB[0]);
        as(2222, 2222);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&name, namelen)) _exit(4);
        note(s, "client end (connected to A's listener)", 1);
        if (write(fromB[1], "N", 1) != 1) _exit(4);
        fixture_catch_usr1();
        fixture_wait();
        int bad = check("B") + ping(s, "B", "to A");
        _exit(bad ? 1 : 0);
    }
    close(sp[1]); close(fromB[1]);
    if (read(fromA[0], &c, 1) != 1 || read(fromB[0], &c, 1) != 1) return 4;   // A and B have noted theirs
    note(sp[0], "stream pair end (made by P)", 1);
    note(toAfromP, "client end (connected to A's listener)", 1);
    fixture_ready();
    fixture_wait();
    int bad = check("P");
    bad += ping(sp[0], "P", "stream pair") + ping(toAfromP, "P", "to A");
    kill(b, SIGUSR1);
    int st;
    EXPECT(waitpid(b, &st, 0) == b && WIFEXITED(st) && WEXITSTATUS(st) == 0, "B's checks (status 0x%x)", st);
    kill(a, SIGUSR1);
    EXPECT(waitpid(a, &st, 0) == a && WIFEXITED(st) && WEXITSTATUS(st) == 0, "A's checks (status 0x%x)", st);
    EXPECT(bad == 0, "P's checks");
    return fixture_finish();
}
