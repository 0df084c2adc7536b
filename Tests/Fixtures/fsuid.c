// setfsuid/setfsgid (file servers: NFS, Samba, FTP daemons act on files as the client): the
// fs ids (fourth field of Uid:/Gid: in /proc/self/status) come back equal to the effective ones.
#include "fixture.h"
#include <sys/fsuid.h>
static void ids(const char *key, long v[4]) {
    char buf[4096]; v[0] = v[1] = v[2] = v[3] = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(buf, sizeof buf, f)) if (strncmp(buf, key, strlen(key)) == 0) sscanf(buf + strlen(key), "%ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3]);
    if (f) fclose(f);
}
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    setfsgid(5000); setfsuid(4000);
    fixture_ready();
    fixture_wait();
    long u[4], g[4]; ids("Uid:", u); ids("Gid:", g);
    EXPECT(u[3] == 4000 && g[3] == 5000, "fsuid %ld fsgid %ld, expected 4000 5000 (uid %ld gid %ld)", u[3], g[3], u[1], g[1]);
    return fixture_finish();
}
