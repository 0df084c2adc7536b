// A Linux AIO context (io_setup(2), what libaio gives databases and qemu): refused at
// checkpoint, which fails in the middle of the memory dump (its ring is a mapping of the
// kernel's aio file system), and must leave the process running and no version written.
// On the first SIGUSR1 the fixture reads a file through the context, destroys it and prints
// DESTROYED; it is then an ordinary process, checked after restart on the second SIGUSR1
// (its memory, and that a new context can be made).
#include "fixture.h"
#include <linux/aio_abi.h>
#include <sys/syscall.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, 8, &ctx)) { printf("FAIL: io_setup: %s\n", strerror(errno)); return 1; }
    static char marker[64] = "kept across the restart";
    fixture_ready();
    fixture_wait();
    // Still usable after the refused checkpoint.
    // A file of its own (procfs files refuse AIO reads with EINVAL).
    int fd = open("aioctx.data", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (write(fd, "0123456789abcdef0123456789abcdef", 32) != 32) printf("FAIL: write aioctx.data\n");
    char buf[32];
    struct iocb cb = { .aio_fildes = (unsigned)fd, .aio_lio_opcode = IOCB_CMD_PREAD, .aio_buf = (unsigned long)buf, .aio_nbytes = sizeof buf };
    struct iocb *list[1] = { &cb };
    struct io_event ev;
    long submitted = syscall(SYS_io_submit, ctx, 1, list);
    EXPECT(submitted == 1, "io_submit after the refused checkpoint: %s", strerror(errno));
    if (submitted == 1) EXPECT(syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) == 1 && ev.res == 32, "io_getevents: %s (res %lld)", strerror(errno), (long long)ev.res);
    close(fd);
    unlink("aioctx.data");
    syscall(SYS_io_destroy, ctx);
    printf("DESTROYED\n");
    fixture_go = 0;
    fixture_wait();
    EXPECT(strcmp(marker, "kept across the restart") == 0, "memory: '%s'", marker);
    aio_context_t again = 0;
    EXPECT(syscall(SYS_io_setup, 8, &again) == 0, "io_setup after restart: %s", strerror(errno));
    return fixture_finish();
}
