// Children blocked in calls that Linux ends with EINTR after a stop even with no handler
// (signal(7): "interfaces ... fail with EINTR after the process is stopped by a stop signal
// and resumed"), and two that restart (controls). After restart each must still be blocked
// and return success once woken. Exit code: 0 success, 10+errno.
//  semop  recvto (recv, SO_RCVTIMEO 60 s)  acceptto (accept, SO_RCVTIMEO 60 s)
//  epoll (epoll_wait -1)  sigwait (sigtimedwait 60 s)  msgrcv  recv (no timeout, control)
#include "fixture.h"
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#define N 7
static const char *names[N] = { "semop", "recvto", "acceptto", "epoll", "sigwait", "msgrcv", "recv" };
int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int S = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600), Q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    int sp[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    int sp2[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, sp2);
    struct sockaddr_un la = { .sun_family = AF_UNIX }; snprintf(la.sun_path + 1, 60, "p7-eintr-%d", getpid());
    socklen_t ll = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(la.sun_path + 1);
    int L = socket(AF_UNIX, SOCK_STREAM, 0); bind(L, (void*)&la, ll); listen(L, 4);
    int ev = eventfd(0, 0);
    struct timeval tv = { 60, 0 };
    sigset_t ss; sigemptyset(&ss); sigaddset(&ss, SIGUSR2); sigprocmask(SIG_BLOCK, &ss, NULL);
    pid_t c[N];
    for (int i = 0; i < N; i++) {
        c[i] = fork();
        if (c[i]) continue;
        int r = -1; char b[8];
        switch (i) {
        case 0: { struct sembuf p = { 0, -1, 0 }; r = semop(S, &p, 1); break; }
        case 1: setsockopt(sp[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); r = recv(sp[1], b, 1, 0) == 1 ? 0 : -1; break;
        case 2: setsockopt(L, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); r = accept(L, NULL, NULL) >= 0 ? 0 : -1; break;
        case 3: { int e = epoll_create1(0); struct epoll_event x = { .events = EPOLLIN }; epoll_ctl(e, EPOLL_CTL_ADD, ev, &x); r = epoll_wait(e, &x, 1, -1) == 1 ? 0 : -1; break; }
        case 4: { struct timespec t = { 60, 0 }; r = sigtimedwait(&ss, NULL, &t) == SIGUSR2 ? 0 : -1; break; }
        case 5: { struct { long t; char m[8]; } m; r = msgrcv(Q, &m, 8, 0, 0) >= 0 ? 0 : -1; break; }
        case 6: r = recv(sp2[1], b, 1, 0) == 1 ? 0 : -1; break;
        }
        _exit(r == 0 ? 0 : 10 + errno);
    }
    usleep(300000);
    fixture_ready(); fixture_wait();
    usleep(300000);
    for (int i = 0; i < N; i++) { int st; pid_t r = waitpid(c[i], &st, WNOHANG); EXPECT(r == 0, "%s: child no longer waiting (exit %d = 10+errno)", names[i], r > 0 ? WEXITSTATUS(st) : -1); }
    struct sembuf v = { 0, 1, 0 }; semop(S, &v, 1);
    send(sp[0], "x", 1, 0); send(sp2[0], "y", 1, 0);
    int cc = socket(AF_UNIX, SOCK_STREAM, 0); connect(cc, (void*)&la, ll);
    uint64_t one = 1; write(ev, &one, 8);
    kill(c[4], SIGUSR2);
    struct { long t; char m[8]; } m = { 1, "m" }; msgsnd(Q, &m, 2, 0);
    for (int i = 0; i < N; i++) { int st; waitpid(c[i], &st, 0); EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit %d (10+errno)", names[i], WEXITSTATUS(st)); }
    semctl(S, 0, IPC_RMID); msgctl(Q, IPC_RMID, NULL);
    return fixture_finish();
}
