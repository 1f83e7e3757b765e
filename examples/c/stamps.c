/* stamps: prints "pid PID" (its own pid, the home pid under mosix), then
 * every INTERVAL-MS milliseconds a line holding the CLOCK_REALTIME time
 * of the write in nanoseconds, with one write(2) per line, until killed.
 * The reader, on the same machine, subtracts it from its own clock on
 * receipt: the one-way latency of a small write to stdout (for the
 * migration benchmark's relayed-output figure).
 * Usage: stamps INTERVAL-MS */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int put(const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(1, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: stamps INTERVAL-MS\n"); return 2; }
    long ms = atol(argv[1]);
    if (ms <= 0) { fprintf(stderr, "stamps: INTERVAL-MS must be positive\n"); return 2; }
    char line[64];
    int n = snprintf(line, sizeof line, "pid %d\n", (int)getpid());
    if (put(line, (size_t)n) != 0) return 1;
    for (;;) {
        struct timespec gap = {ms / 1000, (ms % 1000) * 1000000L};
        /* A migration's freeze signal may cut the sleep short: fine, the
         * next line is only sooner. */
        nanosleep(&gap, NULL);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        n = snprintf(line, sizeof line, "%lld\n", (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
        if (put(line, (size_t)n) != 0) return 1;
    }
}
