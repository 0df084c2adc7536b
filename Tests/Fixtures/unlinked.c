// An unlinked file (open fd, offset mid-file) and a memfd (with a seal, mapped shared and
// written through the mapping, its fd then closed): their content survives checkpoint/kill/
// restart although neither has a name.
#include "fixture.h"
#include <sys/mman.h>
#include <sys/stat.h>

int main(void) {
    int fd = open("scratch.tmp", O_RDWR | O_CREAT | O_TRUNC, 0640);
    for (int i = 0; i < 1000; i++) dprintf(fd, "line %04d\n", i);
    unlink("scratch.tmp");
    lseek(fd, 100, SEEK_SET);
    int mfd = memfd_create("fixture-mem", MFD_ALLOW_SEALING);
    ftruncate(mfd, 3 * 4096);
    char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    for (int i = 0; i < 3 * 4096; i++) m[i] = (char)('a' + i % 26);
    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK);
    int keep = dup(mfd);
    close(mfd);

    fixture_ready();
    fixture_wait();

    char buf[16] = {0};
    EXPECT(read(fd, buf, 10) == 10 && strcmp(buf, "line 0010\n") == 0, "unlinked file read '%s'", buf);
    struct stat st;
    EXPECT(fstat(fd, &st) == 0 && st.st_nlink == 0 && st.st_size == 10000, "unlinked file: nlink %ld size %ld", (long)st.st_nlink, (long)st.st_size);
    int ok = 1;
    for (int i = 0; i < 3 * 4096; i++) if (m[i] != (char)('a' + i % 26)) { ok = 0; break; }
    EXPECT(ok, "memfd mapping content");
    m[5] = 'Z';
    char c = 0;
    pread(keep, &c, 1, 5);
    EXPECT(c == 'Z', "memfd mapping no longer shared with its fd");
    EXPECT(fcntl(keep, F_GET_SEALS) & F_SEAL_SHRINK, "memfd seal lost");
    char link[256] = {0};
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", keep);
    readlink(path, link, sizeof link - 1);
    EXPECT(strstr(link, "memfd:fixture-mem") != NULL, "memfd name: %s", link);
    return fixture_finish();
}
