/* storm DIR DEPTH: every way to reach mkdir at once — THREADS threads, and while DEPTH > 0,
 * FORKS forked children and one vfork child, each exec'ing this program with DEPTH - 1 (so
 * 1 + 5 + 25 + ... processes), and the i386
 * ABI (int 0x80) — all trying mkdir/mkdirat on names under DIR, many times. Prints how many
 * calls succeeded (a policy denying mkdir must make it 0, and DIR must stay empty). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8
#define FORKS 4
#define TRIES 20

static const char *dir;
static int depth;
static int made;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static long int80_mkdir(const char *path) {
    long ret;
    /* i386 mkdir is 39; the path must be addressable with 32 bits: use a static buffer */
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(39L), "b"(path), "c"(0755L) : "memory");
    return ret;
}

static char low_path[4096] __attribute__((aligned(16)));

static void attempt(const char *who, int i) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%d-%d-%d", dir, who, getpid(), (int)gettid(), i);
    int ok = 0;
    if (i % 3 == 0) ok = mkdir(path, 0755) == 0;
    else if (i % 3 == 1) ok = mkdirat(AT_FDCWD, path, 0755) == 0;
    else ok = syscall(SYS_mkdir, path, 0755) == 0;
    pthread_mutex_lock(&lock);
    made += ok;
    pthread_mutex_unlock(&lock);
}

static void *thread_main(void *arg) {
    for (int i = 0; i < TRIES; i++) attempt("thread", i);
    return arg;
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    dir = argv[1];
    depth = atoi(argv[2]);
    pthread_t t[THREADS];
    pid_t kids[FORKS + 1];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, thread_main, NULL);
    int forks = depth > 0 ? FORKS : 0;
    for (int k = 0; k < forks; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (int i = 0; i < TRIES; i++) attempt("fork", i);
            char d[16];
            snprintf(d, sizeof d, "%d", depth - 1);
            execl("/proc/self/exe", argv[0], dir, d, (char *)NULL);
            _exit(made);
        }
    }
    pid_t vkid = -1;
    if (depth > 0) {
        char d[16];
        snprintf(d, sizeof d, "%d", depth - 1);
        vkid = vfork();
        if (vkid == 0) {
            execl("/proc/self/exe", argv[0], dir, d, (char *)NULL);
            _exit(127);
        }
    }
    snprintf(low_path, sizeof low_path, "%s/int80-%d", dir, getpid());
    if ((unsigned long)low_path < 0x100000000UL && int80_mkdir(low_path) == 0) made++;
    for (int i = 0; i < TRIES; i++) attempt("main", i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    int total = made;
    kids[forks] = vkid;
    for (int k = 0; k <= forks; k++) {
        int st;
        if (kids[k] > 0 && waitpid(kids[k], &st, 0) > 0 && WIFEXITED(st))
            total += WEXITSTATUS(st);   /* a child's status: 1 if it made any */
    }
    printf("made %d\n", total);
    return total ? 1 : 0;   /* processes: 1 + 5 + 25 for DEPTH 2 */
}
