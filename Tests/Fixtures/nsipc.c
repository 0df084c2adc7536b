// Issue 10, "Refused, though the state is ordinary": applications that made their own
// namespaces; here IPC, with its objects and limits. A child unshare(CLONE_NEWIPC), then:
//   limits   kernel.msgmax 4000, kernel.msgmnb 20000, kernel.shmmax 1 GiB, kernel.sem
//            "100 1000 50 64" (per IPC namespace, in /proc/sys/kernel)
//   msg      a message queue (key 0x5510), 2 messages queued (types 1 and 2)
//   sem      a semaphore set (key 0x5520) of 3, values 1, 7, 0
//   shm      a 64 KiB segment (key 0x5530), attached, "ipc-ns shm" written
//   mq       a POSIX message queue "/ssi-fixture" with 2 messages (priorities 5 and 1)
// The root stays in the original namespace and creates nothing there.
// After restart the child checks: its IPC namespace is not the root's; the limits; each
// object found by its key with the same id (msgget/semget/shmget), its content; the segment
// still attached at the same address with the content; the mq's messages in priority order.
// The root checks that none of these keys exists in its own namespace.
#include "fixture.h"
#include <mqueue.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

static void put(const char *path, const char *v) { FILE *f = fopen(path, "w"); if (f) { fputs(v, f); fclose(f); } }
static void get(const char *path, char *out, size_t n) { FILE *f = fopen(path, "r"); out[0] = 0; if (f) { if (!fgets(out, n, f)) out[0] = 0; fclose(f); } out[strcspn(out, "\n")] = 0; }
static void ns_of(pid_t pid, char *out, size_t n) { char p[64]; snprintf(p, sizeof p, "/proc/%d/ns/ipc", pid); ssize_t r = readlink(p, out, n - 1); out[r > 0 ? r : 0] = 0; }

struct msgb { long type; char text[32]; };

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    fixture_catch_usr1();
    pid_t child = fork();
    if (child == 0) {
        if (unshare(CLONE_NEWIPC) < 0) { printf("FAIL: unshare: %s\n", strerror(errno)); _exit(1); }
        put("/proc/sys/kernel/msgmax", "4000");
        put("/proc/sys/kernel/msgmnb", "20000");
        put("/proc/sys/kernel/shmmax", "1073741824");
        put("/proc/sys/kernel/sem", "100 1000 50 64");
        int q = msgget(0x5510, IPC_CREAT | 0640);
        struct msgb m1 = { 1, "first" }, m2 = { 2, "second" };
        msgsnd(q, &m1, 6, 0);
        msgsnd(q, &m2, 7, 0);
        int s = semget(0x5520, 3, IPC_CREAT | 0600);
        unsigned short vals[3] = { 1, 7, 0 };
        semctl(s, 0, SETALL, vals);
        int sh = shmget(0x5530, 65536, IPC_CREAT | 0600);
        char *addr = shmat(sh, NULL, 0);
        strcpy(addr, "ipc-ns shm");
        struct mq_attr at = { .mq_maxmsg = 4, .mq_msgsize = 64 };
        mqd_t mq = mq_open("/ssi-fixture", O_CREAT | O_RDWR | O_NONBLOCK, 0600, &at);
        mq_send(mq, "low", 3, 1);
        mq_send(mq, "high", 4, 5);
        char parent[64], mine[64];
        fixture_wait();
        fixture_failures = 0;
        ns_of(getppid(), parent, sizeof parent);
        ns_of(getpid(), mine, sizeof mine);
        EXPECT(strcmp(parent, mine) != 0, "child: in its parent's IPC namespace (%s)", mine);
        char v[64];
        get("/proc/sys/kernel/msgmax", v, sizeof v);
        EXPECT(strcmp(v, "4000") == 0, "child: msgmax %s", v);
        get("/proc/sys/kernel/msgmnb", v, sizeof v);
        EXPECT(strcmp(v, "20000") == 0, "child: msgmnb %s", v);
        get("/proc/sys/kernel/shmmax", v, sizeof v);
        EXPECT(strcmp(v, "1073741824") == 0, "child: shmmax %s", v);
        get("/proc/sys/kernel/sem", v, sizeof v);
        EXPECT(strcmp(v, "100\t1000\t50\t64") == 0, "child: sem '%s'", v);
        EXPECT(msgget(0x5510, 0) == q, "child: msg queue id %d, was %d", msgget(0x5510, 0), q);
        struct msgb r;
        memset(&r, 0, sizeof r);
        EXPECT(msgrcv(q, &r, sizeof r.text, 0, IPC_NOWAIT) == 6 && r.type == 1 && !strcmp(r.text, "first"), "child: first message '%s' type %ld", r.text, r.type);
        memset(&r, 0, sizeof r);
        EXPECT(msgrcv(q, &r, sizeof r.text, 0, IPC_NOWAIT) == 7 && r.type == 2 && !strcmp(r.text, "second"), "child: second message '%s'", r.text);
        EXPECT(semget(0x5520, 0, 0) == s, "child: semaphore id %d, was %d", semget(0x5520, 0, 0), s);
        unsigned short now[3] = { 9, 9, 9 };
        semctl(s, 0, GETALL, now);
        EXPECT(now[0] == 1 && now[1] == 7 && now[2] == 0, "child: semaphores %d %d %d", now[0], now[1], now[2]);
        EXPECT(shmget(0x5530, 0, 0) == sh, "child: shm id %d, was %d", shmget(0x5530, 0, 0), sh);
        EXPECT(strcmp(addr, "ipc-ns shm") == 0, "child: shm content '%.16s'", addr);
        struct shmid_ds ds;
        EXPECT(shmctl(sh, IPC_STAT, &ds) == 0 && ds.shm_nattch == 1 && ds.shm_segsz == 65536, "child: shm nattch %ld size %zu", (long)ds.shm_nattch, ds.shm_segsz);
        char b[64] = {0};
        unsigned prio = 0;
        EXPECT(mq_receive(mq, b, sizeof b, &prio) == 4 && prio == 5 && !strcmp(b, "high"), "child: mq first '%s' prio %u", b, prio);
        memset(b, 0, sizeof b);
        EXPECT(mq_receive(mq, b, sizeof b, &prio) == 3 && prio == 1 && !strcmp(b, "low"), "child: mq second '%s' prio %u", b, prio);
        printf("child %s\n", fixture_failures ? "FAIL" : "OK");
        _exit(fixture_failures ? 1 : 0);
    }
    usleep(200000);

    fixture_ready();
    fixture_wait();

    EXPECT(msgget(0x5510, 0) < 0 && semget(0x5520, 0, 0) < 0 && shmget(0x5530, 0, 0) < 0, "root: the child's IPC objects are visible in the root's namespace");
    mqd_t m = mq_open("/ssi-fixture", O_RDONLY);
    EXPECT(m == (mqd_t)-1, "root: the child's POSIX queue is visible in the root's namespace");
    kill(child, SIGUSR1);
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %#x", st);
    return fixture_finish();
}
