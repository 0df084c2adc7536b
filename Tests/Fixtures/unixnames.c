// Unix stream clients with names of their own, connected to a listener of the application
// (found by probing: they came back unnamed, and the accepted ends' peers with them):
//   A bound to the path "client.sock" before it connected;
//   B with SO_PASSCRED set, which makes connect(2) give it an automatic abstract name;
//   C bound to an abstract name of its own.
// After restart each client names itself as before, each accepted end names its client as
// before, and a byte goes each way on every connection.
#include "fixture.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct name { struct sockaddr_un a; socklen_t len; };

static struct name own(int s) { struct name n; n.len = sizeof n.a; memset(&n.a, 0, sizeof n.a); getsockname(s, (void *)&n.a, &n.len); return n; }
static struct name peer(int s) { struct name n; n.len = sizeof n.a; memset(&n.a, 0, sizeof n.a); getpeername(s, (void *)&n.a, &n.len); return n; }
static int same(struct name x, struct name y) { return x.len == y.len && !memcmp(&x.a, &y.a, x.len); }

int main(void) {
    char cwd[200];
    if (!getcwd(cwd, sizeof cwd)) return 4;
    struct sockaddr_un l = { .sun_family = AF_UNIX };
    snprintf(l.sun_path, sizeof l.sun_path, "%s/listen.sock", cwd);
    int lst = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(lst, (void *)&l, sizeof l) || listen(lst, 8)) { perror("listen"); return 4; }

    int c[3], a[3];
    for (int i = 0; i < 3; i++) c[i] = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un ca = { .sun_family = AF_UNIX };
    snprintf(ca.sun_path, sizeof ca.sun_path, "%s/client.sock", cwd);
    if (bind(c[0], (void *)&ca, sizeof ca)) { perror("bind A"); return 4; }
    int one = 1;
    setsockopt(c[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    struct sockaddr_un cc = { .sun_family = AF_UNIX };
    const char abs[] = "\0ssi-fixture-client-C";
    memcpy(cc.sun_path, abs, sizeof abs - 1);
    if (bind(c[2], (void *)&cc, offsetof(struct sockaddr_un, sun_path) + sizeof abs - 1)) { perror("bind C"); return 4; }
    struct name before[3], acceptedPeer[3];
    for (int i = 0; i < 3; i++) {
        if (connect(c[i], (void *)&l, sizeof l)) { perror("connect"); return 4; }
        a[i] = accept(lst, NULL, NULL);
        before[i] = own(c[i]);
        acceptedPeer[i] = peer(a[i]);
        if (!same(before[i], acceptedPeer[i])) { printf("setup: client %d and its accepted end disagree\n", i); return 4; }
    }
    if (before[1].len <= offsetof(struct sockaddr_un, sun_path)) { printf("setup: B was not autobound\n"); return 4; }
    fixture_ready();
    fixture_wait();

    const char *who[3] = { "A (bound to a path)", "B (autobound by SO_PASSCRED)", "C (abstract name)" };
    for (int i = 0; i < 3; i++) {
        EXPECT(same(own(c[i]), before[i]), "client %s: its name changed (length %u, was %u)", who[i], own(c[i]).len, before[i].len);
        EXPECT(same(peer(a[i]), before[i]), "accepted end of %s: its peer's name changed (length %u, was %u)", who[i], peer(a[i]).len, before[i].len);
        char x = 'x', y = 0;
        EXPECT(write(c[i], &x, 1) == 1 && read(a[i], &y, 1) == 1 && y == 'x', "client %s: no byte to its accepted end", who[i]);
        EXPECT(write(a[i], &x, 1) == 1 && read(c[i], &y, 1) == 1 && y == 'x', "client %s: no byte from its accepted end", who[i]);
    }
    return fixture_finish();
}
