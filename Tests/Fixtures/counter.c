// The demo application: counts forever, one line every 100 ms, on stdout.
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    for (unsigned long i = 0;; i++) {
        printf("%lu\n", i);
        fflush(stdout);
        nanosleep(&ts, NULL);
    }
}
