/* threads WHO NR: two threads; WHO (worker|main) makes syscall NR (a KILL_THREAD verdict ends
 * only that thread). The other reports whether it outlived it; exit status 3 when the worker
 * ends the process after the main thread was killed, 0 when main joins the killed worker. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long nr;
static void say(const char *text) { write(1, text, strlen(text)); }

static void *worker_calls(void *arg) {
    (void)arg;
    say("worker calling\n");
    syscall(nr);
    say("worker survived\n");
    return NULL;
}

static void *worker_outlives(void *arg) {
    (void)arg;
    usleep(200000);
    say("worker alive after main\n");
    exit(3);
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    nr = strtol(argv[2], NULL, 0);
    pthread_t t;
    if (!strcmp(argv[1], "worker")) {
        pthread_create(&t, NULL, worker_calls, NULL);
        pthread_join(t, NULL);
        say("main joined\n");
        return 0;
    }
    pthread_create(&t, NULL, worker_outlives, NULL);
    say("main calling\n");
    syscall(nr);
    say("main survived\n");
    pthread_join(t, NULL);
    return 0;
}
