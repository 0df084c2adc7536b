// Issue 10, "Refused, though the state is ordinary": a unix socket bound to a relative path
// (relative to the process's cwd at bind time). The program chdir's into sub/, binds there,
// then chdir's back to where it started, so that its cwd at checkpoint time is not the
// directory the names are in:
//   listener   SOCK_STREAM bound to "rel.sock", listening, with one client connected and
//              accepted (a connection) and one client connected, not yet accepted
//   dgram      SOCK_DGRAM bound to "rel-d.sock", with a datagram queued from an unbound sender
// After restart: getsockname gives the same relative names (the kernel keeps what bind got);
// the socket files are still sub/rel.sock and sub/rel-d.sock (not created in the cwd); the
// pending client is accepted and both connections carry data; a new client connecting to
// sub/rel.sock is accepted; a datagram sent to sub/rel-d.sock arrives after the queued one.
#include "fixture.h"
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static int connect_to(const char *path, int type) {
    int s = socket(AF_UNIX, type, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    return connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? s : -1;
}

static void expect_name(int fd, const char *want, const char *what) {
    struct sockaddr_un a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    EXPECT(strcmp(a.sun_path, want) == 0, "%s: getsockname '%s', expected '%s'", what, a.sun_path, want);
}

int main(void) {
    mkdir("sub", 0755);
    chdir("sub");
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX, .sun_path = "rel.sock" };
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 8);
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un ad = { .sun_family = AF_UNIX, .sun_path = "rel-d.sock" };
    bind(d, (struct sockaddr *)&ad, sizeof ad);
    chdir("..");
    int c1 = connect_to("sub/rel.sock", SOCK_STREAM);
    int s1 = accept(l, NULL, NULL);
    int c2 = connect_to("sub/rel.sock", SOCK_STREAM);          // pending
    int snd = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un to = { .sun_family = AF_UNIX, .sun_path = "sub/rel-d.sock" };
    sendto(snd, "queued", 6, 0, (struct sockaddr *)&to, sizeof to);

    fixture_ready();
    fixture_wait();

    expect_name(l, "rel.sock", "listener");
    expect_name(d, "rel-d.sock", "dgram");
    struct stat st;
    EXPECT(stat("sub/rel.sock", &st) == 0 && S_ISSOCK(st.st_mode), "sub/rel.sock is not a socket file");
    EXPECT(stat("sub/rel-d.sock", &st) == 0 && S_ISSOCK(st.st_mode), "sub/rel-d.sock is not a socket file");
    EXPECT(access("rel.sock", F_OK) < 0 && access("rel-d.sock", F_OK) < 0, "a socket file appeared in the cwd instead");
    char b[16] = {0};
    EXPECT(write(c1, "one", 3) == 3 && read(s1, b, 3) == 3 && strcmp(b, "one") == 0, "accepted connection: read '%s'", b);
    int s2 = accept(l, NULL, NULL);
    memset(b, 0, sizeof b);
    EXPECT(s2 >= 0 && write(c2, "two", 3) == 3 && read(s2, b, 3) == 3 && strcmp(b, "two") == 0, "pending connection: accept %d read '%s'", s2, b);
    int c3 = connect_to("sub/rel.sock", SOCK_STREAM);
    int s3 = c3 >= 0 ? accept(l, NULL, NULL) : -1;
    EXPECT(c3 >= 0 && s3 >= 0, "a new client could not connect to sub/rel.sock (errno %d)", errno);
    sendto(snd, "fresh", 5, 0, (struct sockaddr *)&to, sizeof to);
    memset(b, 0, sizeof b);
    ssize_t n = recv(d, b, sizeof b, MSG_DONTWAIT);
    EXPECT(n == 6 && strcmp(b, "queued") == 0, "dgram: first %zd '%s', expected 'queued'", n, b);
    memset(b, 0, sizeof b);
    n = recv(d, b, sizeof b, MSG_DONTWAIT);
    EXPECT(n == 5 && strcmp(b, "fresh") == 0, "dgram: second %zd '%s', expected 'fresh'", n, b);
    return fixture_finish();
}
