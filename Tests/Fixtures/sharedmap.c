// MAP_SHARED anonymous memory shared by a parent and two children across fork: after restart
// it is still one object (each child's write is seen by the parent, the parent's by them),
// its content is intact, and a private area written before fork is still separate.
#include "fixture.h"
#include <sys/mman.h>
#include <sys/wait.h>

int main(void) {
    volatile int *sa = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    volatile int *pa = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sa[1000] = 7;
    pa[0] = 5;
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            fixture_catch_usr1();
            pa[0] = 50 + i;                     // private: the parent keeps 5
            fixture_wait();
            int ok = sa[1000] == 7 && sa[2000] == 9 && pa[0] == 50 + i;
            sa[i] = ok ? 100 + i : -1;
            _exit(ok ? 0 : 1);
        }
    }
    usleep(100000);
    fixture_ready();
    fixture_wait();
    sa[2000] = 9;                               // written after restart: the children see it
    for (int i = 0; i < 2; i++) kill(kids[i], SIGUSR1);
    for (int i = 0; i < 2; i++) {
        int st = 0;
        waitpid(kids[i], &st, 0);
        EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d status %x (it saw %d %d)", i, st, sa[1000], sa[2000]);
        EXPECT(sa[i] == 100 + i, "child %d's write is not seen by the parent: %d", i, sa[i]);
    }
    EXPECT(pa[0] == 5, "private area changed: %d", pa[0]);
    return fixture_finish();
}
