/* A CPU-bound program for migration tests: STEPS steps of pure
 * computation, one deterministic progress line per step on stdout
 * (flushed, so a file shows each line as soon as it is computed), then
 * exit with EXIT-CODE. Usage: progress STEPS WORK-PER-STEP EXIT-CODE */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: progress STEPS WORK-PER-STEP EXIT-CODE\n");
        return 2;
    }
    long steps = atol(argv[1]);
    long work = atol(argv[2]);
    int code = atoi(argv[3]);
    uint64_t h = 1469598103934665603ULL;
    for (long s = 0; s < steps; s++) {
        for (long i = 0; i < work; i++) {
            h ^= (uint64_t)i + (uint64_t)s;
            h *= 1099511628211ULL;
        }
        printf("step %ld %016llx\n", s, (unsigned long long)h);
        fflush(stdout);
    }
    return code;
}
