/* A file-heavy program for tests of the view across migration. Usage:
 * viewio DIR. With DIR/input present:
 *   1. opens DIR/input (read), DIR/copy (write, new, 0600) and DIR/out.log
 *      (append), copies the first half of input to copy in 4 KiB reads,
 *      one "pre N" line per read appended to out.log, and creates
 *      DIR/ready;
 *   2. waits (polling stat every 20 ms, up to 10 minutes) for DIR/go, which
 *      the test creates once the process has migrated (an error other
 *      than ENOENT ends the wait and the program);
 *   3. copies the rest of input through the same fds ("post N" lines),
 *      then makes, renames and deletes files and directories: mkdir sub
 *      (0750), sub/a (0604, "hello\n") renamed to sub/b, tmpf created and
 *      unlinked, gone/ made and removed, sub renamed to sub2, and writes
 *      DIR/done ("copied BYTES\n") last.
 * With a directory DIR/list, it also lists it with getdents64 and a small
 * buffer: one batch before the wait, the rest after, every name (one a
 * line, in the order read) into DIR/names.
 * Any failure prints what failed on stderr and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char path[4096];
static const char *dir;

static const char *at(const char *name) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void die(const char *what) {
    fprintf(stderr, "viewio: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void put(int fd, const char *s) {
    size_t n = strlen(s);
    if (write(fd, s, n) != (ssize_t)n) die("write");
}

static void write_file(const char *name, int mode, const char *s) {
    int fd = open(at(name), O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) die(name);
    put(fd, s);
    if (close(fd) != 0) die("close");
}

/* Copy up to `limit` bytes from `in` to `out` in 4 KiB reads, one log line
 * each; returns the bytes copied. */
static long copy(int in, int out, int log, long limit, const char *tag) {
    static char buf[4096];
    long done = 0;
    int n_reads = 0;
    while (done < limit) {
        size_t want = sizeof buf;
        if ((long)want > limit - done) want = (size_t)(limit - done);
        ssize_t n = read(in, buf, want);
        if (n < 0) die("read input");
        if (n == 0) break;
        if (write(out, buf, (size_t)n) != n) die("write copy");
        done += n;
        char line[64];
        snprintf(line, sizeof line, "%s %d %ld\n", tag, n_reads++, done);
        put(log, line);
    }
    return done;
}

/* One getdents64 batch of `fd` (at most `len` bytes) appended to `names`;
 * the number of entries. */
static int list_batch(int fd, int names, size_t len) {
    static char buf[4096];
    long n = syscall(SYS_getdents64, fd, buf, len);
    if (n < 0) die("getdents64 list");
    int count = 0;
    for (long at = 0; at < n;) {
        unsigned short reclen = *(unsigned short *)(buf + at + 16);
        put(names, buf + at + 19);
        put(names, "\n");
        at += reclen;
        count++;
    }
    return count;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: viewio DIR\n");
        return 2;
    }
    dir = argv[1];
    struct stat st;
    if (stat(at("input"), &st) != 0) die("stat input");
    int in = open(at("input"), O_RDONLY);
    if (in < 0) die("open input");
    int out = open(at("copy"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (out < 0) die("open copy");
    int log = open(at("out.log"), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log < 0) die("open out.log");
    long first = copy(in, out, log, st.st_size / 2, "pre");
    int list = open(at("list"), O_RDONLY | O_DIRECTORY);
    int names = -1;
    if (list >= 0) {
        names = open(at("names"), O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (names < 0) die("open names");
        list_batch(list, names, 256);
    }
    write_file("ready", 0644, "ready\n");
    struct timespec tick = {0, 20 * 1000 * 1000};
    for (int i = 0;; i++) {
        if (stat(at("go"), &st) == 0) break;
        if (errno != ENOENT) die("stat go");
        if (i > 30000) {
            fprintf(stderr, "viewio: no %s after 10 minutes\n", path);
            return 1;
        }
        nanosleep(&tick, NULL);
    }
    long rest = copy(in, out, log, 1L << 40, "post");
    if (list >= 0) {
        while (list_batch(list, names, 256) > 0) {
        }
        if (close(names) != 0) die("close names");
    }
    if (close(out) != 0) die("close copy");
    if (mkdir(at("sub"), 0750) != 0) die("mkdir sub");
    write_file("sub/a", 0604, "hello\n");
    char from[4096];
    snprintf(from, sizeof from, "%s/sub/a", dir);
    if (rename(from, at("sub/b")) != 0) die("rename sub/a");
    write_file("tmpf", 0600, "short-lived\n");
    if (unlink(at("tmpf")) != 0) die("unlink tmpf");
    if (mkdir(at("gone"), 0700) != 0) die("mkdir gone");
    if (rmdir(at("gone")) != 0) die("rmdir gone");
    snprintf(from, sizeof from, "%s/sub", dir);
    if (rename(from, at("sub2")) != 0) die("rename sub");
    put(log, "end\n");
    char done[64];
    snprintf(done, sizeof done, "copied %ld\n", first + rest);
    write_file("done", 0644, done);
    return 0;
}
