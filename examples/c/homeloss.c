/* A program for the test of a home restarting under a migrated body.
 * Usage: homeloss DIR MARK.
 *   1. opens DIR/input (read), reads its first 4 KiB, and creates
 *      DIR/ready;
 *   2. every 50 ms opens DIR/input again and reads 4 KiB from it (each
 *      open asks the home), until that fails with EIO (the home is away):
 *      then writes "eio\n" to the file MARK (a path on the node the body
 *      runs on, not through the view) and says so on stderr ("homeloss:
 *      EIO after N ms of waiting"); any other failure ends the program;
 *   3. every 200 ms tries to open DIR/again, until it succeeds (the home
 *      is back; up to 10 minutes), and reads it: it must hold "again\n";
 *   4. reads the fd opened in step 1 once more, 4 KiB at 6 MiB (never
 *      read before, so not cached here), and reports on stderr what it
 *      got and whether it is the input's bytes there ("old fd: ..."), says "homeloss: reopened" on stderr and
 *      exits with status 7.
 * Each wait of steps 2 and 3 also writes a numbered line on stderr
 * ("tick N", from 0), and step 4 the count ("homeloss: ticks N"), so a
 * test can see that no output was lost or repeated.
 * Any failure prints what failed on stderr and exits 1. Only stderr is
 * written (a pipe relayed home by the deputy): stdout may be a home file
 * opened before the home went away. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char path[4096];
static const char *dir;

static const char *at(const char *name) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void die(const char *what) {
    fprintf(stderr, "homeloss: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void nap(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static long ticks;

static void tick(void) {
    fprintf(stderr, "tick %ld\n", ticks++);
}

int main(int argc, char **argv) {
    static char buf[4096];
    setvbuf(stderr, NULL, _IONBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: homeloss DIR MARK\n");
        return 2;
    }
    dir = argv[1];
    int in = open(at("input"), O_RDONLY);
    if (in < 0) die("open input");
    if (read(in, buf, sizeof buf) < 0) die("read input");
    int r = open(at("ready"), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (r < 0 || close(r) != 0) die("create ready");

    long start = now_ms();
    for (;;) {
        int f = open(at("input"), O_RDONLY);
        if (f < 0 && errno == EIO) break;
        if (f < 0) die("open input again");
        if (read(f, buf, sizeof buf) < 0) {
            if (errno == EIO) {
                close(f);
                break;
            }
            die("read input again");
        }
        close(f);
        tick();
        nap(50);
    }
    int m = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (m < 0 || write(m, "eio\n", 4) != 4 || close(m) != 0) die("write the mark");
    fprintf(stderr, "homeloss: EIO after %ld ms of waiting\n", now_ms() - start);

    int again = -1;
    for (int i = 0; i < 3000; i++) {
        again = open(at("again"), O_RDONLY);
        if (again >= 0) break;
        if (errno != EIO && errno != ENOENT) die("open again");
        tick();
        nap(200);
    }
    if (again < 0) die("open again (gave up after 10 minutes)");
    ssize_t n = read(again, buf, sizeof buf);
    if (n < 0) die("read again");
    if (n != 6 || memcmp(buf, "again\n", 6) != 0) {
        fprintf(stderr, "homeloss: again holds %zd other bytes\n", n);
        return 1;
    }
    close(again);
    static char want[4096];
    ssize_t o = pread(in, buf, sizeof buf, 6L << 20);
    int f = open(at("input"), O_RDONLY);
    if (f < 0 || pread(f, want, sizeof want, 6L << 20) != (ssize_t)sizeof want) die("read input anew");
    close(f);
    if (o < 0)
        fprintf(stderr, "homeloss: old fd: %s\n", strerror(errno));
    else
        fprintf(stderr, "homeloss: old fd: read %zd bytes, %s\n", o,
                o == (ssize_t)sizeof want && memcmp(buf, want, sizeof want) == 0 ? "the same" : "other bytes");
    fprintf(stderr, "homeloss: ticks %ld\n", ticks);
    fprintf(stderr, "homeloss: reopened\n");
    return 7;
}
