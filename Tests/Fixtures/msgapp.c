// The seed's example (D2.2.11 section 2): an application of two processes sharing one SysV
// message queue and writing a log file. The parent sends numbered messages, the child
// receives them and appends "got N" to log.txt. Usage: msgapp KEY COUNT.
#include "fixture.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/wait.h>
#include <time.h>

struct msg { long type; int n; };

int main(int argc, char **argv) {
    key_t key = (key_t)strtol(argv[1], NULL, 0);
    int count = atoi(argv[2]);
    int q = msgget(key, IPC_CREAT | 0600);
    if (q < 0) { perror("msgget"); return 1; }
    pid_t child = fork();
    if (child == 0) {
        for (int got = 0; got < count;) {
            struct msg m;
            if (msgrcv(q, &m, sizeof m.n, 0, 0) < 0) { if (errno == EINTR) continue; perror("msgrcv"); _exit(1); }
            FILE *f = fopen("log.txt", "a");
            fprintf(f, "got %d\n", m.n);
            fclose(f);
            got++;
        }
        _exit(0);
    }
    printf("READY %d queue %d\n", getpid(), q);
    fflush(stdout);
    for (int i = 1; i <= count; i++) {
        struct msg m = { 1, i };
        while (msgsnd(q, &m, sizeof m.n, 0) < 0 && errno == EINTR) {}
        struct timespec t = { 0, 20 * 1000 * 1000 };
        nanosleep(&t, NULL);
    }
    int st;
    waitpid(child, &st, 0);
    printf("DONE\n");
    return 0;
}
