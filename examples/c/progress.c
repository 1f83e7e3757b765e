/* A CPU-bound program for migration tests: STEPS steps of pure
 * computation, one deterministic progress line per step on stdout
 * (flushed, so a file shows each line as soon as it is computed), then
 * exit with EXIT-CODE. Usage: progress STEPS WORK-PER-STEP EXIT-CODE
 *
 * SIGUSR1 goes to a handler that only counts: before the next step the
 * program prints "usr1 N" (N = signals so far), so the step lines stay
 * exactly those of an undisturbed run (the signal test). */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t got;

static void on_usr1(int s) {
    (void)s;
    got++;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: progress STEPS WORK-PER-STEP EXIT-CODE\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) != 0) {
        perror("sigaction");
        return 2;
    }
    long steps = atol(argv[1]);
    long work = atol(argv[2]);
    int code = atoi(argv[3]);
    sig_atomic_t seen = 0;
    uint64_t h = 1469598103934665603ULL;
    for (long s = 0; s < steps; s++) {
        if (got != seen) {
            seen = got;
            printf("usr1 %d\n", (int)seen);
        }
        for (long i = 0; i < work; i++) {
            h ^= (uint64_t)i + (uint64_t)s;
            h *= 1099511628211ULL;
        }
        printf("step %ld %016llx\n", s, (unsigned long long)h);
        fflush(stdout);
    }
    return code;
}
