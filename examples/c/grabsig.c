/* grabsig: tries to take signal 63 (the default freeze signal) and
 * signal 10, and prints what happened. Under mosix, the freeze signal is
 * refused with EINVAL and SIGUSR1 is not affected. */
#include <signal.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>
static void h(int s) { (void)s; }
int main(void) {
    struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = h;
    int r = sigaction(63, &sa, NULL);
    printf("sigaction(63) = %d %s\n", r, r ? strerror(errno) : "");
    printf("signal(63) = %s\n", signal(63, h) == SIG_ERR ? "SIG_ERR" : "ok");
    printf("sigaction(10) = %d\n", sigaction(10, &sa, NULL));
    return 0;
}
