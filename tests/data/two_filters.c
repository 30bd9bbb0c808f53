/* Test program for `sysdispatch filter dump`: installs two classic seccomp filters, the first
 * with prctl(PR_SET_SECCOMP), the second with seccomp(2), after writing each one's raw bytes to
 * DIR/0.bpf and DIR/1.bpf so a test can compare what it reads back with what was installed.
 *
 *   two_filters DIR wait        print "ready" and wait for a signal
 *   two_filters DIR exec PROG   exec PROG (filters survive exec)
 *   two_filters DIR exit        exit 0
 */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))
#define NR offsetof(struct seccomp_data, nr)
#define ARCH offsetof(struct seccomp_data, arch)
#define ARG0 offsetof(struct seccomp_data, args[0])

static struct sock_filter first[] = {
	LD(ARCH),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	LD(NR),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getpgid, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 5),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static struct sock_filter second[] = {
	LD(NR),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_personality, 0, 3),
	LD(ARG0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffff, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 22),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static void save(const char *dir, const char *name, const void *p, size_t n)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
		perror(path);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	save(argv[1], "0.bpf", first, sizeof first);
	save(argv[1], "1.bpf", second, sizeof second);
	struct sock_fprog a = { sizeof first / sizeof first[0], first };
	struct sock_fprog b = { sizeof second / sizeof second[0], second };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &a)
	    || syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &b)) {
		perror("installing filters");
		return 1;
	}
	if (!strcmp(argv[2], "wait")) {
		puts("ready");
		fflush(stdout);
		pause();
	} else if (!strcmp(argv[2], "exec") && argc > 3) {
		execv(argv[3], argv + 3);
		perror(argv[3]);
		return 1;
	}
	return 0;
}
