// SEM_UNDO adjustments (semop(2)) held across checkpoint and restart: a lock taken with
// SEM_UNDO (Apache's and PHP-FPM's SysV mutexes, many daemons' "one instance" guards) must
// still be held after the restart, and given back by the process's exit as before.
//
//   semundo [ns] [continue]
//     ns:        the process unshares an IPC namespace of its own first (CLONE_NEWIPC), so the
//                arrays are the application's and are saved with it; else they live in the
//                namespace ssi runs in, which keeps them while the application is down.
//     continue:  the harness checkpoints without killing (lifecycle.sh --continue): a
//                multithreaded process's other threads then no longer share its undo list
//                (SemaphoreUndo.swift), so the check that the main thread's unshare alone
//                gives nothing back is left out.
//
// State: array A of 3 semaphores set to {1, 0, 5} and B of 1 set to {3}. The main thread takes
// A[0] (-1, SEM_UNDO) and gives A[1] two (+2, SEM_UNDO); it takes one of A[2] without
// SEM_UNDO; a second thread takes two of A[2] with SEM_UNDO (the same undo list: glibc makes
// threads with CLONE_SYSVSEM); a child process takes one of A[2] with SEM_UNDO (a list of its
// own). Values then: A {0, 2, 1}, B {3}.
//
// Checks, after SIGUSR1: the values; the child's unshare(CLONE_SYSVSEM) (which applies its
// list, as its exit would) gives A[2] one back; the main thread's unshare gives nothing back
// while the thread still shares the list; the thread's unshare then gives back A[0] +1,
// A[1] -2, A[2] +2: A {1, 0, 4}.
#include "fixture.h"
#include <pthread.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

#ifndef CLONE_SYSVSEM
#define CLONE_SYSVSEM 0x00040000
#endif

union semun { int val; struct semid_ds *buf; unsigned short *array; };

static int A, B;
static int toThread[2], fromThread[2];

static int op(int id, int num, int delta, int flags) {
    struct sembuf s = { .sem_num = (unsigned short)num, .sem_op = (short)delta, .sem_flg = (short)flags };
    return semop(id, &s, 1);
}

static int value(int id, int num) { return semctl(id, num, GETVAL); }

static void *thread_main(void *arg) {
    (void)arg;
    char c = op(A, 2, -2, SEM_UNDO) == 0 ? 'y' : 'n';
    if (write(fromThread[1], &c, 1) != 1) return NULL;
    // Told to drop its reference to the undo list: the last reference applies it.
    while (read(toThread[0], &c, 1) != 1) {}
    c = unshare(CLONE_SYSVSEM) == 0 ? 'y' : 'n';
    if (write(fromThread[1], &c, 1) != 1) return NULL;
    return NULL;
}

static void expect_values(const char *when, int a0, int a1, int a2, int b0) {
    int v0 = value(A, 0), v1 = value(A, 1), v2 = value(A, 2), w0 = value(B, 0);
    EXPECT(v0 == a0 && v1 == a1 && v2 == a2 && w0 == b0, "%s: A {%d, %d, %d} B {%d}, expected A {%d, %d, %d} B {%d}",
           when, v0, v1, v2, w0, a0, a1, a2, b0);
}

int main(int argc, char **argv) {
    int ns = 0, cont = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "ns")) ns = 1;
        if (!strcmp(argv[i], "continue")) cont = 1;
    }
    if (ns && unshare(CLONE_NEWIPC) != 0) { perror("unshare(CLONE_NEWIPC)"); return 1; }
    A = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
    B = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    if (A < 0 || B < 0) { perror("semget"); return 1; }
    unsigned short initA[3] = {1, 0, 5}, initB[1] = {3};
    if (semctl(A, 0, SETALL, (union semun){ .array = initA }) != 0 || semctl(B, 0, SETALL, (union semun){ .array = initB }) != 0) {
        perror("SETALL"); return 1;
    }
    if (op(A, 0, -1, SEM_UNDO) || op(A, 1, 2, SEM_UNDO) || op(A, 2, -1, 0)) { perror("semop"); return 1; }

    if (pipe(toThread) || pipe(fromThread)) { perror("pipe"); return 1; }
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    char c;
    if (read(fromThread[0], &c, 1) != 1 || c != 'y') { printf("thread semop failed\n"); return 1; }

    int toChild[2], fromChild[2];
    if (pipe(toChild) || pipe(fromChild)) { perror("pipe"); return 1; }
    pid_t child = fork();
    if (child == 0) {
        // A list of its own (fork does not share it).
        c = op(A, 2, -1, SEM_UNDO) == 0 ? 'y' : 'n';
        if (write(fromChild[1], &c, 1) != 1) _exit(2);
        while (read(toChild[0], &c, 1) != 1) {}
        c = unshare(CLONE_SYSVSEM) == 0 ? 'y' : 'n';
        if (write(fromChild[1], &c, 1) != 1) _exit(2);
        while (read(toChild[0], &c, 1) != 1) {}
        _exit(0);
    }
    if (read(fromChild[0], &c, 1) != 1 || c != 'y') { printf("child semop failed\n"); return 1; }

    expect_values("before", 0, 2, 1, 3);
    if (fixture_failures) return fixture_finish();
    fixture_ready();
    fixture_wait();

    expect_values("after restart", 0, 2, 1, 3);
    // The child's list: A[2] +1.
    c = 'u';
    if (write(toChild[1], &c, 1) != 1 || read(fromChild[0], &c, 1) != 1 || c != 'y') EXPECT(0, "child's unshare(CLONE_SYSVSEM) failed");
    expect_values("after the child's undo", 0, 2, 2, 3);
    // The main thread's reference alone: the thread still holds the list.
    EXPECT(unshare(CLONE_SYSVSEM) == 0, "unshare(CLONE_SYSVSEM): %s", strerror(errno));
    if (!cont) expect_values("after the main thread's unshare (list still shared with the thread)", 0, 2, 2, 3);
    // The thread's: the list's adjustments apply.
    c = 'u';
    if (write(toThread[1], &c, 1) != 1 || read(fromThread[0], &c, 1) != 1 || c != 'y') EXPECT(0, "thread's unshare(CLONE_SYSVSEM) failed");
    expect_values("after the thread's undo", 1, 0, 4, 3);
    pthread_join(t, NULL);

    if (write(toChild[1], &c, 1) != 1) EXPECT(0, "child gone");
    int st = 0;
    waitpid(child, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
    semctl(A, 0, IPC_RMID);
    semctl(B, 0, IPC_RMID);
    return fixture_finish();
}
