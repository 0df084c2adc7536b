// Files of the kernel's pseudo file systems held open with an offset, as top(1) holds
// /proc/stat and reads it again each turn: /proc/meminfo read in part (offset 100), /proc/stat
// read to its end, a sysfs file read to its end. Their content is generated on each read
// and their size is 0, so the restart must not take the offset for a size the file lost.
// After restart: each fd reads on from where it is (no error), and after a rewind reads
// what a fresh open reads first ("MemTotal:", "cpu ", the same sysfs line).
#include "fixture.h"

static int first_line_matches(int fd, const char *path) {
    char a[256] = {0}, b[256] = {0};
    if (lseek(fd, 0, SEEK_SET) != 0) return 0;
    ssize_t n = read(fd, a, sizeof a - 1);
    int g = open(path, O_RDONLY);
    ssize_t m = read(g, b, sizeof b - 1);
    close(g);
    if (n <= 0 || m <= 0) return 0;
    char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
    if (!ea || !eb) return 0;
    // The first line's name (up to its first space or colon): its numbers move.
    return strncmp(a, b, strcspn(b, " :")) == 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *sys = "/sys/kernel/mm/transparent_hugepage/enabled";
    int mem = open("/proc/meminfo", O_RDONLY), st = open("/proc/stat", O_RDONLY), sy = open(sys, O_RDONLY);
    char buf[65536];
    EXPECT(mem >= 0 && st >= 0, "open /proc files: %s", strerror(errno));
    EXPECT(read(mem, buf, 100) == 100, "read 100 bytes of /proc/meminfo");
    while (read(st, buf, sizeof buf) > 0) {}
    if (sy >= 0) while (read(sy, buf, sizeof buf) > 0) {}
    off_t stEnd = lseek(st, 0, SEEK_CUR);
    fixture_ready();
    printf("offsets: meminfo %ld stat %ld\n", (long)lseek(mem, 0, SEEK_CUR), (long)stEnd);
    fixture_wait();
    EXPECT(read(mem, buf, 100) >= 0, "/proc/meminfo reads on after restart: %s", strerror(errno));
    EXPECT(read(st, buf, sizeof buf) >= 0, "/proc/stat reads on after restart: %s", strerror(errno));
    EXPECT(first_line_matches(mem, "/proc/meminfo"), "/proc/meminfo after a rewind starts as a fresh open does");
    EXPECT(first_line_matches(st, "/proc/stat"), "/proc/stat after a rewind starts as a fresh open does");
    if (sy >= 0) EXPECT(first_line_matches(sy, sys), "%s after a rewind reads as a fresh open does", sys);
    return fixture_finish();
}
