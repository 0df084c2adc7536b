// A SIGUSR1 handler installed with SA_ONSTACK and no alternate stack (as python3 installs
// its handlers): after restart it must run on the normal stack, not on an alternate stack
// inherited from the restorer.
#include "fixture.h"

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fixture_on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    printf("READY %d\n", getpid());
    fflush(stdout);
    fixture_wait();
    stack_t cur;
    EXPECT(sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_DISABLE), "an alternate stack appeared: sp %p size %zu flags %d", cur.ss_sp, cur.ss_size, cur.ss_flags);
    return fixture_finish();
}
