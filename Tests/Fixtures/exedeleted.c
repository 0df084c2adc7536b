// Issue 10 (not in the issue; found with programs left running across a package upgrade): a
// process whose program file was removed or replaced while it ran. /proc/PID/exe then reads
// "PATH (deleted)", and the code is mapped from a file that has no name. The fixture copies
// its own binary to ./exedeleted.copy and executes the copy (so that the shared fixture binary
// stays), which removes itself and puts a new file under its name, as dpkg does.
// After restart: /proc/self/exe still names the removed program "(deleted)" and reads as the
// same ELF file (its size and first bytes); the code keeps running (the check itself); the
// new file under the old name is untouched.
#include "fixture.h"
#include <sys/stat.h>

static int copy_file(const char *from, const char *to) {
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    char buf[65536];
    ssize_t n;
    if (in < 0 || out < 0) return -1;
    while ((n = read(in, buf, sizeof buf)) > 0) if (write(out, buf, (size_t)n) != n) return -1;
    close(in);
    close(out);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2 || strcmp(argv[1], "copy") != 0) {
        if (copy_file("/proc/self/exe", "exedeleted.copy")) { printf("FAIL: copy: %s\n", strerror(errno)); return 1; }
        execl("./exedeleted.copy", "exedeleted.copy", "copy", (char *)NULL);
        printf("FAIL: exec the copy: %s\n", strerror(errno));
        return 1;
    }
    struct stat before;
    stat("/proc/self/exe", &before);
    // The upgrade: the old file goes, a new one takes its name.
    unlink("exedeleted.copy");
    int nf = open("exedeleted.copy", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (nf < 0 || write(nf, "new version\n", 12) != 12) printf("FAIL: new file: %s\n", strerror(errno));
    close(nf);

    fixture_ready();
    fixture_wait();

    char link[512] = { 0 };
    readlink("/proc/self/exe", link, sizeof link - 1);
    EXPECT(strstr(link, "(deleted)") != NULL, "/proc/self/exe reads '%s', want a removed file", link);
    struct stat now;
    EXPECT(stat("/proc/self/exe", &now) == 0 && now.st_size == before.st_size, "exe size %lld, was %lld", (long long)now.st_size, (long long)before.st_size);
    char magic[4] = { 0 };
    int e = open("/proc/self/exe", O_RDONLY);
    EXPECT(e >= 0 && read(e, magic, 4) == 4 && memcmp(magic, "\x7f" "ELF", 4) == 0, "exe is not the ELF file it was");
    if (e >= 0) close(e);
    char buf[32] = { 0 };
    int f = open("exedeleted.copy", O_RDONLY);
    EXPECT(f >= 0 && read(f, buf, sizeof buf - 1) == 12 && strcmp(buf, "new version\n") == 0, "the new file under the old name reads '%s'", buf);
    if (f >= 0) close(f);
    unlink("exedeleted.copy");
    return fixture_finish();
}
