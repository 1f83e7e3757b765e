/* dirtymem: dirties MIB mebibytes of anonymous memory with a pattern,
 * prints "ready PID" (its own pid, the home pid under mosix), then sleeps
 * until a signal: SIGUSR1 makes it check every word and print
 * "checked OK" (exit 0) or "FAIL word N" (exit 3). For the migration
 * benchmark: the process is idle while it moves, so the figures measure
 * the mechanism, and the check shows the memory arrived intact.
 * Usage: dirtymem MIB */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t check;

static void on_usr1(int sig) { (void)sig; check = 1; }

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: dirtymem MIB\n"); return 2; }
    size_t words = strtoull(argv[1], NULL, 10) * (1 << 20) / 8;
    uint64_t *m = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 2; }
    for (size_t i = 0; i < words; i++) m[i] = i * 0x9E3779B97F4A7C15ull;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0) { perror("sigaction"); return 2; }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    /* pause() also returns after the freeze signal of a migration. */
    while (!check) pause();
    for (size_t i = 0; i < words; i++)
        if (m[i] != i * 0x9E3779B97F4A7C15ull) { printf("FAIL word %zu\n", i); return 3; }
    printf("checked OK\n");
    return 0;
}
