/* bigmem: keeps MIB mebibytes of anonymous memory dirty and self-checking,
 * for the engine's large-image test and the checkpoint benchmark.
 *
 * Usage: bigmem MIB PASSES
 * Fills the memory with a pattern, then makes PASSES passes that each
 * rewrite every page from the previous contents and check them; prints a
 * line per pass and a final checksum. Exits 3 on any mismatch.
 * With PASSES 0 it prints "ready" after filling, blocks reading one byte
 * from stdin, checks the memory and prints "resumed OK" (for the
 * checkpoint benchmark's restart time). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: bigmem MIB PASSES\n"); return 2; }
    size_t mib = strtoull(argv[1], NULL, 10);
    long passes = atol(argv[2]);
    size_t words = mib * (1 << 20) / 8;
    uint64_t *m = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 2; }
    for (size_t i = 0; i < words; i++) m[i] = i * 0x9E3779B97F4A7C15ull;
    uint64_t sum = 0;
    if (passes == 0) {
        char c;
        printf("ready\n");
        fflush(stdout);
        if (read(0, &c, 1) != 1) return 4;
        for (size_t i = 0; i < words; i++)
            if (m[i] != i * 0x9E3779B97F4A7C15ull) { printf("FAIL word %zu\n", i); return 3; }
        printf("resumed OK\n");
        return 0;
    }
    for (long p = 1; p <= passes; p++) {
        for (size_t i = 0; i < words; i++) {
            uint64_t want = (i * 0x9E3779B97F4A7C15ull) + (uint64_t)(p - 1) * (i | 1);
            if (m[i] != want) { printf("FAIL pass %ld word %zu\n", p, i); fflush(stdout); return 3; }
            m[i] = want + (i | 1);
        }
        printf("pass %ld\n", p);
        fflush(stdout);
    }
    for (size_t i = 0; i < words; i++) sum = (sum ^ m[i]) * 0x100000001b3ull;
    printf("OK %zu MiB sum=%016llx\n", mib, (unsigned long long)sum);
    return 0;
}
