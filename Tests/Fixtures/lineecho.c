// lineecho PORT [ACCEPTS_FILE]: a TCP server on every address that sends each line back,
// for any number of clients at once (poll(2)); it writes the number of connections it has
// accepted so far to ACCEPTS_FILE after each accept, so that a test can check that a client
// kept one connection through a migration of the server. Used by the cluster-address tests
// and ssi-bench cluster-ip.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC 256

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: lineecho PORT [ACCEPTS_FILE]\n"); return 2; }
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 128)) { perror("lineecho: bind/listen"); return 1; }
    struct pollfd p[MAXC + 1];
    int n = 1, accepts = 0;
    p[0] = (struct pollfd){ .fd = ls, .events = POLLIN };
    char buf[65536];
    for (;;) {
        if (poll(p, n, -1) < 0) { if (errno == EINTR) continue; perror("poll"); return 1; }
        if ((p[0].revents & POLLIN) && n <= MAXC) {
            int c = accept(ls, NULL, NULL);
            if (c >= 0) {
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                p[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
                accepts++;
                if (argc > 2) { FILE *f = fopen(argv[2], "w"); if (f) { fprintf(f, "%d\n", accepts); fclose(f); } }
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(p[i].fd, buf, sizeof buf);
            ssize_t off = 0;
            while (r > 0 && off < r) { ssize_t w = write(p[i].fd, buf + off, r - off); if (w <= 0) break; off += w; }
            if (r <= 0) { close(p[i].fd); p[i] = p[--n]; i--; }
        }
    }
}
