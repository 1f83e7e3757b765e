/* dlspin: freezes a program inside dlopen(), where ld.so holds its
 * recursive load lock (owned by the thread id), for the engine test.
 * Usage: dlspin LIB GO-FILE
 * LIB is spinlib.c built as a shared object: its constructor prints
 * "in the constructor" and waits (busy, so a freeze lands there) until
 * GO-FILE exists. Then the program loads libm and looks up a user, which
 * take the same lock again: after a restore that did not carry the lock's
 * owner over to the new thread id, they would wait forever. */
#include <dlfcn.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dlspin LIB GO-FILE\n");
        return 2;
    }
    if (setenv("DLSPIN_GO", argv[2], 1) != 0) return 2;
    printf("start\n");
    fflush(stdout);
    if (!dlopen(argv[1], RTLD_NOW)) { printf("dlopen: %s\n", dlerror()); return 3; }
    printf("loaded\n");
    void *m = dlopen("libm.so.6", RTLD_NOW);
    double (*cosine)(double) = m ? (double (*)(double))dlsym(m, "cos") : NULL;
    if (!cosine) { printf("libm: %s\n", dlerror()); return 4; }
    printf("cos(0) = %.1f\n", cosine(0.0));
    struct passwd *pw = getpwuid(0);
    printf("uid 0 is %s\n", pw ? pw->pw_name : "unknown");
    return 0;
}
