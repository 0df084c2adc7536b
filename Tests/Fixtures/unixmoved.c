// Unix listeners whose file moved after the bind (found with haproxy, which binds its stats
// socket as "stats.sock.PID.tmp" and renames it to "stats.sock"): after a restart the file
// came back at the bound name, the renamed one led nowhere (ECONNREFUSED) and its mode was
// lost. A listener bound to "tmp.sock", chmod 0600, renamed to "final.sock"; another bound to
// "gone.sock", then unlinked. After restart: final.sock (mode 0600) reaches the first, which
// still names itself tmp.sock; neither tmp.sock nor gone.sock exists; the second still names
// itself gone.sock.
#include "fixture.h"
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static struct sockaddr_un addr(const char *dir, const char *name) {
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, name);
    return a;
}

int main(void) {
    char cwd[256];
    if (!getcwd(cwd, sizeof cwd)) return 4;
    int moved = socket(AF_UNIX, SOCK_STREAM, 0), gone = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un t = addr(cwd, "tmp.sock"), g = addr(cwd, "gone.sock"), f = addr(cwd, "final.sock");
    if (bind(moved, (void *)&t, sizeof t) || listen(moved, 4) || bind(gone, (void *)&g, sizeof g) || listen(gone, 4)) { perror("bind"); return 4; }
    chmod(t.sun_path, 0600);
    if (rename(t.sun_path, f.sun_path) || unlink(g.sun_path)) { perror("rename"); return 4; }
    fixture_ready();
    fixture_wait();

    struct stat st;
    EXPECT(stat(f.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600, "final.sock: %s, mode 0%o",
           strerror(errno), st.st_mode & 0777);
    EXPECT(access(t.sun_path, F_OK) != 0, "tmp.sock exists again");
    EXPECT(access(g.sun_path, F_OK) != 0, "gone.sock exists again");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    EXPECT(connect(c, (void *)&f, sizeof f) == 0, "connect to final.sock: %s", strerror(errno));
    int a = accept(moved, NULL, NULL);
    EXPECT(a >= 0, "accept on the moved listener: %s", strerror(errno));
    struct sockaddr_un name;
    socklen_t len = sizeof name;
    getsockname(moved, (void *)&name, &len);
    EXPECT(!strcmp(name.sun_path, t.sun_path), "moved listener names itself %s, was %s", name.sun_path, t.sun_path);
    len = sizeof name;
    getsockname(gone, (void *)&name, &len);
    EXPECT(!strcmp(name.sun_path, g.sun_path), "unlinked listener names itself %s, was %s", name.sun_path, g.sun_path);
    return fixture_finish();
}
