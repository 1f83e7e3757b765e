/* selfcheck: a program that keeps self-checking state in every kind of
 * memory the engine must restore, for tests/engine.rs.
 *
 * Usage: selfcheck ROUNDS FILE
 *   globals, brk heap (small malloc), mmap'd heap (large malloc), stack
 *   array, a private file mapping of FILE that it writes to, SSE and AVX
 *   registers live across the work loop, a SIGALRM handler on a
 *   sigaltstack driven by an interval timer (ITIMER_REAL).
 * Each round updates all of them deterministically and checks them; on any
 * mismatch it prints what broke and exits 3. The final line and exit
 * status depend only on ROUNDS, so a run that was checkpointed and
 * restarted any number of times must print exactly what an undisturbed
 * run prints. */
#include <immintrin.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <fcntl.h>
#include <unistd.h>

#define SMALL 4096
#define BIG (8 << 20)

static uint64_t g_state[1024];
static uint64_t g_counter = 7;
static volatile sig_atomic_t alarms;
static uint8_t *altstack;

static void fail(const char *what, long round) {
    printf("FAIL %s at round %ld\n", what, round);
    fflush(stdout);
    exit(3);
}

static void on_alarm(int sig) {
    (void)sig;
    /* Check we really run on the alternate stack. */
    volatile char here;
    if ((uint8_t *)&here < altstack || (uint8_t *)&here >= altstack + SIGSTKSZ * 4)
        fail("sigaltstack", -1);
    alarms++;
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 31; x *= 0x9E3779B97F4A7C15ull; x ^= x >> 29;
    return x;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: selfcheck ROUNDS FILE\n"); return 2; }
    long rounds = atol(argv[1]);
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) { perror("open"); return 2; }
    uint8_t *fmap = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (fmap == MAP_FAILED) { perror("mmap"); return 2; }
    uint8_t orig0 = fmap[0];
    uint64_t *small = malloc(SMALL);       /* brk heap */
    uint64_t *big = malloc(BIG);           /* mmap'd chunk */
    uint64_t stackarr[512];
    memset(small, 0, SMALL); memset(big, 0, BIG); memset(stackarr, 0, sizeof stackarr);

    stack_t ss = { .ss_sp = altstack = malloc(SIGSTKSZ * 4), .ss_size = SIGSTKSZ * 4, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 20000 }, { 0, 20000 } };
    setitimer(ITIMER_REAL, &it, NULL);

    __m128d sse = _mm_set_pd(1.0, 2.0);
    __m256d avx = _mm256_set_pd(1.0, 2.0, 3.0, 4.0);
    uint64_t expect = 7;
    for (long r = 0; r < rounds; r++) {
        uint64_t v = mix(g_counter + r);
        size_t gi = r % 1024, si = r % (SMALL / 8), bi = (r * 4099) % (BIG / 8), ki = r % 512, fi = (r * 61) % 65536;
        g_state[gi] ^= v; small[si] += v; big[bi] ^= v; stackarr[ki] += v; fmap[fi] = (uint8_t)(fmap[fi] + 1);
        g_counter = mix(g_counter);
        expect = mix(expect);
        if (g_counter != expect) fail("globals", r);
        sse = _mm_add_pd(sse, _mm_set1_pd(1.0));
        avx = _mm256_add_pd(avx, _mm256_set1_pd(1.0));
        /* Burn some time so checkpoints land everywhere in the loop. */
        for (volatile int k = 0; k < 100000; k++) {}
    }
    setitimer(ITIMER_REAL, &(struct itimerval){ 0 }, NULL);
    /* Recompute everything from scratch and compare. */
    uint64_t g2[1024] = { 0 }, *s2 = calloc(SMALL, 1), *b2 = calloc(BIG, 1), k2[512] = { 0 };
    uint8_t *f2 = calloc(65536, 1);
    uint64_t c = 7;
    for (long r = 0; r < rounds; r++) {
        uint64_t v = mix(c + r);
        g2[r % 1024] ^= v; s2[r % (SMALL / 8)] += v; b2[(r * 4099) % (BIG / 8)] ^= v; k2[r % 512] += v;
        f2[(r * 61) % 65536]++;
        c = mix(c);
    }
    if (memcmp(g2, g_state, sizeof g2)) fail("globals array", rounds);
    if (memcmp(s2, small, SMALL)) fail("brk heap", rounds);
    if (memcmp(b2, big, BIG)) fail("mmap heap", rounds);
    if (memcmp(k2, stackarr, sizeof k2)) fail("stack", rounds);
    if ((uint8_t)(fmap[0] - orig0) != f2[0]) fail("private file mapping", rounds);
    double s[2], a[4];
    _mm_storeu_pd(s, sse); _mm256_storeu_pd(a, avx);
    if (s[0] != 2.0 + rounds || s[1] != 1.0 + rounds) fail("sse register", rounds);
    if (a[0] != 4.0 + rounds || a[3] != 1.0 + rounds) fail("avx register", rounds);
    if (rounds > 200 && alarms == 0) fail("itimer", rounds);
    uint64_t h = 0;
    for (int i = 0; i < 1024; i++) h = mix(h ^ g_state[i]);
    printf("OK rounds=%ld hash=%016llx\n", rounds, (unsigned long long)h);
    return 0;
}
