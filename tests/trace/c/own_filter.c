/* own_filter [lock]: install a seccomp filter of its own (getpid -> ERRNO(77), getuid ->
 * ERRNO(5)), then print getpid, getuid and getppid results (-errno on failure). Stacked under a
 * tracer's prefilter, the kernel combines both filters; the tracer's policy still decides the
 * rest. With "lock": first a SIGSYS handler, and the filter also fails rt_sigaction (EPERM), so
 * nothing can reset that handler any more. */
#include <linux/filter.h>
#include <signal.h>
#include <string.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static long raw(long nr) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
}

static void on_sigsys(int sig) { (void)sig; write(1, "handler\n", 8); }

int main(int argc, char **argv) {
    int lock = argc > 1 && !strcmp(argv[1], "lock");
    if (lock) signal(SIGSYS, on_sigsys);
    struct sock_filter insns[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 77),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getuid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 5),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigaction, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof insns / sizeof insns[0], insns};
    if (!lock) insns[5] = insns[7];   /* no rt_sigaction rule: jump over nothing */
    setvbuf(stdout, NULL, _IONBF, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp");
        return 1;
    }
    printf("installed\n");
    printf("getpid %ld\n", raw(SYS_getpid));
    printf("getuid %ld\n", raw(SYS_getuid));
    printf("getppid %ld\n", raw(SYS_getppid) > 0 ? 1L : raw(SYS_getppid));
    return 0;
}
