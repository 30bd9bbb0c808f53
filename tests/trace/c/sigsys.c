/* sigsys MODE NR [ARG0]: make syscall NR with a raw `syscall` instruction, after arranging
 * SIGSYS per MODE: handler (SA_SIGINFO handler printing what seccomp put in the siginfo),
 * block (handler installed, SIGSYS blocked), ignore (SIG_IGN), default (SIG_DFL).
 * Prints the syscall's result and "alive" if it survives. Output is unbuffered (write(2)). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

extern char after_syscall[];

static long raw_syscall(long nr, long a0) {
    long ret;
    __asm__ volatile("syscall\n.globl after_syscall\nafter_syscall:"
                     : "=a"(ret) : "a"(nr), "D"(a0) : "rcx", "r11", "memory");
    return ret;
}

static void say(const char *text) { write(1, text, strlen(text)); }

static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = ctx;
    char buf[256];
    snprintf(buf, sizeof buf,
             "SIGSYS signo=%d code=%d errno=%d syscall=%d arch=%#x call_addr=%s rax=%lld\n",
             si->si_signo, si->si_code, si->si_errno, si->si_syscall, si->si_arch,
             si->si_call_addr == (void *)after_syscall ? "after_syscall" : "elsewhere",
             (long long)uc->uc_mcontext.gregs[REG_RAX]);
    say(buf);
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    const char *mode = argv[1];
    long nr = strtol(argv[2], NULL, 0);
    long a0 = argc > 3 ? strtol(argv[3], NULL, 0) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (!strcmp(mode, "handler") || !strcmp(mode, "block")) {
        sa.sa_sigaction = on_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSYS, &sa, NULL);
    } else if (!strcmp(mode, "ignore")) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGSYS, &sa, NULL);
    }
    if (!strcmp(mode, "block")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGSYS);
        sigprocmask(SIG_BLOCK, &set, NULL);
    }
    long r = raw_syscall(nr, a0);
    char buf[64];
    snprintf(buf, sizeof buf, "ret=%ld\n", r);
    say(buf);
    say("alive\n");
    return 0;
}
