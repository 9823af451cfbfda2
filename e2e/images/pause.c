/*
 * pause: the sandbox process of every pod on the local cluster's nodes.
 *
 * It holds the pod's namespaces open and does nothing else: it sleeps until
 * SIGINT or SIGTERM (then exits 0) and reaps any zombie it inherits, as the
 * upstream pause container does. Built with `gcc -static` so that the image
 * needs no libc (see e2e/images/build.sh).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int signo) {
    (void)signo;
    _exit(0);
}

static void on_child(int signo) {
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        printf("roam pause 1.0\n");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not running as pid 1\n");
    }

    struct sigaction terminate = {.sa_handler = on_terminate};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGINT, &terminate, NULL) < 0 || sigaction(SIGTERM, &terminate, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
