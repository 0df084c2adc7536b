// Files survive: a file mid-read (offset), a file opened O_APPEND mid-append, a directory
// fd, /dev/null, an O_CLOEXEC fd, the current directory and the umask.
#include "fixture.h"
#include <sys/stat.h>

int main(void) {
    FILE *f = fopen("input.txt", "w");
    for (int i = 0; i < 5000; i++) fprintf(f, "%04d\n", i);
    fclose(f);
    int in = open("input.txt", O_RDONLY);
    char buf[1024];
    read(in, buf, 1000);                                        // 200 lines consumed
    int app = open("append.txt", O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
    write(app, "before\n", 7);
    mkdir("sub", 0755);
    int dir = open(".", O_RDONLY | O_DIRECTORY);
    int devnull = open("/dev/null", O_RDWR);
    int cloexec = open("input.txt", O_RDONLY | O_CLOEXEC);
    chdir("sub");
    umask(027);

    fixture_ready();
    fixture_wait();

    EXPECT(lseek(in, 0, SEEK_CUR) == 1000, "input offset %ld", (long)lseek(in, 0, SEEK_CUR));
    memset(buf, 0, sizeof buf);
    EXPECT(read(in, buf, 10) == 10 && memcmp(buf, "0200\n0201\n", 10) == 0, "read after restart: %.10s", buf);
    EXPECT(fcntl(app, F_GETFL) & O_APPEND, "O_APPEND lost");
    EXPECT((fcntl(in, F_GETFL) & O_ACCMODE) == O_RDONLY, "input access mode");
    write(app, "after\n", 6);
    int chk = openat(dir, "append.txt", O_RDONLY);
    memset(buf, 0, sizeof buf);
    read(chk, buf, sizeof buf - 1);
    EXPECT(strcmp(buf, "before\nexternal\nafter\n") == 0, "append.txt is '%s'", buf);
    struct stat st;
    EXPECT(fstat(dir, &st) == 0 && S_ISDIR(st.st_mode), "directory fd");
    EXPECT(write(devnull, "x", 1) == 1, "/dev/null");
    EXPECT(fcntl(cloexec, F_GETFD) & FD_CLOEXEC, "FD_CLOEXEC lost");
    EXPECT(!(fcntl(in, F_GETFD) & FD_CLOEXEC), "FD_CLOEXEC appeared");
    char cwd[4096];
    EXPECT(getcwd(cwd, sizeof cwd) && strlen(cwd) > 4 && strcmp(cwd + strlen(cwd) - 4, "/sub") == 0, "cwd %s", cwd);
    mode_t m = umask(0);
    EXPECT(m == 027, "umask %o", m);
    return fixture_finish();
}
