// Files of the application's own /proc directories held open, as resource monitors and
// runtimes keep them and pread them each turn: /proc/self/statm and /proc/self/status of the
// process, and /proc/<child>/stat of a child of the application (found by the third probing
// round, December 7 2026: the restart refused them, "file /proc/N/statm no longer exists",
// checked before any process existed). After the restart each reads its process's current
// content; the child's names the child.
#include "fixture.h"
#include <sys/wait.h>

int main(void) {
    int statm = open("/proc/self/statm", O_RDONLY), status = open("/proc/self/status", O_RDONLY);
    char b[256] = {0};
    if (statm < 0 || status < 0 || read(statm, b, 10) <= 0 || read(status, b, 20) <= 0) { perror("/proc/self"); return 4; }
    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        while (!fixture_go) pause();
        _exit(0);
    }
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/stat", child);
    int cstat = open(p, O_RDONLY);
    if (cstat < 0) { perror(p); return 4; }
    fixture_ready();
    fixture_wait();
    memset(b, 0, sizeof b);
    EXPECT(pread(statm, b, sizeof b - 1, 0) > 0 && atol(b) > 0, "/proc/self/statm: '%s' (%s)", b, strerror(errno));
    memset(b, 0, sizeof b);
    char want[64];
    snprintf(want, sizeof want, "Pid:\t%d\n", getpid());
    EXPECT(pread(status, b, sizeof b - 1, 0) > 0 && strstr(b, want) != NULL, "/proc/self/status does not name this process: '%.80s'", b);
    memset(b, 0, sizeof b);
    EXPECT(pread(cstat, b, sizeof b - 1, 0) > 0 && atoi(b) == child, "/proc/%d/stat: '%.30s'", child, b);
    kill(child, SIGUSR1);
    waitpid(child, NULL, 0);
    return fixture_finish();
}
