// POSIX message queues (mq_overview(7)) in the machine's own IPC namespace:
//   q1   "/ssi-mq-PID", created O_RDWR with mode 0640, 5 messages of at most 64 bytes;
//        3 messages queued with priorities 1, 7, 1 ("low-a", "high", "low-b")
//   q1w  a second fd on it, O_WRONLY | O_NONBLOCK, close-on-exec
//   q2   "/ssi-mq2-PID", default attributes, empty, opened O_RDONLY | O_NONBLOCK
// After restart: the fds are queues (mq_getattr works) with their attributes and flags, q1
// holds exactly the 3 messages in priority order ("high", then "low-a", "low-b": nothing
// lost, nothing twice), q2 is empty (EAGAIN), a message sent on q1w arrives on q1, the mode
// is 0640; both queues are removed at the end.
#include "fixture.h"
#include <fcntl.h>
#include <mqueue.h>
#include <sys/stat.h>
#include <time.h>

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "/ssi-mq-%d", getpid());
    snprintf(n2, sizeof n2, "/ssi-mq2-%d", getpid());
    mq_unlink(n1);
    mq_unlink(n2);
    umask(0);
    struct mq_attr a = { .mq_maxmsg = 5, .mq_msgsize = 64 };
    mqd_t q1 = mq_open(n1, O_RDWR | O_CREAT | O_EXCL, 0640, &a);
    mqd_t q2 = mq_open(n2, O_RDONLY | O_CREAT | O_EXCL | O_NONBLOCK, 0600, NULL);
    mqd_t q1w = mq_open(n1, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (q1 < 0 || q2 < 0 || q1w < 0) { printf("FAIL: setup: mq_open: %s\n", strerror(errno)); return 4; }
    mq_send(q1, "low-a", 5, 1);
    mq_send(q1, "high", 4, 7);
    mq_send(q1w, "low-b", 5, 1);
    struct mq_attr d2;
    mq_getattr(q2, &d2);

    fixture_ready();
    fixture_wait();

    struct mq_attr g;
    EXPECT(mq_getattr(q1, &g) == 0, "q1: mq_getattr: %s", strerror(errno));
    EXPECT(g.mq_maxmsg == 5 && g.mq_msgsize == 64, "q1: attributes %ld x %ld, expected 5 x 64", g.mq_maxmsg, g.mq_msgsize);
    EXPECT(g.mq_curmsgs == 3, "q1: %ld messages queued, expected 3", g.mq_curmsgs);
    EXPECT((g.mq_flags & O_NONBLOCK) == 0, "q1: O_NONBLOCK set, it was not");
    EXPECT(mq_getattr(q1w, &g) == 0 && (g.mq_flags & O_NONBLOCK), "q1w: O_NONBLOCK lost");
    int fl = fcntl(q1w, F_GETFL), fd = fcntl(q1w, F_GETFD);
    EXPECT((fl & O_ACCMODE) == O_WRONLY, "q1w: access mode %d, expected O_WRONLY", fl & O_ACCMODE);
    EXPECT(fd & FD_CLOEXEC, "q1w: close-on-exec lost");
    EXPECT(mq_getattr(q2, &g) == 0 && g.mq_maxmsg == d2.mq_maxmsg && g.mq_msgsize == d2.mq_msgsize && (g.mq_flags & O_NONBLOCK),
           "q2: attributes or O_NONBLOCK differ");
    const char *want[3] = { "high", "low-a", "low-b" };
    unsigned wantp[3] = { 7, 1, 1 };
    for (int i = 0; i < 3; i++) {
        char buf[64] = { 0 };
        unsigned p = 0;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        ssize_t n = mq_timedreceive(q1, buf, sizeof buf, &p, &ts);
        EXPECT(n == (ssize_t)strlen(want[i]) && !memcmp(buf, want[i], n) && p == wantp[i],
               "q1 message %d: '%.*s' priority %u (%zd bytes), expected '%s' priority %u", i, n > 0 ? (int)n : 0, buf, p, n, want[i], wantp[i]);
    }
    static char big[1 << 16];   // mq_receive needs at least the queue's message size (EMSGSIZE)
    EXPECT(mq_receive(q2, big, sizeof big, NULL) < 0 && errno == EAGAIN, "q2: not empty (or not non-blocking): %s", strerror(errno));
    char buf[64];
    EXPECT(mq_send(q1w, "after", 5, 3) == 0, "q1w: mq_send: %s", strerror(errno));
    unsigned p = 0;
    ssize_t n = mq_receive(q1, buf, sizeof buf, &p);
    EXPECT(n == 5 && !memcmp(buf, "after", 5) && p == 3, "q1: the message sent after restart did not arrive");
    struct stat st;
    EXPECT(fstat(q1, &st) == 0 && (st.st_mode & 0777) == 0640, "q1: mode %o, expected 640", st.st_mode & 0777);
    mq_unlink(n1);
    mq_unlink(n2);
    return fixture_finish();
}
