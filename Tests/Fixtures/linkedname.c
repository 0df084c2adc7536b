// Files published by link(2) then unlink(2) of their first name: /proc/PID/fd and maps show
// the first name with " (deleted)", yet the inode is still linked by its other name. Each
// must come back as that very file, not as a private copy (found by the third probing round,
// December 7 2026):
//   - an fd on "msg.tmp" linked to "msg" (git objects, the same directory);
//   - an fd on "tmp/mail" linked to "new/mail" (a maildir delivery, a sibling directory);
//   - a MAP_SHARED mapping of "map.tmp" linked to "map", its fd closed;
//   - glibc's sem_open(O_CREAT): the creator maps /dev/shm/sem.XXXXXX, linked to
//     /dev/shm/sem.NAME and unlinked (Python multiprocessing with forkserver or spawn); a
//     process that opens NAME after the restart must reach the creator's semaphore.
#include "fixture.h"
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

static int publish(const char *tmp, const char *name, const char *text) {
    int fd = open(tmp, O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || link(tmp, name) || unlink(tmp)) {
        perror(tmp);
        exit(4);
    }
    return fd;
}

static void same_file(int fd, const char *name, const char *want) {
    struct stat a, b;
    EXPECT(fstat(fd, &a) == 0 && stat(name, &b) == 0 && a.st_ino == b.st_ino, "%s: the fd is inode %lu, the name %lu", name,
           (unsigned long)a.st_ino, (unsigned long)b.st_ino);
    EXPECT(a.st_nlink == 1, "%s: nlink %lu, want 1", name, (unsigned long)a.st_nlink);
    EXPECT(write(fd, "+more", 5) == 5, "%s: write", name);
    char buf[32] = {0};
    int r = open(name, O_RDONLY);
    EXPECT(r >= 0 && read(r, buf, sizeof buf - 1) > 0, "%s: read by name", name);
    EXPECT(!strcmp(buf, want), "%s reads '%s', want '%s'", name, buf, want);
    close(r);
}

int main(void) {
    int git = publish("msg.tmp", "msg", "first");
    if (mkdir("tmp", 0755) || mkdir("new", 0755)) { perror("mkdir"); return 4; }
    int mail = publish("tmp/mail", "new/mail", "mail");
    int mfd = publish("map.tmp", "map", "");
    if (ftruncate(mfd, 4096)) { perror("ftruncate"); return 4; }
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 4; }
    close(mfd);
    strcpy(m, "mapped");

    char name[64];
    snprintf(name, sizeof name, "/ssi-linkedname-%d", getpid());
    sem_unlink(name);
    sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
    if (s == SEM_FAILED) { perror("sem_open"); return 4; }

    fixture_ready();
    fixture_wait();

    same_file(git, "msg", "first+more");
    same_file(mail, "new/mail", "mail+more");
    strcpy(m, "second");
    char buf[16] = {0};
    int r = open("map", O_RDONLY);
    EXPECT(r >= 0 && read(r, buf, 6) == 6 && !strcmp(buf, "second"), "\"map\" reads '%s' after a write through the mapping", buf);

    // A new process opens the semaphore by its name and posts: the creator must see it.
    pid_t c = fork();
    if (c == 0) {
        sem_t *cs = sem_open(name, 0);
        _exit(cs != SEM_FAILED && sem_post(cs) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(c, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the opener's sem_open or sem_post failed (status %x)", status);
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 3;
    EXPECT(sem_timedwait(s, &t) == 0, "a post through sem_open(%s) by a new process did not reach the creator's semaphore: %s", name, strerror(errno));
    sem_unlink(name);
    return fixture_finish();
}
