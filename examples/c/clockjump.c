/* Reads CLOCK_MONOTONIC and CLOCK_BOOTTIME every 2 ms until SIGUSR1, then
 * prints, for each, the largest step between two reads and the smallest
 * (a negative one is the clock going back), in milliseconds. Prints
 * "ready" first and "tick N" each second of monotonic time, so a test
 * sees it at work. Under mosix a body keeps its home's clocks: moved
 * between machines booted at different times, neither clock jumps. */
#include <signal.h>
#include <stdio.h>
#include <time.h>

static volatile sig_atomic_t done;

static void on_usr1(int sig) { (void)sig; done = 1; }

static long long now_ns(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

struct steps {
    long long last, max, min;
};

static void step(struct steps *s, long long now) {
    long long d = now - s->last;
    if (d > s->max) s->max = d;
    if (d < s->min) s->min = d;
    s->last = now;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR1, on_usr1);
    struct steps mono = {now_ns(CLOCK_MONOTONIC), 0, 0};
    struct steps boot = {now_ns(CLOCK_BOOTTIME), 0, 0};
    long long start = mono.last;
    long ticks = 0;
    printf("ready\n");
    struct timespec pause = {0, 2000000};
    while (!done) {
        nanosleep(&pause, NULL);
        step(&mono, now_ns(CLOCK_MONOTONIC));
        step(&boot, now_ns(CLOCK_BOOTTIME));
        if (mono.last - start >= (ticks + 1) * 1000000000LL) {
            ticks++;
            printf("tick %ld\n", ticks);
        }
    }
    printf("monotonic max_step_ms %lld min_step_ms %lld\n", mono.max / 1000000, mono.min / 1000000);
    printf("boottime max_step_ms %lld min_step_ms %lld\n", boot.max / 1000000, boot.min / 1000000);
    return 0;
}
