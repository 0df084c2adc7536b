// Issue 10, "Restored wrong": an unlinked file comes back with the wrong uid/gid; a memfd
// comes back with mode 0777 instead of its own. Checked with fstat after restart:
//   u1     unlinked file, owner 1234:5678 (fchown), mode 0604, 3000 bytes, offset 1000
//   u2     unlinked file, owner root, mode 0400 (not writable by mode: the engine, root, must
//          still recreate it), opened O_RDONLY
//   u3     unlinked file with setgid bit, group 5678: mode 02750 (fchmod after fchown, which
//          clears it)
//   u4     unlinked, sparse: 1 MiB long with 4 KiB of data at 512 KiB (size and holes kept:
//          st_blocks stays small)
//   m1     memfd, fchmod 0640 and fchown 1234:5678, with seals F_SEAL_SHRINK|F_SEAL_GROW
//   m2     memfd created with MFD_NOEXEC_SEAL: mode 0666 and F_SEAL_EXEC from the start
//   m3     memfd, default mode 0777, MFD_CLOEXEC, F_SEAL_WRITE|F_SEAL_SEAL (writes fail EPERM,
//          adding a seal fails EPERM)
//   and each one's content, size, nlink 0, st_mtim (set to a fixed past time).
#include "fixture.h"
#include <sys/mman.h>
#include <sys/stat.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

static const struct timespec past[2] = { { 1000000000, 0 }, { 1200000000, 555 } };

static int unlinked(const char *name, uid_t uid, gid_t gid, mode_t mode, int size, int flags) {
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
    for (int i = 0; i < size; i++) { char c = 'A' + i % 23; write(fd, &c, 1); }
    fchown(fd, uid, gid);
    fchmod(fd, mode);
    futimens(fd, past);
    unlink(name);
    if (flags != O_RDWR) {
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        int fd2 = open(p, flags);
        close(fd);
        fd = fd2;
    }
    return fd;
}

static void expect_meta(const char *n, int fd, uid_t uid, gid_t gid, mode_t mode, off_t size) {
    struct stat s;
    int r = fstat(fd, &s);
    EXPECT(r == 0 && s.st_uid == uid && s.st_gid == gid, "%s: owner %d:%d, expected %d:%d", n, s.st_uid, s.st_gid, uid, gid);
    EXPECT(r == 0 && (s.st_mode & 07777) == mode && S_ISREG(s.st_mode), "%s: mode %o, expected %o", n, s.st_mode & 07777, mode);
    EXPECT(r == 0 && s.st_size == size && s.st_nlink == 0, "%s: size %ld nlink %ld, expected %ld, 0", n, (long)s.st_size, (long)s.st_nlink, (long)size);
}

int main(void) {
    int u1 = unlinked("u1", 1234, 5678, 0604, 3000, O_RDWR);
    lseek(u1, 1000, SEEK_SET);
    int u2 = unlinked("u2", 0, 0, 0400, 100, O_RDONLY);
    int u3 = unlinked("u3", 0, 5678, 02750, 10, O_RDWR);
    int u4 = open("u4", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(u4, 1 << 20);
    char blk[4096];
    memset(blk, 'Q', sizeof blk);
    pwrite(u4, blk, sizeof blk, 512 << 10);
    futimens(u4, past);
    unlink("u4");
    struct stat s4;
    fstat(u4, &s4);

    int m1 = memfd_create("m1", MFD_ALLOW_SEALING);
    write(m1, "memfd one", 9);
    fchmod(m1, 0640);
    fchown(m1, 1234, 5678);
    fcntl(m1, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    int m2 = memfd_create("m2", MFD_NOEXEC_SEAL);
    int m2seals = fcntl(m2, F_GET_SEALS);
    struct stat s2;
    fstat(m2, &s2);
    int m3 = memfd_create("m3", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    write(m3, "sealed", 6);
    fcntl(m3, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL);
    printf("m2: mode %o seals %#x\n", s2.st_mode & 07777, m2seals);

    fixture_ready();
    fixture_wait();

    expect_meta("u1", u1, 1234, 5678, 0604, 3000);
    char b[16] = {0};
    EXPECT(read(u1, b, 3) == 3 && b[0] == 'A' + 1000 % 23, "u1: offset/content ('%s')", b);
    expect_meta("u2", u2, 0, 0, 0400, 100);
    EXPECT((fcntl(u2, F_GETFL) & O_ACCMODE) == O_RDONLY, "u2: access mode %o", fcntl(u2, F_GETFL) & O_ACCMODE);
    EXPECT(pread(u2, b, 1, 99) == 1 && b[0] == 'A' + 99 % 23, "u2: content");
    expect_meta("u3", u3, 0, 5678, 02750, 10);
    expect_meta("u4", u4, 0, 0, 0644, 1 << 20);
    struct stat s;
    fstat(u4, &s);
    EXPECT(s.st_blocks <= s4.st_blocks + 8, "u4: %ld blocks, was %ld (holes filled)", (long)s.st_blocks, (long)s4.st_blocks);
    EXPECT(pread(u4, b, 1, (512 << 10) + 7) == 1 && b[0] == 'Q' && pread(u4, b, 1, 1000) == 1 && b[0] == 0, "u4: content");
    int fds[4] = { u1, u2, u3, u4 };
    for (int i = 0; i < 4; i++) {
        fstat(fds[i], &s);
        EXPECT(s.st_mtim.tv_sec == past[1].tv_sec && s.st_mtim.tv_nsec == past[1].tv_nsec, "u%d: mtime %ld.%09ld", i + 1, (long)s.st_mtim.tv_sec, s.st_mtim.tv_nsec);
    }

    expect_meta("m1", m1, 1234, 5678, 0640, 9);
    EXPECT(fcntl(m1, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "m1: seals %#x", fcntl(m1, F_GET_SEALS));
    EXPECT(ftruncate(m1, 100) < 0 && errno == EPERM, "m1: F_SEAL_GROW not enforced");
    EXPECT(pread(m1, b, 9, 0) == 9 && memcmp(b, "memfd one", 9) == 0, "m1: content");
    fstat(m2, &s);
    EXPECT((s.st_mode & 07777) == (s2.st_mode & 07777), "m2 (MFD_NOEXEC_SEAL): mode %o, was %o", s.st_mode & 07777, s2.st_mode & 07777);
    EXPECT(fcntl(m2, F_GET_SEALS) == m2seals, "m2: seals %#x, were %#x", fcntl(m2, F_GET_SEALS), m2seals);
    EXPECT(fchmod(m2, 0777) < 0 && errno == EPERM, "m2: F_SEAL_EXEC not enforced (chmod +x allowed)");
    fstat(m3, &s);
    EXPECT((s.st_mode & 07777) == 0777 && s.st_size == 6, "m3: mode %o size %ld", s.st_mode & 07777, (long)s.st_size);
    EXPECT(fcntl(m3, F_GET_SEALS) == (F_SEAL_WRITE | F_SEAL_SEAL), "m3: seals %#x", fcntl(m3, F_GET_SEALS));
    EXPECT(pwrite(m3, "x", 1, 0) < 0 && errno == EPERM, "m3: F_SEAL_WRITE not enforced");
    EXPECT(fcntl(m3, F_ADD_SEALS, F_SEAL_SHRINK) < 0 && errno == EPERM, "m3: F_SEAL_SEAL not enforced");
    EXPECT(fcntl(m3, F_GETFD) & FD_CLOEXEC, "m3: lost MFD_CLOEXEC");
    return fixture_finish();
}
