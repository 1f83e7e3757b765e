/* Times COUNT getppid() calls, one by one, once SIGUSR1 arrives (so a
 * benchmark can move it first): prints "ppid P" and then one line per
 * call with its round trip in nanoseconds. Under mosix, in a body away
 * from home, each getppid is a call forwarded to the deputy at home. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;

static void on_usr1(int sig) { (void)sig; go = 1; }

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 2000;
    if (count <= 0) {
        fprintf(stderr, "usage: ppidloop COUNT\n");
        return 2;
    }
    long long *ns = malloc(sizeof *ns * (size_t)count);
    if (!ns) return 1;
    signal(SIGUSR1, on_usr1);
    printf("ready %d\n", getpid());
    fflush(stdout);
    while (!go) pause();
    pid_t ppid = 0;
    for (int i = 0; i < count; i++) {
        long long a = now_ns();
        ppid = getppid();
        ns[i] = now_ns() - a;
    }
    printf("ppid %d\n", ppid);
    for (int i = 0; i < count; i++) printf("%lld\n", ns[i]);
    return 0;
}
