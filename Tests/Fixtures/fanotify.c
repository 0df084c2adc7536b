// Issue 10, "Refused, though the state is ordinary": fanotify groups with their marks
// (fanotify_init(2), fanotify_mark(2)).
//   g1   FAN_CLASS_NOTIF|FAN_CLOEXEC|FAN_NONBLOCK, event fds O_RDONLY|O_LARGEFILE; marks:
//        inode mark on f.txt (FAN_MODIFY|FAN_CLOSE_WRITE); mark on directory d
//        (FAN_OPEN|FAN_EVENT_ON_CHILD); an ignored mask on d/quiet.txt (FAN_OPEN, with
//        FAN_MARK_IGNORED_SURV_MODIFY)
//   g2   FAN_CLASS_NOTIF|FAN_REPORT_DFID_NAME (events carry file handles and names, no fds);
//        mark on directory d (FAN_CREATE|FAN_DELETE|FAN_ONDIR)
// Events queued by the setup are read before READY. After restart: each group's fdinfo
// ("fanotify flags:... event-flags:..." and each mark's inode, mflags, mask, ignored_mask)
// is as before, flags of the fds too; writing f.txt gives g1 a FAN_MODIFY event whose fd is
// f.txt; opening d/x.txt gives FAN_OPEN on d/x.txt, opening d/quiet.txt gives none; creating
// d/new gives g2 a FAN_CREATE event named "new".
#include "fixture.h"
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/stat.h>

static void drain(int fd) { char buf[8192]; while (read(fd, buf, sizeof buf) > 0) { } }

// The fanotify lines of /proc/self/fdinfo/fd, ino/sdev/mflags/mask/ignored_mask (no fhandle).
static void info(int fd, char *out, size_t n) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "fanotify", 8) != 0) continue;
        char *fh = strstr(line, " fhandle-bytes");
        if (fh) { *fh = '\n'; fh[1] = 0; }
        strncat(out, line, n - strlen(out) - 1);
    }
    if (f) fclose(f);
}

// g1: waits up to ms for an event with (mask & want) whose fd is the file at path.
static int event_on(int g, uint64_t want, const char *path, int ms) {
    struct pollfd p = { .fd = g, .events = POLLIN };
    char buf[8192] __attribute__((aligned(8)));
    struct stat target;
    if (stat(path, &target) < 0) return 0;
    int found = 0;
    while (!found && poll(&p, 1, ms) == 1) {
        ssize_t r = read(g, buf, sizeof buf);
        struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
        for (; r > 0 && FAN_EVENT_OK(m, r); m = FAN_EVENT_NEXT(m, r)) {
            struct stat s;
            if (m->fd >= 0) {
                if ((m->mask & want) && fstat(m->fd, &s) == 0 && s.st_ino == target.st_ino && s.st_dev == target.st_dev) found = 1;
                close(m->fd);
            }
        }
        ms = 50;
    }
    return found;
}

// g2: waits for a FAN_CREATE with the name given.
static int created(int g, const char *name, int ms) {
    struct pollfd p = { .fd = g, .events = POLLIN };
    char buf[8192] __attribute__((aligned(8)));
    while (poll(&p, 1, ms) == 1) {
        ssize_t r = read(g, buf, sizeof buf);
        struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
        for (; r > 0 && FAN_EVENT_OK(m, r); m = FAN_EVENT_NEXT(m, r)) {
            if (!(m->mask & FAN_CREATE)) continue;
            struct fanotify_event_info_fid *fid = (struct fanotify_event_info_fid *)(m + 1);
            if (fid->hdr.info_type != FAN_EVENT_INFO_TYPE_DFID_NAME) continue;
            struct file_handle *fh = (struct file_handle *)fid->handle;
            const char *n = (const char *)(fh->f_handle + fh->handle_bytes);
            if (strcmp(n, name) == 0) return 1;
        }
    }
    return 0;
}

int main(void) {
    mkdir("d", 0755);
    close(open("f.txt", O_CREAT | O_WRONLY, 0644));
    close(open("d/x.txt", O_CREAT | O_WRONLY, 0644));
    close(open("d/quiet.txt", O_CREAT | O_WRONLY, 0644));
    int g1 = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
    int g2 = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK, O_RDONLY);
    if (g1 < 0 || g2 < 0) { printf("FAIL: fanotify_init: %s\n", strerror(errno)); return 1; }
    int r = 0;
    r |= fanotify_mark(g1, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, "f.txt");
    r |= fanotify_mark(g1, FAN_MARK_ADD, FAN_OPEN | FAN_EVENT_ON_CHILD, AT_FDCWD, "d");
    r |= fanotify_mark(g1, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN, AT_FDCWD, "d/quiet.txt");
    r |= fanotify_mark(g2, FAN_MARK_ADD, FAN_CREATE | FAN_DELETE | FAN_ONDIR, AT_FDCWD, "d");
    if (r) { printf("FAIL: fanotify_mark: %s\n", strerror(errno)); return 1; }
    usleep(20000);
    drain(g1);
    drain(g2);
    char i1[2048], i2[2048];
    info(g1, i1, sizeof i1);
    info(g2, i2, sizeof i2);
    int fl1 = fcntl(g1, F_GETFL), fd1 = fcntl(g1, F_GETFD);
    printf("g1:\n%sg2:\n%s", i1, i2);

    fixture_ready();
    fixture_wait();

    char a1[2048], a2[2048];
    info(g1, a1, sizeof a1);
    info(g2, a2, sizeof a2);
    EXPECT(a1[0] && strcmp(i1, a1) == 0, "g1: fdinfo differs:\n%s--- was\n%s", a1, i1);
    EXPECT(a2[0] && strcmp(i2, a2) == 0, "g2: fdinfo differs:\n%s--- was\n%s", a2, i2);
    EXPECT(fcntl(g1, F_GETFL) == fl1 && fcntl(g1, F_GETFD) == fd1, "g1: fd flags %o/%d, were %o/%d", fcntl(g1, F_GETFL), fcntl(g1, F_GETFD), fl1, fd1);
    int f = open("f.txt", O_WRONLY);
    write(f, "x", 1);
    close(f);
    EXPECT(event_on(g1, FAN_MODIFY, "f.txt", 500), "g1: no FAN_MODIFY for f.txt");
    close(open("d/quiet.txt", O_RDONLY));
    EXPECT(!event_on(g1, FAN_OPEN, "d/quiet.txt", 200), "g1: FAN_OPEN for d/quiet.txt, whose ignored mask was lost");
    close(open("d/x.txt", O_RDONLY));
    EXPECT(event_on(g1, FAN_OPEN, "d/x.txt", 500), "g1: no FAN_OPEN for d/x.txt");
    close(open("d/new", O_CREAT | O_WRONLY, 0644));
    EXPECT(created(g2, "new", 500), "g2: no FAN_CREATE 'new'");
    return fixture_finish();
}
