/* spinlib: a shared object whose constructor waits, busy, until the file
 * named by $DLSPIN_GO exists (see dlspin.c). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void wait_for_go(void) {
    const char *go = getenv("DLSPIN_GO");
    printf("in the constructor\n");
    fflush(stdout);
    volatile unsigned long spin = 0;
    while (go && access(go, F_OK) != 0) {
        for (int i = 0; i < 1000000; i++) spin++;
    }
}
