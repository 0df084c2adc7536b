// SysV IPC and POSIX mq states in the machine's own IPC namespace (IPC_PRIVATE objects):
//  shmro   segment A attached by the parent at a fixed address 0x7e0000000000 SHM_RDONLY and
//          read-write at another address; the child attaches it too: nattch 3, content kept,
//          the read-only mapping still r--s (write faults), shm_cpid/shm_lpid
//  shmrm   segment B attached, written, then IPC_RMID (still attached): content kept after
//          restart, still marked (key 0 / SHM_DEST), nattch 1
//  sem     set of 2: sem 0 = 0 with a child blocked in semop(-1) (no SEM_UNDO): GETNCNT 1,
//          GETPID/sem_otime of sem 1 after a semop by the parent; after restart a V wakes the
//          child
//  msg     queue with messages of types 3, 1, 2, 1 ("t3", "t1a", "t2", "t1b"): read by type 2,
//          by -2 (lowest <=2: t1a), by MSG_EXCEPT 1 (t3), then t1b
//  mqn     POSIX mq O_NONBLOCK with mq_notify(SIGEV_SIGNAL SIGUSR2) registered, empty: after
//          restart a message sent to it raises SIGUSR2 (si_code SI_MESGQ)
#include "fixture.h"
#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
static int has(int argc, char **argv, const char *m) { for (int i = 1; i < argc; i++) if (!strcmp(argv[i], m)) return 1; return argc == 1; }
static volatile sig_atomic_t usr2, usr2code;
static void on2(int s, siginfo_t *si, void *c) { (void)s; (void)c; usr2++; usr2code = si->si_code; }
static int mapsperm(void *addr, char *perm) { FILE *f = fopen("/proc/self/maps", "r"); char line[512]; unsigned long a = (unsigned long)addr;
    while (fgets(line, sizeof line, f)) { unsigned long s, e; char p[5]; if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && s == a) { strcpy(perm, p); fclose(f); return 1; } } fclose(f); return 0; }
union semun { int val; struct semid_ds *buf; unsigned short *array; };
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int A = -1, B = -1, S = -1, Q = -1; mqd_t M = (mqd_t)-1; char mqname[64]; snprintf(mqname, sizeof mqname, "/p7-%d", getpid());
    char *ro = NULL, *rw = NULL, *bp = NULL; pid_t shmchild = 0, semchild = 0; struct shmid_ds a0, b0; struct semid_ds s0; int pid1 = 0;
    if (has(argc, argv, "shmro")) {
        A = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
        ro = shmat(A, (void*)0x7e0000000000, SHM_RDONLY); rw = shmat(A, NULL, 0);
        EXPECT(ro == (void*)0x7e0000000000 && rw != (void*)-1, "setup shmat %p %p", ro, rw);
        strcpy(rw, "shared-ro"); strcpy(rw + (1 << 19), "half");
        shmchild = fork();
        if (shmchild == 0) { char *c = shmat(A, NULL, 0); (void)c; for (;;) pause(); }
        usleep(100000);
    }
    if (has(argc, argv, "shmrm")) {
        B = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600); bp = shmat(B, NULL, 0); strcpy(bp, "removed-but-attached");
        shmctl(B, IPC_RMID, NULL); shmctl(B, IPC_STAT, &b0);
    }
    if (has(argc, argv, "sem")) {
        S = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
        union semun u = { .val = 0 }; semctl(S, 0, SETVAL, u);
        struct sembuf up = { 1, 2, 0 }; semop(S, &up, 1);
        semchild = fork();
        if (semchild == 0) { struct sembuf p = { 0, -1, 0 }; int r = semop(S, &p, 1); _exit(r == 0 ? 0 : 10 + errno); }
        usleep(200000); pid1 = semctl(S, 1, GETPID); u.buf = &s0; semctl(S, 0, IPC_STAT, u);
        EXPECT(semctl(S, 0, GETNCNT) == 1 && pid1 == getpid(), "setup sem ncnt %d pid %d", semctl(S, 0, GETNCNT), pid1);
    }
    if (has(argc, argv, "msg")) {
        Q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
        struct { long t; char m[16]; } m;
        m.t = 3; strcpy(m.m, "t3"); msgsnd(Q, &m, 3, 0); m.t = 1; strcpy(m.m, "t1a"); msgsnd(Q, &m, 4, 0);
        m.t = 2; strcpy(m.m, "t2"); msgsnd(Q, &m, 3, 0); m.t = 1; strcpy(m.m, "t1b"); msgsnd(Q, &m, 4, 0);
    }
    if (has(argc, argv, "mqn")) {
        struct sigaction sa = { .sa_sigaction = on2, .sa_flags = SA_SIGINFO }; sigaction(SIGUSR2, &sa, NULL);
        struct mq_attr at = { .mq_maxmsg = 4, .mq_msgsize = 32 };
        M = mq_open(mqname, O_RDWR | O_CREAT | O_NONBLOCK, 0600, &at);
        struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
        EXPECT(mq_notify(M, &ev) == 0, "setup mq_notify %s", strerror(errno));
    }
    if (A >= 0) shmctl(A, IPC_STAT, &a0);
    if (B >= 0) shmctl(B, IPC_STAT, &b0);
    fixture_ready(); fixture_wait();
    if (A >= 0) {
        struct shmid_ds a1; shmctl(A, IPC_STAT, &a1);
        EXPECT(a1.shm_nattch == a0.shm_nattch, "shmro: nattch %lu (was %lu)", (unsigned long)a1.shm_nattch, (unsigned long)a0.shm_nattch);
        EXPECT(a1.shm_cpid == a0.shm_cpid && a1.shm_lpid == a0.shm_lpid, "shmro: cpid %d lpid %d (were %d %d)", a1.shm_cpid, a1.shm_lpid, a0.shm_cpid, a0.shm_lpid);
        EXPECT(a1.shm_atime == a0.shm_atime, "shmro: atime moved by %ld s", (long)(a1.shm_atime - a0.shm_atime));
        EXPECT(!strcmp(ro, "shared-ro") && !strcmp(ro + (1 << 19), "half"), "shmro: content");
        char p[5] = ""; mapsperm(ro, p); EXPECT(!strcmp(p, "r--s"), "shmro: ro mapping perms %s", p);
        rw[0] = 'S'; EXPECT(ro[0] == 'S', "shmro: ro and rw not the same segment");
        kill(shmchild, SIGKILL); waitpid(shmchild, NULL, 0);
        shmdt(ro); shmdt(rw); shmctl(A, IPC_RMID, NULL);
    }
    if (B >= 0) {
        struct shmid_ds b1; int r = shmctl(B, IPC_STAT, &b1);
        EXPECT(r == 0, "shmrm: IPC_STAT %s", strerror(errno));
        EXPECT(!strcmp(bp, "removed-but-attached"), "shmrm: content");
        EXPECT(r != 0 || (b1.shm_perm.mode & SHM_DEST), "shmrm: no longer marked for removal (mode %#o, key %#x) (leaks after exit)", b1.shm_perm.mode, b1.shm_perm.__key);
        EXPECT(r != 0 || b1.shm_nattch == b0.shm_nattch, "shmrm: nattch %lu", (unsigned long)b1.shm_nattch);
        shmdt(bp); if (r == 0 && !(b1.shm_perm.mode & SHM_DEST)) shmctl(B, IPC_RMID, NULL);
    }
    if (S >= 0) {
        EXPECT(semctl(S, 0, GETNCNT) == 1, "sem: GETNCNT %d", semctl(S, 0, GETNCNT));
        EXPECT(semctl(S, 1, GETPID) == pid1, "sem: GETPID %d (was %d)", semctl(S, 1, GETPID), pid1);
        struct semid_ds s1; union semun u = { .buf = &s1 }; semctl(S, 0, IPC_STAT, u);
        EXPECT(s1.sem_otime == s0.sem_otime, "sem: otime moved by %ld", (long)(s1.sem_otime - s0.sem_otime));
        EXPECT(semctl(S, 1, GETVAL) == 2 && semctl(S, 0, GETVAL) == 0, "sem: values %d %d", semctl(S, 0, GETVAL), semctl(S, 1, GETVAL));
        struct sembuf v = { 0, 1, 0 }; semop(S, &v, 1);
        int st; waitpid(semchild, &st, 0); EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sem: child %#x", st);
        EXPECT(semctl(S, 0, GETVAL) == 0, "sem: after the child %d", semctl(S, 0, GETVAL));
        semctl(S, 0, IPC_RMID);
    }
    if (Q >= 0) {
        struct { long t; char m[16]; } m; ssize_t n;
        n = msgrcv(Q, &m, 16, 2, IPC_NOWAIT); EXPECT(n == 3 && !strcmp(m.m, "t2"), "msg: type 2 %zd", n);
        n = msgrcv(Q, &m, 16, -2, IPC_NOWAIT); EXPECT(n == 4 && !strcmp(m.m, "t1a"), "msg: type -2 %zd %s", n, n > 0 ? m.m : "");
        n = msgrcv(Q, &m, 16, 1, IPC_NOWAIT | MSG_EXCEPT); EXPECT(n == 3 && !strcmp(m.m, "t3"), "msg: except 1 %zd %s", n, n > 0 ? m.m : "");
        n = msgrcv(Q, &m, 16, 0, IPC_NOWAIT); EXPECT(n == 4 && !strcmp(m.m, "t1b"), "msg: last %zd", n);
        msgctl(Q, IPC_RMID, NULL);
    }
    if (M != (mqd_t)-1) {
        struct mq_attr at; mq_getattr(M, &at); EXPECT(at.mq_flags & O_NONBLOCK, "mqn: O_NONBLOCK lost");
        struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
        pid_t c = fork(); if (c == 0) { mqd_t m2 = mq_open(mqname, O_RDWR); _exit(mq_notify(m2, &ev) == 0 ? 0 : errno); }
        int st; waitpid(c, &st, 0);
        EXPECT(WEXITSTATUS(st) == EBUSY, "mqn: another process could register (exit %d): the registration is gone", WEXITSTATUS(st));
        mq_send(M, "hi", 2, 0); usleep(100000);
        EXPECT(usr2 == 1 && usr2code == SI_MESGQ, "mqn: notification signals %d code %d", usr2, usr2code);
        mq_unlink(mqname);
    }
    return fixture_finish();
}
