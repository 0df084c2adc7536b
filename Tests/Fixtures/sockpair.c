// Socketpairs inside the application: a stream pair shared by parent and child with bytes
// queued in both directions, and a datagram pair inside one process. After restart the
// queued bytes are there, in order, and the pairs still talk.
#include "fixture.h"
#include <sys/socket.h>
#include <sys/wait.h>

int main(void) {
    int sp[2], dg[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    socketpair(AF_UNIX, SOCK_DGRAM, 0, dg);
    write(sp[0], "to-child", 8);                                 // queued for the child
    pid_t c = fork();
    if (c == 0) {
        close(sp[0]);
        write(sp[1], "to-parent", 9);                            // queued for the parent
        fixture_catch_usr1();
        fixture_wait();
        char buf[32] = {0};
        ssize_t n = read(sp[1], buf, sizeof buf - 1);
        int ok = n == 8 && strcmp(buf, "to-child") == 0;
        write(sp[1], ok ? "child-ok" : "child-KO", 8);
        _exit(ok ? 0 : 1);
    }
    close(sp[1]);
    usleep(100000);
    fixture_ready();
    fixture_wait();
    char buf[32] = {0};
    ssize_t n = read(sp[0], buf, 9);
    EXPECT(n == 9 && strcmp(buf, "to-parent") == 0, "parent read '%s' (%zd)", buf, n);
    kill(c, SIGUSR1);
    memset(buf, 0, sizeof buf);
    n = read(sp[0], buf, 8);
    EXPECT(n == 8 && strcmp(buf, "child-ok") == 0, "child says '%s'", buf);
    write(dg[0], "datagram", 8);
    memset(buf, 0, sizeof buf);
    n = recv(dg[1], buf, sizeof buf, 0);
    EXPECT(n == 8 && strcmp(buf, "datagram") == 0, "datagram pair: '%s'", buf);
    int st = 0;
    waitpid(c, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %x", st);
    return fixture_finish();
}
