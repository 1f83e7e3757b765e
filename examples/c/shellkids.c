/* glibc's system, popen and pclose, each shell checking that its parent
 * is this program ($PPID = our getpid): under mosix, in a body away from
 * home, that holds only if the shell is a managed child with its own
 * deputy, not a process glibc started behind the hooks. The output has
 * no pids, so it can be compared with a run without mosix. The system
 * shell writes its pid to "sys.pid" and waits for a file "release" in the
 * current directory, so a test can look at it while it lives. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, int status) {
    if (status == -1)
        printf("%s failed: %s\n", what, strerror(errno));
    else if (WIFEXITED(status))
        printf("%s exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("%s killed by signal %d\n", what, WTERMSIG(status));
    else
        printf("%s status %#x\n", what, status);
}

int main(void) {
    char cmd[512];
    int me = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("a shell exists: %s\n", system(NULL) ? "yes" : "no");

    snprintf(cmd, sizeof cmd,
             "test $PPID = %d && echo system: parent ok; echo $$ > sys.pid; "
             "while ! [ -e release ]; do sleep 0.1; done; exit 3", me);
    report("system", system(cmd));
    report("system kill", system("kill -TERM $$"));

    snprintf(cmd, sizeof cmd, "test $PPID = %d && echo popen r: parent ok; seq 1 3; exit 4", me);
    FILE *r = popen(cmd, "r");
    if (!r) {
        perror("popen r");
        return 1;
    }
    char line[256];
    while (fgets(line, sizeof line, r))
        printf("read: %s", line);
    report("pclose r", pclose(r));

    snprintf(cmd, sizeof cmd, "test $PPID = %d && echo popen w: parent ok >&2; tr a-z A-Z > written; exit 5", me);
    FILE *w = popen(cmd, "w");
    if (!w) {
        perror("popen w");
        return 1;
    }
    fputs("through the pipe\n", w);
    report("pclose w", pclose(w));
    FILE *f = fopen("written", "r");
    if (f && fgets(line, sizeof line, f))
        printf("written: %s", line);
    if (f)
        fclose(f);

    errno = 0;
    FILE *bad = popen("true", "rw");
    printf("popen rw: %s\n", bad ? "opened" : strerror(errno));
    return 9;
}
