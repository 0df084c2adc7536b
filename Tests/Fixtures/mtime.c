// Issue 10, "Restored wrong": a file's modification time changes across checkpoint/restart
// (the engine must not touch the application's files). In a directory of its own (mtime.d,
// its cwd), the program has files in every way it can hold one, all with timestamps set to
// a fixed past time (utimensat, with nanoseconds) after their last write:
//   rw       opened O_RDWR, offset mid-file, not written since
//   ro       opened O_RDONLY
//   app      opened O_WRONLY|O_APPEND
//   mapped   mapped MAP_SHARED PROT_READ|PROT_WRITE (written and msync'd before the times
//            were set, not since), its fd closed
//   priv     mapped MAP_PRIVATE and written (copy-on-write pages the file never sees)
//   trunc    opened O_RDWR|O_TRUNC at creation, content written, then times set
//   closed   not open at all (in the same directory)
//   short    8 KiB long, mapped MAP_SHARED over 16 KiB (the second half is past EOF: touching
//            it would be SIGBUS; nothing may extend the file to "make it long enough")
//   fifo     a named FIFO holding 5 bytes, open O_RDWR (its times too: refilling it is a write)
//   sock     a unix stream listener bound to the (absolute) path of "sock" (its file and the directory: it
//            must not be removed and bound again)
//   dir      a directory open with O_DIRECTORY
// After restart: st_mtim of each file and of the directory itself (nothing was created,
// renamed or removed in it, or its mtime was put back), and st_ctim of the regular files, are
// exactly as before (a FIFO refilled at restart, a socket file bound again and the directory
// holding it cannot keep their ctime from user space: utimensat sets it), and sizes and contents unchanged;
// atime too for "ro" and "closed", which nobody reads (the file system is relatime: any read
// of a file whose atime is this old would move it).
#include "fixture.h"
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define NF 11
static const char *names[NF] = { "rw", "ro", "app", "mapped", "priv", "trunc", "closed", "short", "fifo", "sock", "dir" };

static void fill(const char *name, int size) {
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < size; i++) { char c = 'a' + i % 26; write(fd, &c, 1); }
    close(fd);
}

int main(void) {
    mkdir("mtime.d", 0755);
    chdir("mtime.d");
    for (int i = 0; i < 8; i++) fill(names[i], 8192);
    int sfd = open("short", O_RDWR);
    char *sm = mmap(NULL, 16384, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    sm[10] = 'S';
    msync(sm, 8192, MS_SYNC);
    mkfifo("fifo", 0640);
    int ff = open("fifo", O_RDWR);
    write(ff, "fifo!", 5);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    getcwd(sa.sun_path, sizeof sa.sun_path - 8);
    strcat(sa.sun_path, "/sock");                               // absolute: relative names are unixrelpath.c
    bind(ls, (struct sockaddr *)&sa, sizeof sa);
    listen(ls, 4);
    mkdir("dir", 0750);
    int dfd = open("dir", O_RDONLY | O_DIRECTORY);
    int rw = open("rw", O_RDWR);
    lseek(rw, 4000, SEEK_SET);
    int ro = open("ro", O_RDONLY);
    int app = open("app", O_WRONLY | O_APPEND);
    int mfd = open("mapped", O_RDWR);
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    m[100] = 'M';
    msync(m, 8192, MS_SYNC);
    close(mfd);
    int pfd = open("priv", O_RDWR);
    char *pm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, pfd, 0);
    pm[200] = 'P';
    int tr = open("trunc", O_RDWR | O_TRUNC);
    write(tr, "truncated and rewritten\n", 24);
    sync();
    struct timespec past[2] = { { 1000000000, 123456789 }, { 1100000000, 987654321 } };   // atime, mtime
    for (int i = 0; i < NF; i++) utimensat(AT_FDCWD, names[i], past, 0);
    utimensat(AT_FDCWD, ".", past, 0);
    struct stat before[NF + 1];
    for (int i = 0; i < NF; i++) stat(names[i], &before[i]);
    stat(".", &before[NF]);

    fixture_ready();
    fixture_wait();

    for (int i = 0; i <= NF; i++) {
        const char *n = i < NF ? names[i] : "the directory";
        struct stat s;
        stat(i < NF ? names[i] : ".", &s);
        EXPECT(s.st_mtim.tv_sec == before[i].st_mtim.tv_sec && s.st_mtim.tv_nsec == before[i].st_mtim.tv_nsec,
               "%s: mtime %ld.%09ld, was %ld.%09ld", n, (long)s.st_mtim.tv_sec, s.st_mtim.tv_nsec, (long)before[i].st_mtim.tv_sec, before[i].st_mtim.tv_nsec);
        if (S_ISREG(before[i].st_mode))   // a refilled FIFO, a re-bound socket and its directory cannot keep theirs
        EXPECT(s.st_ctim.tv_sec == before[i].st_ctim.tv_sec && s.st_ctim.tv_nsec == before[i].st_ctim.tv_nsec,
               "%s: ctime %ld.%09ld, was %ld.%09ld (mode, owner or links changed)", n, (long)s.st_ctim.tv_sec, s.st_ctim.tv_nsec, (long)before[i].st_ctim.tv_sec, before[i].st_ctim.tv_nsec);
        EXPECT(s.st_size == before[i].st_size && s.st_mode == before[i].st_mode && s.st_uid == before[i].st_uid && s.st_nlink == before[i].st_nlink,
               "%s: size %ld mode %o uid %d nlink %ld, were %ld %o %d %ld", n, (long)s.st_size, s.st_mode, s.st_uid, (long)s.st_nlink, (long)before[i].st_size, before[i].st_mode, before[i].st_uid, (long)before[i].st_nlink);
        if (i == 1 || i == 6)
            EXPECT(s.st_atim.tv_sec == before[i].st_atim.tv_sec && s.st_atim.tv_nsec == before[i].st_atim.tv_nsec,
                   "%s: atime %ld, was %ld (someone read it)", n, (long)s.st_atim.tv_sec, (long)before[i].st_atim.tv_sec);
    }
    EXPECT(lseek(rw, 0, SEEK_CUR) == 4000, "rw: offset %ld", (long)lseek(rw, 0, SEEK_CUR));
    EXPECT(m[100] == 'M' && pm[200] == 'P' && m[101] == 'a' + 101 % 26, "mapped contents");
    // The application may write again: that changes mtime, as it should.
    write(app, "x", 1);
    struct stat s;
    fstat(app, &s);
    EXPECT(s.st_size == 8193 && s.st_mtim.tv_sec > before[2].st_mtim.tv_sec, "app: append after restart: size %ld", (long)s.st_size);
    char c = 0;
    int fd = open("priv", O_RDONLY);
    pread(fd, &c, 1, 200);
    EXPECT(c == 'a' + 200 % 26, "priv: the private write reached the file ('%c')", c);
    char fb[8] = {0};
    EXPECT(read(ff, fb, 5) == 5 && memcmp(fb, "fifo!", 5) == 0, "fifo: read '%s'", fb);
    EXPECT(sm[10] == 'S', "short: mapped content");
    struct stat ds;
    EXPECT(fstat(dfd, &ds) == 0 && S_ISDIR(ds.st_mode), "dir: fd lost");
    (void)ro;
    return fixture_finish();
}
