// An inotify watch on a file that was deleted and that no fd of the application holds any
// more (only a mapping keeps the inode): the restart could not make the watched file again
// (an unlinked file is rebuilt from the fds that hold it, see inotifyremoved.c), so the
// checkpoint must fail naming PID and fd; with -i the inotify fd is restored closed and
// everything else as usual (the mapping keeps its content).
#include "fixture.h"
#include <sys/inotify.h>
#include <sys/mman.h>

int main(void) {
    int keep = open("gone.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    ftruncate(keep, 4096);
    char *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, keep, 0);
    strcpy(map, "kept by the mapping");
    close(keep);
    int fd = inotify_init1(0);
    inotify_add_watch(fd, "gone.txt", IN_MODIFY);
    unlink("gone.txt");
    fixture_ready();
    printf("INOTIFY %d\n", fd);
    fflush(stdout);
    fixture_wait();
    EXPECT(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "inotify fd %d is still open", fd);
    EXPECT(strcmp(map, "kept by the mapping") == 0, "the deleted file's mapping lost its content");
    return fixture_finish();
}
