/* syscalls: a system-call-heavy loop for the libmosix overhead bench.
 * Each of N rounds: getpid, getppid, stat, open + read + close of a small
 * file, a 1-byte write to /dev/null, sigprocmask, clock_gettime and an
 * isatty. Prints a checksum of what it saw, so the work is not optimised
 * away. Usage: syscalls N FILE */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: syscalls N FILE\n");
        return 2;
    }
    long n = atol(argv[1]);
    int null = open("/dev/null", O_WRONLY);
    if (null < 0) { perror("/dev/null"); return 2; }
    unsigned long sum = 0;
    char buf[64];
    sigset_t set;
    sigemptyset(&set);
    for (long i = 0; i < n; i++) {
        struct stat st;
        struct timespec ts;
        sum += (unsigned long)getpid() + (unsigned long)getppid();
        if (stat(argv[2], &st) == 0) sum += (unsigned long)st.st_size;
        int fd = open(argv[2], O_RDONLY);
        if (fd >= 0) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r > 0) sum += (unsigned long)r;
            close(fd);
        }
        if (write(null, "x", 1) == 1) sum++;
        sigprocmask(SIG_BLOCK, &set, NULL);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sum += (unsigned long)isatty(null);
    }
    printf("%lu\n", sum % 1000003);
    return 0;
}
