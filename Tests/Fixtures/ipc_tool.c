// ipc_tool: creates, fills and prints SysV IPC objects for Tests/SSIIPCTests, so that a
// test shell script run under `unshare --ipc` can set up and check the objects that
// `ssi ipc checkpoint/restart` save and restore. Prints results on stdout; exits 1 on error.
//
//   ipc_tool mkq KEY [MODE]             -> prints the new queue id
//   ipc_tool send ID TYPE TEXT           msgsnd
//   ipc_tool recv ID                     msgrcv (type 0, IPC_NOWAIT): prints "TYPE TEXT"
//   ipc_tool qstat ID                    prints "key=K uid=U gid=G mode=M qbytes=Q qnum=N"
//   ipc_tool qset ID UID GID MODE QBYTES IPC_SET
//   ipc_tool mksem KEY N [MODE]          -> id
//   ipc_tool semset ID V1 V2 ...         SETALL
//   ipc_tool semget ID                   prints the values
//   ipc_tool semstat ID                  prints "key=K uid=U gid=G mode=M nsems=N"
//   ipc_tool mkshm KEY SIZE [MODE]       -> id
//   ipc_tool touch ID PAGE BYTE ...      writes BYTE over page PAGE (pairs)
//   ipc_tool peek ID PAGE                prints the first and last byte of page PAGE
//   ipc_tool shmstat ID                  prints "key=K uid=U gid=G mode=M size=S"
//   ipc_tool lock ID                     SHM_LOCK
//   ipc_tool hold ID SECONDS             attaches the segment, prints "attached", sleeps
//   ipc_tool rm q|s|m ID                 IPC_RMID
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

union semun { int val; struct semid_ds *buf; unsigned short *array; };

static void die(const char *what) { fprintf(stderr, "ipc_tool: %s: %s\n", what, strerror(errno)); exit(1); }
static long num(const char *s) { return strtol(s, NULL, 0); }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: see ipc_tool.c\n"); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "mkq")) {
        int id = msgget((key_t)num(argv[2]), IPC_CREAT | IPC_EXCL | (argc > 3 ? (int)num(argv[3]) : 0600));
        if (id < 0) die("msgget");
        printf("%d\n", id);
    } else if (!strcmp(cmd, "send")) {
        size_t len = strlen(argv[4]);
        struct { long type; char text[8192]; } m;
        m.type = num(argv[3]);
        memcpy(m.text, argv[4], len);
        if (msgsnd((int)num(argv[2]), &m, len, IPC_NOWAIT) < 0) die("msgsnd");
    } else if (!strcmp(cmd, "recv")) {
        struct { long type; char text[8193]; } m;
        ssize_t n = msgrcv((int)num(argv[2]), &m, 8192, 0, IPC_NOWAIT);
        if (n < 0) die("msgrcv");
        m.text[n] = 0;
        printf("%ld %s\n", m.type, m.text);
    } else if (!strcmp(cmd, "fill") || !strcmp(cmd, "drain")) {
        // fill Q N: N messages of types 1..31 and lengths 0..2999, a function of their
        // index; drain Q: receives every message. Both print the count and an FNV-1a hash
        // of (type, length, text) in order, so that a queue can be compared with what was sent.
        static struct { long type; unsigned char text[65536]; } m;
        int id = (int)num(argv[2]);
        unsigned long long h = 1469598103934665603ULL, count = 0;
        long n = !strcmp(cmd, "fill") ? num(argv[3]) : -1;
        for (long i = 0; n < 0 || i < n; i++) {
            ssize_t len;
            if (n >= 0) {
                m.type = 1 + (i * 7) % 31;
                len = (i * 131) % 3000;
                for (ssize_t k = 0; k < len; k++) m.text[k] = (unsigned char)(i + k * 13);
                if (msgsnd(id, &m, (size_t)len, IPC_NOWAIT) < 0) die("msgsnd");
            } else {
                len = msgrcv(id, &m, sizeof m.text, 0, IPC_NOWAIT);
                if (len < 0 && errno == ENOMSG) break;
                if (len < 0) die("msgrcv");
            }
            unsigned long long t = (unsigned long long)m.type ^ ((unsigned long long)len << 32);
            for (int b = 0; b < 8; b++) { h ^= (t >> (8 * b)) & 0xff; h *= 1099511628211ULL; }
            for (ssize_t k = 0; k < len; k++) { h ^= m.text[k]; h *= 1099511628211ULL; }
            count++;
        }
        printf("%llu %016llx\n", count, h);
    } else if (!strcmp(cmd, "qstat")) {
        struct msqid_ds ds;
        if (msgctl((int)num(argv[2]), IPC_STAT, &ds) < 0) die("msgctl");
        printf("key=%d uid=%u gid=%u mode=%o qbytes=%lu qnum=%lu\n", ds.msg_perm.__key, ds.msg_perm.uid, ds.msg_perm.gid,
               ds.msg_perm.mode & 0777, (unsigned long)ds.msg_qbytes, (unsigned long)ds.msg_qnum);
    } else if (!strcmp(cmd, "qset")) {
        struct msqid_ds ds;
        int id = (int)num(argv[2]);
        if (msgctl(id, IPC_STAT, &ds) < 0) die("msgctl");
        ds.msg_perm.uid = (uid_t)num(argv[3]); ds.msg_perm.gid = (gid_t)num(argv[4]);
        ds.msg_perm.mode = (unsigned short)num(argv[5]); ds.msg_qbytes = (msglen_t)num(argv[6]);
        if (msgctl(id, IPC_SET, &ds) < 0) die("msgctl IPC_SET");
    } else if (!strcmp(cmd, "mksem")) {
        int id = semget((key_t)num(argv[2]), (int)num(argv[3]), IPC_CREAT | IPC_EXCL | (argc > 4 ? (int)num(argv[4]) : 0600));
        if (id < 0) die("semget");
        printf("%d\n", id);
    } else if (!strcmp(cmd, "semset")) {
        int n = argc - 3;
        unsigned short *v = calloc((size_t)n, sizeof *v);
        for (int i = 0; i < n; i++) v[i] = (unsigned short)num(argv[3 + i]);
        union semun a = { .array = v };
        if (semctl((int)num(argv[2]), 0, SETALL, a) < 0) die("semctl SETALL");
    } else if (!strcmp(cmd, "semget")) {
        struct semid_ds ds;
        union semun a = { .buf = &ds };
        int id = (int)num(argv[2]);
        if (semctl(id, 0, IPC_STAT, a) < 0) die("semctl IPC_STAT");
        unsigned short *v = calloc(ds.sem_nsems, sizeof *v);
        a.array = v;
        if (semctl(id, 0, GETALL, a) < 0) die("semctl GETALL");
        for (unsigned long i = 0; i < ds.sem_nsems; i++) printf(i ? " %u" : "%u", v[i]);
        printf("\n");
    } else if (!strcmp(cmd, "semstat")) {
        struct semid_ds ds;
        union semun a = { .buf = &ds };
        if (semctl((int)num(argv[2]), 0, IPC_STAT, a) < 0) die("semctl IPC_STAT");
        printf("key=%d uid=%u gid=%u mode=%o nsems=%lu\n", ds.sem_perm.__key, ds.sem_perm.uid, ds.sem_perm.gid,
               ds.sem_perm.mode & 0777, (unsigned long)ds.sem_nsems);
    } else if (!strcmp(cmd, "mkshm")) {
        int id = shmget((key_t)num(argv[2]), (size_t)num(argv[3]), IPC_CREAT | IPC_EXCL | (argc > 4 ? (int)num(argv[4]) : 0600));
        if (id < 0) die("shmget");
        printf("%d\n", id);
    } else if (!strcmp(cmd, "touch") || !strcmp(cmd, "peek")) {
        unsigned char *p = shmat((int)num(argv[2]), NULL, 0);
        if (p == (void *)-1) die("shmat");
        if (!strcmp(cmd, "touch")) {
            for (int i = 3; i + 1 < argc; i += 2) memset(p + num(argv[i]) * 4096, (int)num(argv[i + 1]), 4096);
        } else {
            long page = num(argv[3]);
            printf("%u %u\n", p[page * 4096], p[page * 4096 + 4095]);
        }
        shmdt(p);
    } else if (!strcmp(cmd, "shmstat")) {
        struct shmid_ds ds;
        if (shmctl((int)num(argv[2]), IPC_STAT, &ds) < 0) die("shmctl IPC_STAT");
        printf("key=%d uid=%u gid=%u mode=%o size=%lu\n", ds.shm_perm.__key, ds.shm_perm.uid, ds.shm_perm.gid,
               ds.shm_perm.mode & 0777, (unsigned long)ds.shm_segsz);
    } else if (!strcmp(cmd, "lock")) {
        if (shmctl((int)num(argv[2]), SHM_LOCK, NULL) < 0) die("shmctl SHM_LOCK");
    } else if (!strcmp(cmd, "hold")) {
        void *p = shmat((int)num(argv[2]), NULL, 0);
        if (p == (void *)-1) die("shmat");
        printf("attached\n");
        fflush(stdout);
        sleep((unsigned)num(argv[3]));
    } else if (!strcmp(cmd, "rm")) {
        int id = (int)num(argv[3]), r;
        if (argv[2][0] == 'q') r = msgctl(id, IPC_RMID, NULL);
        else if (argv[2][0] == 's') r = semctl(id, 0, IPC_RMID);
        else r = shmctl(id, IPC_RMID, NULL);
        if (r < 0) die("IPC_RMID");
    } else {
        fprintf(stderr, "ipc_tool: unknown command %s\n", cmd);
        return 2;
    }
    return 0;
}
