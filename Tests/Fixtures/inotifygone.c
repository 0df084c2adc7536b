// An inotify watch on a file that was deleted (and is still open): its path is gone, so
// the checkpoint must fail naming PID and fd; with -i the inotify fd is restored closed and
// everything else as usual.
#include "fixture.h"
#include <sys/inotify.h>

int main(void) {
    int keep = open("gone.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    int fd = inotify_init1(0);
    inotify_add_watch(fd, "gone.txt", IN_MODIFY);
    unlink("gone.txt");
    fixture_ready();
    printf("INOTIFY %d\n", fd);
    fflush(stdout);
    fixture_wait();
    EXPECT(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "inotify fd %d is still open", fd);
    EXPECT(fcntl(keep, F_GETFD) >= 0, "the deleted file's fd was lost");
    return fixture_finish();
}
