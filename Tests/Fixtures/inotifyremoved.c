// Issue 10, "Refused, though the state is ordinary": an inotify watch on a file that was
// removed since. (inotifygone.c is the old expectation, a refusal; this is the state kept.)
//   kept     watch (IN_MODIFY|IN_ATTRIB|IN_CLOSE_WRITE) on kept.txt, which was then unlinked
//            while the program keeps it open: the watch lives on (the inode does)
//   dir      watch (IN_CREATE|IN_DELETE) on the directory d holding it (not removed)
//   gone     watch on gone.txt, removed and not open: the kernel sent IN_DELETE_SELF and
//            IN_IGNORED and dropped that watch; its descriptor must not come back
// The events queued by the setup are read before READY (queued events are another matter).
// After restart: writing through the kept fd gives IN_MODIFY with kept's old wd; creating
// d/new gives IN_CREATE "new" with d's wd; inotify_rm_watch of gone's wd fails EINVAL;
// /proc/self/fdinfo lists the same number of watches with the same masks.
#include "fixture.h"
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

static int drain(int fd) {
    char buf[4096];
    int n = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) n += r;
    return n;
}

// Reads events for up to ms; returns 1 if one with wd and (mask & want) (and name) came.
static int saw(int fd, int wd, uint32_t want, const char *name, int ms) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char buf[4096] __attribute__((aligned(8)));
    while (poll(&p, 1, ms) == 1) {
        ssize_t r = read(fd, buf, sizeof buf);
        for (char *c = buf; r > 0 && c < buf + r;) {
            struct inotify_event *e = (struct inotify_event *)c;
            if (e->wd == wd && (e->mask & want) && (!name || (e->len && strcmp(e->name, name) == 0))) return 1;
            c += sizeof *e + e->len;
        }
    }
    return 0;
}

static int watches(int fd, char *out, size_t n) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    int c = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "inotify wd:", 11)) {
            // The masks only, as the header says: the file handle names the inode, and an
            // unlinked file made again after restart is another inode.
            c++;
            char *m = strstr(line, "mask:"), *h = strstr(line, " fhandle");
            if (h) *h = 0;
            if (m) { strncat(out, m, n - strlen(out) - 2); strcat(out, ";"); }
        }
    if (f) fclose(f);
    return c;
}

int main(void) {
    mkdir("d", 0755);
    int keep = open("d/kept.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    close(open("d/gone.txt", O_RDWR | O_CREAT | O_TRUNC, 0644));
    int in = inotify_init1(IN_NONBLOCK);
    int wk = inotify_add_watch(in, "d/kept.txt", IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE);
    int wd = inotify_add_watch(in, "d", IN_CREATE | IN_DELETE);
    int wg = inotify_add_watch(in, "d/gone.txt", IN_MODIFY | IN_DELETE_SELF);
    unlink("d/kept.txt");
    unlink("d/gone.txt");
    usleep(50000);
    int drained = drain(in);
    char masks[1024];
    int nw = watches(in, masks, sizeof masks);
    printf("watches kept %d dir %d gone %d; %d bytes of setup events read; %d watches left\n", wk, wd, wg, drained, nw);

    fixture_ready();
    fixture_wait();

    char masks2[1024];
    EXPECT(watches(in, masks2, sizeof masks2) == nw && strcmp(masks, masks2) == 0, "fdinfo: %d watches (%s), were %d (%s)", watches(in, masks2, sizeof masks2), masks2, nw, masks);
    write(keep, "x", 1);
    EXPECT(saw(in, wk, IN_MODIFY, NULL, 500), "kept: no IN_MODIFY with wd %d after writing to the removed file", wk);
    close(open("d/new", O_CREAT | O_WRONLY, 0644));
    EXPECT(saw(in, wd, IN_CREATE, "new", 500), "dir: no IN_CREATE 'new' with wd %d", wd);
    EXPECT(inotify_rm_watch(in, wg) < 0 && errno == EINVAL, "gone: its watch %d exists again", wg);
    EXPECT(fcntl(in, F_GETFL) & O_NONBLOCK, "inotify fd lost IN_NONBLOCK");
    int wn = inotify_add_watch(in, "d/new", IN_MODIFY);
    EXPECT(wn > wd && wn != wk, "a new watch got descriptor %d (kept %d dir %d)", wn, wk, wd);
    return fixture_finish();
}
