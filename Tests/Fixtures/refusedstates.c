// States the checkpoint must refuse by name, leaving the application running, because what
// they hold cannot be read back from user space (found by the fourth probing round, December
// 2026; each was saved wrong before):
//   uring  an io_uring ring still mapped after its fd was closed (io_uring_close_ring_fd):
//          the snapshot was written, and its restart failed on "anon_inode:[io_uring]"
//   oob    a unix stream with an urgent byte (send MSG_OOB, Linux 5.15) not read yet: it came
//          back as an ordinary byte
//   more   a UDP datagram begun with MSG_MORE and not finished: its bytes were lost
// Each prints READY with the state held; the test expects the checkpoint to be refused with
// its name. Where the kernel lacks the feature: SKIP, and the run passes.
#include "fixture.h"
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "uring")) {
        struct io_uring_params p; memset(&p, 0, sizeof p);
        int fd = (int)syscall(SYS_io_uring_setup, 4, &p);
        if (fd < 0) {
            printf("SKIP: io_uring_setup: %s\n", strerror(errno));
        } else {
            size_t len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
            void *ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
            if (ring == MAP_FAILED) return 4;
            close(fd);   // the ring stays mapped, with no fd
        }
    } else if (!strcmp(mode, "oob")) {
        int sp[2]; if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) return 4;
        if (write(sp[0], "abc", 3) != 3) return 4;
        if (send(sp[0], "X", 1, MSG_OOB) != 1) printf("SKIP: unix MSG_OOB: %s\n", strerror(errno));
        if (write(sp[0], "def", 3) != 3) return 4;
    } else if (!strcmp(mode, "more")) {
        int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        if (bind(r, (struct sockaddr *)&a, sizeof a) || getsockname(r, (struct sockaddr *)&a, &len)) return 4;
        if (sendto(s, "ab", 2, MSG_MORE, (struct sockaddr *)&a, sizeof a) != 2) return 4;
    } else {
        printf("usage: refusedstates uring|oob|more\n");
        return 4;
    }
    fixture_ready();
    fixture_wait();
    return fixture_finish();
}
