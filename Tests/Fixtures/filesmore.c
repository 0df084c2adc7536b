// File descriptor states found by probing (December 2026), each of which was refused or
// changed by a restart:
//   - an fd on a directory removed since it was opened (rmdir of a work directory): getdents
//     gives ENOENT, fstat nlink 0, openat(fd, "x", O_CREAT) fails with ENOENT;
//   - a file whose name really ends in " (deleted)" (the kernel's own mark for an unlinked
//     file in /proc/PID/fd): still that file, its writes seen by name;
//   - a file offset past the end (lseek before writing a record at a fixed place): offset and
//     size kept;
//   - a fanotify group shared by dup(2) and inherited by a child: one group, its mark firing;
//   - O_PATH on a bound unix socket's file (systemd connects through /proc/self/fd/N to reach
//     a path too long for sun_path) and O_PATH|O_NOFOLLOW on a symbolic link itself.
#include "fixture.h"
#include <linux/kcmp.h>
#include <sys/fanotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

int main(void) {
    char cwd[512];
    if (!getcwd(cwd, sizeof cwd)) return 4;

    mkdir("gone", 0750);
    int dirfd = open("gone", O_RDONLY | O_DIRECTORY);
    rmdir("gone");

    int literal = open("data (deleted)", O_CREAT | O_RDWR, 0644);
    if (write(literal, "literal", 7) != 7) return 4;
    struct stat literalBefore;
    fstat(literal, &literalBefore);

    int past = open("past.txt", O_CREAT | O_RDWR, 0644);
    if (write(past, "0123456789", 10) != 10) return 4;
    lseek(past, 1000, SEEK_SET);

    int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
    close(open("watched.txt", O_CREAT | O_WRONLY, 0644));
    if (fan < 0 || fanotify_mark(fan, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, "watched.txt")) { perror("fanotify"); return 4; }
    int fanDup = dup(fan);

    int srv = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/s.sock", cwd);
    if (bind(srv, (void *)&sa, sizeof sa) || listen(srv, 4)) { perror("bind"); return 4; }
    int sockPath = open("s.sock", O_PATH | O_CLOEXEC);
    if (symlink("target-name", "lnk")) { perror("symlink"); return 4; }
    int linkPath = open("lnk", O_PATH | O_NOFOLLOW);
    if (dirfd < 0 || literal < 0 || sockPath < 0 || linkPath < 0) { perror("open"); return 4; }

    pid_t child = fork();
    if (child == 0) {
        fixture_catch_usr1();
        while (!fixture_go) pause();
        _exit(0);
    }
    fixture_ready();
    fixture_wait();

    struct stat st;
    fstat(dirfd, &st);
    EXPECT(S_ISDIR(st.st_mode) && st.st_nlink == 0, "removed directory: mode 0%o nlink %lu", st.st_mode, (unsigned long)st.st_nlink);
    EXPECT((st.st_mode & 07777) == 0750, "removed directory: mode 0%o, was 0750", st.st_mode & 07777);
    char buf[4096];
    long r = syscall(SYS_getdents64, dirfd, buf, sizeof buf);
    EXPECT(r < 0 && errno == ENOENT, "removed directory: getdents gave %ld (%s)", r, strerror(errno));
    EXPECT(openat(dirfd, "x", O_CREAT | O_WRONLY, 0644) < 0 && errno == ENOENT, "removed directory: openat(O_CREAT) in it: %s", strerror(errno));

    struct stat byName;
    fstat(literal, &st);
    stat("data (deleted)", &byName);
    EXPECT(st.st_ino == byName.st_ino && st.st_nlink == 1, "file named \"data (deleted)\": fd is inode %lu (nlink %lu), the name %lu",
           (unsigned long)st.st_ino, (unsigned long)st.st_nlink, (unsigned long)byName.st_ino);
    if (pwrite(literal, "LIT", 3, 0) != 3) EXPECT(0, "pwrite: %s", strerror(errno));
    char b[8] = {0};
    int f = open("data (deleted)", O_RDONLY);
    if (read(f, b, 3) != 3) {}
    close(f);
    EXPECT(!memcmp(b, "LIT", 3), "file named \"data (deleted)\": a write through the fd is not seen by name (%s)", b);

    fstat(past, &st);
    EXPECT(lseek(past, 0, SEEK_CUR) == 1000 && st.st_size == 10, "offset past the end: offset %ld size %ld, were 1000 and 10",
           (long)lseek(past, 0, SEEK_CUR), (long)st.st_size);

    EXPECT(syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, fan, fanDup) == 0, "fanotify: the dup is not the same group");
    EXPECT(syscall(SYS_kcmp, getpid(), child, KCMP_FILE, fan, fan) == 0, "fanotify: the child's fd is not the same group");
    f = open("watched.txt", O_WRONLY);
    if (write(f, "x", 1) != 1) {}
    close(f);
    usleep(100000);
    EXPECT(read(fanDup, buf, sizeof buf) > 0, "fanotify: no FAN_MODIFY event");

    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", sockPath);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un via = { .sun_family = AF_UNIX };
    snprintf(via.sun_path, sizeof via.sun_path, "%s", p);
    EXPECT(connect(c, (void *)&via, sizeof via) == 0, "O_PATH socket file: connect through %s: %s", p, strerror(errno));
    EXPECT((fcntl(sockPath, F_GETFL) & O_PATH) && (fcntl(sockPath, F_GETFD) & FD_CLOEXEC), "O_PATH socket file: flags 0%o fd flags %d",
           fcntl(sockPath, F_GETFL), fcntl(sockPath, F_GETFD));
    char t[64] = {0};
    EXPECT(readlinkat(linkPath, "", t, sizeof t) == 11 && !strcmp(t, "target-name"), "O_PATH symlink: readlinkat gave '%s'", t);
    EXPECT(fstat(linkPath, &st) == 0 && S_ISLNK(st.st_mode), "O_PATH symlink: fstat mode 0%o", st.st_mode);

    kill(child, SIGUSR1);
    int status;
    waitpid(child, &status, 0);
    return fixture_finish();
}
